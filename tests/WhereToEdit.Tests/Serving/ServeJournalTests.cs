using Xunit;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json.Nodes;
using WhereToEdit.Server;

namespace WhereToEdit.Tests.Serving;

/// <summary>The journal's refusals on start, and predictions during edits never mixing two versions.</summary>
public sealed class ServeJournalTests
{
    /// <summary>A journal folder holding one HPRD edit (e1) and one FT-L2 edit (e2) of the shipped model.</summary>
    private static async Task<string> JournalWithTwoEditsAsync()
    {
        string folder = Directory.CreateTempSubdirectory("wte-journal-").FullName;
        await using var s = await TestServe.StartAsync(folder: folder);
        await TestServe.Read(await s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure)), 201);
        await TestServe.Read(await s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure2, method: "ft-l2")), 201);
        return folder;
    }

    private static ArgumentException StartFails(string folder) =>
        Assert.Throws<ArgumentException>(() => WteServer.Build(new ServeOptions
        {
            ModelPath = ServeAssets.Model, HypernetPath = ServeAssets.Hypernet, JournalPath = Path.Combine(folder, "journal"), Threads = 1,
        }));

    [Fact]
    public async Task A_corrupt_journal_or_one_for_another_base_stops_startup_with_a_clear_error()
    {
        string folder = await JournalWithTwoEditsAsync();
        try
        {
            string journal = Path.Combine(folder, "journal"), log = Path.Combine(journal, "journal.jsonl");
            string original = File.ReadAllText(log);

            // Another base model: the fixture model from the reference tests.
            var other = Assert.Throws<ArgumentException>(() => WteServer.Build(new ServeOptions
            {
                ModelPath = Path.Combine(AppContext.BaseDirectory, "fixtures", "predict_model"), JournalPath = journal, Threads = 1,
            }));
            Assert.Contains("belongs to base model", other.Message);

            // A flipped character in a complete line: the checksum catches it.
            File.WriteAllText(log, original.Replace("\"op\":\"edit\",\"id\":\"e2\"", "\"op\":\"edit\",\"id\":\"e3\""));
            Assert.Contains("corrupt journal: journal.jsonl line 2: checksum mismatch", StartFails(folder).Message);

            // A patch file that is not the one journaled.
            File.WriteAllText(log, original);
            string patch = Path.Combine(journal, "patches", "000001.safetensors");
            byte[] bytes = File.ReadAllBytes(patch);
            bytes[^1] ^= 1;
            File.Copy(patch, Path.Combine(folder, "patch.bak"));
            File.WriteAllBytes(patch, bytes);
            Assert.Contains("does not match the hash", StartFails(folder).Message);

            // A journaled patch that is missing.
            File.Delete(patch);
            Assert.Contains("has no patch file", StartFails(folder).Message);
            File.Move(Path.Combine(folder, "patch.bak"), patch);

            // Lines out of order.
            var lines = original.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            File.WriteAllText(log, lines[1] + "\n" + lines[0] + "\n");
            Assert.Contains("corrupt journal", StartFails(folder).Message);

            // A journal line without its base.json.
            File.WriteAllText(log, original);
            File.Move(Path.Combine(journal, "base.json"), Path.Combine(folder, "base.json"));
            Assert.Contains("base.json is missing", StartFails(folder).Message);
            File.Move(Path.Combine(folder, "base.json"), Path.Combine(journal, "base.json"));

            // Intact again: both edits are replayed.
            await using var s = await TestServe.StartAsync(folder: folder);
            var model = await s.GetJsonAsync("/v1/model");
            Assert.Equal(["e1", "e2"], model["edits"]!.AsArray().Select(e => e!.GetValue<string>()));
        }
        finally { Directory.Delete(folder, true); }
    }

    [Fact]
    public async Task A_torn_last_line_and_an_orphan_patch_are_unacknowledged_and_dropped_on_start()
    {
        string folder = await JournalWithTwoEditsAsync();
        try
        {
            string journal = Path.Combine(folder, "journal"), log = Path.Combine(journal, "journal.jsonl");
            var lines = File.ReadAllLines(log);
            string fpAfterE1 = JsonNode.Parse(lines[0].Split('\t')[0])!["after"]!.GetValue<string>();
            // A crash while appending e2's line: the line lacks its end; its patch file is on disk.
            File.WriteAllText(log, lines[0] + "\n" + lines[1][..(lines[1].Length / 2)]);
            await using var s = await TestServe.StartAsync(folder: folder);
            var model = await s.GetJsonAsync("/v1/model");
            Assert.Equal(["e1"], model["edits"]!.AsArray().Select(e => e!.GetValue<string>()));
            Assert.Equal(1, model["version"]!.GetValue<int>());
            Assert.Equal(fpAfterE1, model["fingerprint"]!.GetValue<string>());
            Assert.False(File.Exists(Path.Combine(journal, "patches", "000002.safetensors")));
            Assert.Single(File.ReadAllLines(log));
            // The next edit takes sequence number 2 again.
            var e = await TestServe.Read(await s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure2, method: "ft-l2")), 201);
            Assert.Equal("e2", e["id"]!.GetValue<string>());
        }
        finally { Directory.Delete(folder, true); }
    }

    [Fact]
    public async Task Predictions_during_edits_and_reverts_each_see_one_whole_version()
    {
        await using var s = await TestServe.StartAsync();
        var answers = new ConcurrentBag<(int Client, long At, int Version, float[] P)>();
        using var stop = new CancellationTokenSource();
        var clock = Stopwatch.StartNew();
        var clients = Enumerable.Range(0, 6).Select(client => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                var p = await s.PredictAsync(ServeAssets.Failure);
                answers.Add((client, clock.ElapsedTicks, p["version"]!.GetValue<int>(), TestServe.Probabilities(p)));
            }
        })).ToArray();
        await Task.Delay(200);
        var editSpans = new List<(long From, long To, int Version)>();
        async Task Change(Func<Task<HttpResponseMessage>> send, int status)
        {
            long from = clock.ElapsedTicks;
            var body = await TestServe.Read(await send(), status);
            editSpans.Add((from, clock.ElapsedTicks, body["version"]!.GetValue<int>()));
            await Task.Delay(100);
        }
        await Change(() => s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure, more: ("keep", "0.25"))), 201);   // v1
        await Change(() => s.Client.DeleteAsync("/v1/edits/e1"), 200);                                                                // v2 = base
        await Change(() => s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure, label: "6", method: "ft-l2")), 201); // v3
        await Change(() => s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure2, method: "ft-l1", more: ("coef", "0.001"))), 201); // v4
        stop.Cancel();
        await Task.WhenAll(clients);

        var all = answers.ToList();
        var byVersion = all.GroupBy(a => a.Version).ToDictionary(g => g.Key, g => g.ToList());
        // Every answer of one version has the same probabilities (a half-applied swap would give others).
        foreach (var (version, list) in byVersion)
            foreach (var a in list)
                for (int c = 0; c < 10; c++)
                    Assert.True(Math.Abs(a.P[c] - list[0].P[c]) <= 2e-6, $"version {version}: class {c} {a.P[c]} vs {list[0].P[c]}");
        // Versions with different weights give different answers; the revert restores the base answer exactly.
        Assert.Contains(0, byVersion.Keys);
        Assert.Contains(4, byVersion.Keys);
        if (byVersion.ContainsKey(1)) Assert.NotEqual(byVersion[0][0].P[0], byVersion[1][0].P[0]);
        if (byVersion.ContainsKey(2)) Assert.Equal(byVersion[0][0].P, byVersion[2][0].P);
        // Each client sees versions in order, and predictions were answered while edits ran.
        foreach (var client in all.GroupBy(a => a.Client))
        {
            var versions = client.OrderBy(a => a.At).Select(a => a.Version).ToList();
            Assert.Equal(versions.Order(), versions);
        }
        // An edit does not block predictions: some answer arrives while the longest change runs (a quick revert
        // may finish before any prediction does, so only the longest span is required to hold one).
        var longest = editSpans.MaxBy(span => span.To - span.From);
        Assert.Contains(all, a => a.At > longest.From && a.At < longest.To && a.Version >= longest.Version - 1);
        foreach (var (from, to, version) in editSpans)
        {
            // During a change predictions see the old or the new version, never an older one.
            Assert.DoesNotContain(all, a => a.At > from && a.At < to && a.Version < version - 1);
            // After the 201/200 every new prediction has at least the new version.
            Assert.DoesNotContain(all, a => a.At > to + Stopwatch.Frequency / 20 && a.Version < version);
        }
    }
}

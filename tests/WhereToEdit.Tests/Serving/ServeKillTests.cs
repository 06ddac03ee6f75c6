using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Serving;

/// <summary>
/// A real `wte serve` process on a loopback port, killed with SIGKILL during and after edits and reverts, then
/// restarted: the state must be exactly the acknowledged one (or that plus the one change in flight at the kill,
/// applied whole), and every fingerprint must replay. WTE_SERVE_KILLS sets the number of kills (default 5 in the suite;
/// perf/serve-kill.sh runs 20 and more).
/// </summary>
public sealed class ServeKillTests(ITestOutputHelper output)
{
    private sealed class ServerProcess : IDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _stderr = new();

        public ServerProcess(string journal)
        {
            string wte = Path.Combine(AppContext.BaseDirectory, "wte.dll");
            var psi = new ProcessStartInfo("dotnet")
            {
                RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            };
            foreach (string a in new[] { wte, "serve", ServeAssets.Model, "--hypernet", ServeAssets.Hypernet, "--journal", journal,
                                         "--urls", "http://127.0.0.1:0", "--threads", "1" })
                psi.ArgumentList.Add(a);
            var listening = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
            _process = new Process { StartInfo = psi, EnableRaisingEvents = true };
            _process.OutputDataReceived += (_, e) =>
            {
                const string prefix = "wte serve: listening on ";
                if (e.Data?.StartsWith(prefix, StringComparison.Ordinal) == true) listening.TrySetResult(e.Data[prefix.Length..].Split(' ')[0]);
            };
            _process.ErrorDataReceived += (_, e) => { lock (_stderr) _stderr.AppendLine(e.Data); };
            _process.Exited += (_, _) => listening.TrySetException(new InvalidOperationException($"wte serve exited with {_process.ExitCode}: {Stderr}"));
            _process.Start();
            _process.BeginOutputReadLine();
            _process.BeginErrorReadLine();
            if (!listening.Task.Wait(TimeSpan.FromSeconds(120))) throw new TimeoutException("wte serve did not start within 120 s: " + Stderr);
            Client = new HttpClient { BaseAddress = new Uri(listening.Task.Result), Timeout = TimeSpan.FromSeconds(120) };
        }

        public HttpClient Client { get; }
        public string Stderr { get { lock (_stderr) return _stderr.ToString(); } }

        /// <summary>SIGKILL (Process.Kill on Linux), then wait for the process to be gone.</summary>
        public void Kill()
        {
            _process.Kill();
            _process.WaitForExit();
        }

        public void Dispose()
        {
            if (!_process.HasExited) Kill();
            Client.Dispose();
            _process.Dispose();
        }
    }

    private sealed record State(int Version, string Fingerprint, string[] Edits);

    private static async Task<State> ReadState(HttpClient c)
    {
        var m = JsonNode.Parse(await c.GetStringAsync("/v1/model"))!;
        return new State(m["version"]!.GetValue<int>(), m["fingerprint"]!.GetValue<string>(), m["edits"]!.AsArray().Select(e => e!.GetValue<string>()).ToArray());
    }

    [SkippableFact]
    public async Task Sigkill_during_and_after_edits_loses_no_acknowledged_edit_and_leaves_no_half_edit()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "SIGKILL of a child process is exercised on Linux");
        Skip.IfNot(File.Exists(Path.Combine(AppContext.BaseDirectory, "wte.runtimeconfig.json")), "wte.dll is not runnable from the test folder");
        int kills = int.TryParse(Environment.GetEnvironmentVariable("WTE_SERVE_KILLS"), out int k) && k > 0 ? k : 5;
        string folder = Directory.CreateTempSubdirectory("wte-kill-").FullName, journal = Path.Combine(folder, "journal");
        var rng = new Random(11);
        string[] images =
        [
            ServeAssets.Failure, ServeAssets.Failure2, ServeAssets.Failure3,
            ServeAssets.Image("natural/0_6/00027.png"), ServeAssets.Image("natural/0_6/01205.png"),
        ];
        try
        {
            State? acked = null;
            string? baseFingerprint = null;
            (string Kind, string Id)? inFlight = null;
            int duringKills = 0, afterKills = 0, acknowledged = 0, inFlightApplied = 0;
            var clock = Stopwatch.StartNew();
            for (int round = 0; round <= kills; round++)
            {
                using var server = new ServerProcess(journal);
                var state = await ReadState(server.Client);
                baseFingerprint ??= state.Fingerprint;
                if (acked is not null)
                {
                    bool same = state.Version == acked.Version && state.Edits.SequenceEqual(acked.Edits);
                    Assert.True(same || inFlight is not null, $"round {round}: state v{state.Version} [{string.Join(",", state.Edits)}] differs from the acknowledged v{acked.Version} [{string.Join(",", acked.Edits)}]");
                    if (same) Assert.Equal(acked.Fingerprint, state.Fingerprint);
                    else
                    {
                        // The change in flight at the kill reached the journal whole: exactly one more version.
                        var (kind, id) = inFlight!.Value;
                        var expected = kind == "edit" ? [.. acked.Edits, id] : acked.Edits.Where(e => e != id).ToArray();
                        Assert.Equal(acked.Version + 1, state.Version);
                        Assert.Equal(expected, state.Edits);
                        inFlightApplied++;
                    }
                }
                acked = state;
                inFlight = null;
                if (round == kills)
                {
                    // Undo everything, newest first: the weights come back to the base model bit for bit.
                    foreach (string id in state.Edits.Reverse())
                        Assert.Equal(200, (int)(await server.Client.DeleteAsync($"/v1/edits/{id}")).StatusCode);
                    Assert.Equal(baseFingerprint, (await ReadState(server.Client)).Fingerprint);
                    break;
                }

                // One or two acknowledged changes, then one more that is killed in flight (or a kill right after).
                int changes = rng.Next(1, 3);
                bool killDuring = rng.Next(2) == 0;
                for (int i = 0; i < changes + (killDuring ? 1 : 0); i++)
                {
                    bool last = i == changes;
                    Task<HttpResponseMessage> send;
                    (string, string) op;
                    if (acked.Edits.Length > 0 && (acked.Edits.Length >= 3 || rng.Next(3) == 0))
                    {
                        string id = acked.Edits[^1];   // the newest edit can always be reverted
                        op = ("revert", id);
                        send = server.Client.DeleteAsync($"/v1/edits/{id}");
                    }
                    else
                    {
                        string method = rng.Next(2) == 0 ? "hprd" : "ft-l2";
                        op = ("edit", $"e{acked.Version + 1}");
                        send = server.Client.PostAsync("/v1/edits", TestServe.EditForm(images[rng.Next(images.Length)], method: method, more: ("keep", "0.25")));
                    }
                    if (last)
                    {
                        inFlight = op;
                        await Task.Delay(rng.Next(0, 700));
                        server.Kill();
                        duringKills++;
                        try { await send; } catch (HttpRequestException) { } catch (TaskCanceledException) { }
                        break;
                    }
                    var r = await send;
                    string text = await r.Content.ReadAsStringAsync();
                    Assert.True(r.IsSuccessStatusCode || (int)r.StatusCode == 422, $"{op}: {(int)r.StatusCode} {text}");
                    acked = await ReadState(server.Client);
                    acknowledged += r.IsSuccessStatusCode ? 1 : 0;
                }
                if (!killDuring)
                {
                    server.Kill();
                    afterKills++;
                }
            }
            output.WriteLine($"{kills} SIGKILLs ({duringKills} with a change in flight, {afterKills} after acknowledged changes), {acknowledged} changes acknowledged and none lost, " +
                             $"{inFlightApplied} in-flight changes found applied whole, {clock.Elapsed.TotalSeconds:F0} s");
            Assert.Equal(kills, duringKills + afterKills);
            Assert.True(acknowledged >= kills, $"only {acknowledged} acknowledged changes");
        }
        finally { Directory.Delete(folder, true); }
    }
}

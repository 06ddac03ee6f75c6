using System.Diagnostics;
using System.Text;
using WhereToEdit.Cli;
using WhereToEdit.Tests.Fuzz;
using WhereToEdit.Tests.IO;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Reliability;

/// <summary>
/// Runs the hostile-input corpus (tests/fuzz): every case must end in exactly one `wte:` line and exit 1, with no
/// stack trace, no hang, the inputs unchanged (hashes), and no output or temp file left behind. All cases run in
/// process; a sample (every FIFO case and every 7th other case) also runs as a real `wte` process under
/// DOTNET_GCHeapHardLimit = 4 GiB, where a crash, signal or memory blow-up would show.
/// </summary>
public sealed class FuzzCorpusTests(ITestOutputHelper output)
{
    private static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(60);

    private sealed record Outcome(FuzzCase Case, string Problem);

    private static Dictionary<string, string> HashInputs(FuzzCase c) =>
        c.Inputs.Distinct().Where(File.Exists).ToDictionary(p => p, p => new FileInfo(p).Length > 0 ? HostileSupport.Hash(p) : "empty");

    private static string? CheckAfter(FuzzCase c, Dictionary<string, string> before, string root, HashSet<string> filesBefore)
    {
        foreach (var (p, h) in before)
            if (!File.Exists(p) || (new FileInfo(p).Length > 0 ? HostileSupport.Hash(p) : "empty") != h) return $"input {p} changed";
        foreach (string o in c.Outputs)
            if (File.Exists(o) || Directory.Exists(o)) return $"output {o} was left behind";
        var leftovers = Directory.EnumerateFiles(root, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint })
            .Where(f => !filesBefore.Contains(f)).ToList();
        return leftovers.Count > 0 ? $"left {string.Join(", ", leftovers.Take(3))}" : null;
    }

    private static HashSet<string> Files(string root) =>
        [.. Directory.EnumerateFiles(root, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint })];

    private static string? Classify(int code, string stderr, bool timedOut)
    {
        if (timedOut) return "hang (timeout)";
        if (code == 0) return "silent success";
        if (code != 1) return $"exit {code} (crash or signal)";
        var lines = stderr.TrimEnd().Split('\n');
        if (!lines[^1].StartsWith("wte: ", StringComparison.Ordinal)) return $"last stderr line is not a wte: error: {lines[^1]}";
        if (lines.Count(l => l.StartsWith("wte: ", StringComparison.Ordinal)) != 1) return "more than one error line";
        if (stderr.Contains("   at ", StringComparison.Ordinal) || stderr.Contains("Unhandled exception", StringComparison.Ordinal)) return "stack trace";
        if (stderr.Contains("root:x:0", StringComparison.Ordinal)) return "echoed a file's bytes";
        return null;
    }

    [SkippableFact]
    public void Every_hostile_input_is_refused_cleanly_in_process()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the corpus uses FIFOs and /etc symlinks (Linux)");
        using var dir = new TempDir();
        var cases = FuzzCorpus.Generate(dir.Path);
        var problems = new List<Outcome>();
        foreach (var c in cases)
        {
            var before = HashInputs(c);
            var filesBefore = Files(dir.Path);
            var err = new StringWriter();
            var run = Task.Run(() => WteCommands.Run(c.Args.Contains("--max-memory") ? c.Args : c.Args.Concat(["--max-memory", "1G"]).ToArray(), new StringWriter(), err));
            bool finished = run.Wait(CaseTimeout);
            string? problem = Classify(finished ? run.Result : -1, err.ToString(), !finished) ?? CheckAfter(c, before, dir.Path, filesBefore);
            if (problem is not null) problems.Add(new Outcome(c, $"{problem}; stderr: {err.ToString().Trim()}"));
        }
        var families = cases.GroupBy(c => c.Family).Select(g => $"{g.Key} {g.Count()}");
        output.WriteLine($"{cases.Count} hostile inputs: {string.Join(", ", families)}; {problems.Count} problems");
        foreach (var p in problems) output.WriteLine($"  {p.Case.Family}/{p.Case.Name}: {p.Problem}");
        Assert.True(cases.Count >= 300, $"only {cases.Count} cases");
        Assert.True(problems.Count == 0, string.Join("\n", problems.Select(p => $"{p.Case.Family}/{p.Case.Name}: {p.Problem}")));
    }

    [SkippableFact]
    public void A_sample_is_refused_cleanly_by_a_real_process_under_a_4_GiB_heap_cap()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the corpus uses FIFOs and /etc symlinks (Linux)");
        string wte = Path.Combine(AppContext.BaseDirectory, "wte.dll");
        Skip.IfNot(File.Exists(wte), "wte.dll is not next to the tests");
        using var dir = new TempDir();
        var cases = FuzzCorpus.Generate(dir.Path);
        var sample = cases.Where((c, i) => c.Family == "fifo" || i % 7 == 0).ToList();
        var problems = new List<string>();
        foreach (var c in sample)
        {
            var before = HashInputs(c);
            var filesBefore = Files(dir.Path);
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            psi.ArgumentList.Add(wte);
            foreach (string a in c.Args) psi.ArgumentList.Add(a);
            psi.Environment["DOTNET_GCHeapHardLimit"] = "0x100000000";
            psi.Environment["WTE_THREADS"] = "1";
            using var p = Process.Start(psi)!;
            var stderr = p.StandardError.ReadToEndAsync();
            _ = p.StandardOutput.ReadToEndAsync();
            bool finished = p.WaitForExit(CaseTimeout);
            if (!finished) p.Kill(entireProcessTree: true);
            p.WaitForExit();
            string err = stderr.Result;
            string? problem = Classify(finished ? p.ExitCode : -1, err, !finished) ?? CheckAfter(c, before, dir.Path, filesBefore);
            if (problem is not null) problems.Add($"{c.Family}/{c.Name}: {problem}; stderr: {err.Trim()}");
        }
        output.WriteLine($"{sample.Count} of {cases.Count} cases as processes under a 4 GiB heap cap; {problems.Count} problems");
        foreach (string p in problems) output.WriteLine("  " + p);
        Assert.True(sample.Count >= 50, $"only {sample.Count} sampled cases");
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }
}

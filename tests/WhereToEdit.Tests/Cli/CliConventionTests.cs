using System.CommandLine;
using System.Text.Json;
using WhereToEdit.Cli;
using WhereToEdit.Engine.IO;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Cli;

/// <summary>The conventions every command of the real command tree follows: --json (errors included), short flags, output folders.</summary>
public sealed class CliConventionTests
{
    /// <summary>Every command that runs something (the leaves of `wte`'s tree), as its path: "info", "benchmark build", ...</summary>
    private static List<(string[] Path, Command Command)> Leaves()
    {
        var found = new List<(string[], Command)>();
        void Walk(Command c, string[] path)
        {
            if (c.Subcommands.Count == 0) found.Add((path, c));
            foreach (var sub in c.Subcommands) Walk(sub, [.. path, sub.Name]);
        }
        Walk(WteCommands.Tree(), []);
        return found;
    }

    /// <summary>
    /// Arguments that make a command fail fast on a missing input: every required argument and option gets a path that
    /// does not exist; commands whose required inputs all have defaults get one bad value here instead (so they never
    /// start their real work in a test).
    /// </summary>
    private static string[] FailingArguments(string[] path, Command command, TempDir dir)
    {
        string missing = dir.File("missing/nothing-here");
        string name = string.Join(" ", path);
        string[] extra = name switch
        {
            "demo" => ["--assets", missing],
            "bench" => ["--model", "no_such_preset"],
            "gpu-check" => ["--seconds", "0"],
            "pretrain" => ["--data", missing],
            "dataset orientations" => ["--data", missing],
            _ => [],
        };
        var args = new List<string>(path);
        foreach (var a in command.Arguments)
            if (a.Arity.MinimumNumberOfValues > 0) args.Add(missing);
        foreach (var o in command.Options)
            if (o.Required) args.AddRange([o.Name, o.Name == "--out" ? dir.File($"out/{name.Replace(' ', '-')}") : missing]);
        args.AddRange(extra);
        args.Add("--json");
        return [.. args];
    }

    [Fact]
    public void Every_command_accepts_json_and_prints_a_json_error_for_a_missing_input()
    {
        using var dir = new TempDir();
        var leaves = Leaves();
        Assert.True(leaves.Count >= 20, $"only {leaves.Count} commands found");
        foreach (var (path, command) in leaves)
        {
            string name = string.Join(" ", path);
            var parse = WteCommands.Tree().Parse([.. path, "--json"]);
            Assert.DoesNotContain("--json", parse.UnmatchedTokens);
            Assert.True(parse.GetValue<bool>("--json"), $"{name}: --json is not an option of the command");
            var args = FailingArguments(path, command, dir);
            var (code, stdout, stderr) = Repo.Wte(args);
            Assert.True(code != 0, $"wte {string.Join(" ", args)}: exit code 0");
            JsonDocument doc;
            try { doc = JsonDocument.Parse(stdout); }
            catch (JsonException e) { throw new Xunit.Sdk.XunitException($"wte {name} --json: stdout is not one JSON document ({e.Message}): {stdout}"); }
            using (doc)
            {
                Assert.Equal(JsonValueKind.Object, doc.RootElement.ValueKind);
                string error = doc.RootElement.GetProperty("error").GetString()!;
                Assert.False(string.IsNullOrWhiteSpace(error), name);
                Assert.DoesNotContain("unknown option", error);
                Assert.Equal($"wte: {error}", stderr.Trim());   // the same error, one line, on stderr
            }
        }
    }

    [Fact]
    public void Json_results_parse_for_commands_that_succeed_quickly()
    {
        using var dir = new TempDir();
        string model = Repo.File("assets/fashion_mnist/vit.safetensors");
        string image = Repo.File("assets/fashion_mnist/benchmark/natural/0_3/00674.png");
        foreach (string[] args in new[]
        {
            new[] { "info", model, "--json" },
            ["benchmark", "info", Repo.File("assets/fashion_mnist/benchmark"), "--json"],
            ["convert", model, "-o", dir.File("a/b/converted.safetensors"), "--json"],
            ["export", Repo.File("assets/fashion_mnist/hypernet.safetensors"), "-o", dir.File("c/hypernet.pth"), "--json"],
            ["plot", "curves", Repo.File("assets/fashion_mnist/pretrain-log.csv"), "-o", dir.File("curves"), "--columns", "loss", "--json"],
            ["bench", "-m", "test_tiny", "--seconds", "0.01", "-t", "1", "--json"],
            ["saliency", "-m", model, "--benchmark", Repo.File("assets/fashion_mnist/benchmark"), "--subsets", "natural", "-t", "1", "--json"],
        })
        {
            var (code, stdout, stderr) = Repo.Wte(args);
            Assert.True(code == 0, $"wte {string.Join(" ", args)}: {stderr}");
            using var doc = JsonDocument.Parse(stdout);
            Assert.Equal(JsonValueKind.Object, doc.RootElement.ValueKind);
            Assert.False(doc.RootElement.TryGetProperty("error", out _));
        }
        // predict prints JSON lines: one object per image.
        var (c, o, _) = Repo.Wte("predict", model, image, image, "-k", "2", "--json");
        Assert.Equal(0, c);
        var lines = o.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        foreach (string line in lines) Assert.Equal(2, JsonDocument.Parse(line).RootElement.GetProperty("top").GetArrayLength());
    }

    [Fact]
    public void Short_flags_are_the_same_everywhere_and_shown_in_help()
    {
        foreach (var (path, command) in Leaves())
        {
            var aliases = new HashSet<string>(StringComparer.Ordinal);
            foreach (var option in command.Options)
            {
                foreach (string alias in option.Aliases) Assert.True(aliases.Add(alias), $"{string.Join(" ", path)}: {alias} names two options");
                if (ShortFlags.Map.TryGetValue(option.Name, out string? s)) Assert.Contains(s, option.Aliases);
                foreach (string alias in option.Aliases.Where(a => a.Length == 2 && a[0] == '-' && a[1] is not ('h' or '?')))
                    Assert.Equal(alias, ShortFlags.Map.GetValueOrDefault(option.Name));   // no short flag outside the documented set
            }
        }
        var (_, help, _) = Repo.Wte("edit", "--help");
        foreach (string shown in new[] { "-o, --out", "-i, --image", "-l, --label", "-t, --threads", "-d, --device" }) Assert.Contains(shown, help);
        Assert.Equal("wte: info: unknown option '--jsn' (did you mean --json?)", Repo.Wte("info", "x", "--jsn").Err.Trim());
        var (code, stdout, stderr) = Repo.Wte("predict", Repo.File("assets/fashion_mnist/vit.safetensors"), Repo.File("assets/fashion_mnist/benchmark/natural/0_3/00674.png"), "-k", "1", "-b", "1", "-t", "1");
        Assert.True(code == 0, stderr);
        Assert.Equal(2, stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);   // the image and one class
    }

    [Fact]
    public void Outputs_into_missing_folders_create_them_and_a_file_in_the_way_is_one_line()
    {
        using var dir = new TempDir();
        string target = dir.File("new/deeper/x.bin");
        Assert.Equal(Path.GetDirectoryName(target), OutputPaths.CreateParentFolder(target, "--out"));
        Assert.True(Directory.Exists(dir.File("new/deeper")));
        File.WriteAllText(dir.File("file"), "x");
        var e = Assert.Throws<UnsafePathException>(() => OutputPaths.CreateParentFolder(dir.File("file/sub/x.bin"), "--out"));
        Assert.Equal($"--out {dir.File("file/sub/x.bin")}: cannot create folder {dir.File("file/sub")}: {dir.File("file")} is a file", e.Message);

        // Through the CLI: a missing folder is made before any work, for files and for folder outputs alike.
        string model = Repo.File("assets/fashion_mnist/vit.safetensors");
        var (code, _, stderr) = Repo.Wte("convert", model, "--out", dir.File("m/n/o.safetensors"));
        Assert.True(code == 0, stderr);
        Assert.True(File.Exists(dir.File("m/n/o.safetensors")));
        (code, _, stderr) = Repo.Wte("validate", model, Repo.File("assets/fashion_mnist/benchmark/natural"), "--limit", "4", "-o", dir.File("v/w"));
        Assert.True(code == 0, stderr);
        Assert.True(File.Exists(dir.File("v/w/validation.csv")));
        (code, _, stderr) = Repo.Wte("convert", model, "--out", dir.File("file/o.safetensors"));
        Assert.Equal(1, code);
        Assert.Equal($"wte: --out {dir.File("file/o.safetensors")}: cannot create folder {dir.File("file")}: {dir.File("file")} is a file", stderr.Trim());
    }
}

using System.Diagnostics;
using System.Text.RegularExpressions;
using WhereToEdit.Cli;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.MetaTraining;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using WhereToEdit.Tests.IO;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Distributed;

/// <summary>
/// `wte` as real `mpirun -np 2 --oversubscribe` jobs (skipped where Open MPI's mpirun is absent): 2 ranks against
/// one process, repeated runs, sharded evaluation, a rank killed mid-run and resumed, and errors ending the job.
/// </summary>
public sealed partial class MpiProcessTests(ITestOutputHelper output)
{
    private static readonly string Wte = Path.Combine(AppContext.BaseDirectory, "wte.dll");

    private static string? FindMpirun() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, "mpirun")).FirstOrDefault(File.Exists);

    private static string Mpirun()
    {
        string? mpirun = FindMpirun();
        Skip.If(mpirun is null, "mpirun (Debian openmpi-bin) is not installed");
        return mpirun!;
    }

    private static ProcessStartInfo MpiStart(string mpirun, int ranks, string marker, IEnumerable<string> args)
    {
        var start = new ProcessStartInfo(mpirun) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in (string[])["-np", ranks.ToString(), "--oversubscribe", "dotnet", Wte]) start.ArgumentList.Add(a);
        foreach (string a in args) start.ArgumentList.Add(a);
        // Only these child processes run as root under mpirun; the marker finds this job's ranks in /proc.
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
        start.Environment["WTE_TEST_JOB"] = marker;
        start.Environment.Remove("WTE_THREADS");
        return start;
    }

    private (int Code, string Out, string Err) RunMpi(int ranks, params string[] args)
    {
        using var process = Process.Start(MpiStart(Mpirun(), ranks, Guid.NewGuid().ToString("N"), args))!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(4))) { process.Kill(entireProcessTree: true); throw new TimeoutException($"mpirun {string.Join(' ', args)} did not end"); }
        process.WaitForExit();
        output.WriteLine($"mpirun -np {ranks} wte {string.Join(' ', args)} → {process.ExitCode}\n{stderr.Result}");
        return (process.ExitCode, stdout.Result, stderr.Result);
    }

    private static (int Code, string Out, string Err) RunHere(params string[] args)
    {
        var o = new StringWriter(); var e = new StringWriter();
        int code = WteCommands.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    /// <summary>A gray test model and 14 random 28×28 IDX images.</summary>
    private static (string Model, string Images) MetaInputs(TempDir dir)
    {
        string modelPath = dir.File("gray.safetensors");
        using (var be = new CpuBackend(new CpuBackendOptions { Threads = 1, Gemm = GemmKind.Managed }))
        using (var model = new VitModel(be, VitConfig.Preset("test_gray")))
        {
            model.InitializeRandom(8);
            VitCheckpoint.Save(model, modelPath, new Preprocessing(ResizeMode.Direct, 28, 28, Interpolation.Bilinear, [0.5f], [0.5f]), null);
        }
        var rng = new Rng(2);
        byte[] idx = [0, 0, 8, 3, 0, 0, 0, 14, 0, 0, 0, 28, 0, 0, 0, 28, .. Enumerable.Range(0, 14 * 28 * 28).Select(_ => (byte)rng.NextInt(0, 256))];
        File.WriteAllBytes(dir.File("images.idx"), idx);
        return (modelPath, dir.File("images.idx"));
    }

    private static string[] MetaArgs(string model, string images, int batch, int iterations, string outPath) =>
        ["meta-train", model, "--idx", images, "--batch", batch.ToString(), "--outer-steps", "3", "--inner-steps", "2", "--inner-lr", "0.05",
         "--hypernet-depth", "1", "--hypernet-lr", "1e-3", "--t-max", "5", "--seed", "7", "--threads", "1", "--iterations", iterations.ToString(), "--out", outPath];

    private static float[][] Weights(string hypernetPath) =>
        SafeTensors.Read(hypernetPath).Tensors.OrderBy(t => t.Name, StringComparer.Ordinal).Select(t => t.Data).ToArray();

    [SkippableFact]
    public void Two_ranks_train_the_hypernetwork_of_one_process_and_repeat_bit_for_bit()
    {
        Mpirun();
        using var dir = new TempDir();
        var (model, images) = MetaInputs(dir);
        // B = 3: rank 0 runs samples 0–1, rank 1 sample 2 (uneven slices).
        var single = RunHere([.. MetaArgs(model, images, 3, 4, dir.File("one.safetensors")), "--log", dir.File("one.csv")]);
        Assert.True(single.Code == 0, single.Err);
        var two = RunMpi(2, [.. MetaArgs(model, images, 3, 4, dir.File("two.safetensors")), "--log", dir.File("two.csv")]);
        Assert.True(two.Code == 0, two.Err);
        Assert.Contains("wte: 2 MPI ranks", two.Err);
        Assert.Contains("× 2 MPI ranks", two.Err);
        Assert.Single(Regex.Matches(two.Out, "wrote "));   // rank 0 alone reports and writes
        var a = Weights(dir.File("one.safetensors"));
        var b = Weights(dir.File("two.safetensors"));
        Assert.Equal(a.Length, b.Length);
        for (int i = 0; i < a.Length; i++) Compare.Check(output, $"hypernet tensor {i}", b[i], a[i], 1e-5);
        // The per-iteration numbers (outer KL, sparsities, BCE) agree too; only the timing columns differ.
        static string[] Numbers(string csv) => File.ReadAllLines(csv).Skip(1).Select(l => string.Join(",", l.Split(',').Skip(5))).ToArray();
        var n1 = Numbers(dir.File("one.csv"));
        var n2 = Numbers(dir.File("two.csv"));
        Assert.Equal(4, n1.Length);
        Assert.Equal(4, n2.Length);
        for (int i = 0; i < 4; i++)
        {
            // Diagnostic columns are empty on iterations without diagnostics: compare them as empty.
            var x = n1[i].Split(',').Select(v => v.Length == 0 ? double.NaN : double.Parse(v, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
            var y = n2[i].Split(',').Select(v => v.Length == 0 ? double.NaN : double.Parse(v, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
            for (int k = 0; k < x.Length; k++)
                Assert.True((double.IsNaN(x[k]) && double.IsNaN(y[k])) || Math.Abs(x[k] - y[k]) <= 1e-5 * Math.Max(1, Math.Abs(x[k])), $"iteration {i + 1} column {k}: {x[k]} vs {y[k]}");
        }
        // The same rank count again: the same file, bit for bit.
        var again = RunMpi(2, MetaArgs(model, images, 3, 4, dir.File("again.safetensors")));
        Assert.True(again.Code == 0, again.Err);
        Assert.Equal(File.ReadAllBytes(dir.File("two.safetensors")), File.ReadAllBytes(dir.File("again.safetensors")));
    }

    [SkippableFact]
    public void A_killed_rank_ends_the_job_and_a_resume_finishes_like_an_uninterrupted_run()
    {
        string mpirun = Mpirun();
        using var dir = new TempDir();
        var (model, images) = MetaInputs(dir);
        const int iterations = 150;
        string[] Args(string ckpt, string outPath) => [.. MetaArgs(model, images, 2, iterations, outPath), "--checkpoint-dir", ckpt, "--checkpoint-every", "2", "--no-progress"];

        var straight = RunMpi(2, Args(dir.File("ckpt-straight"), dir.File("straight.safetensors")));
        Assert.True(straight.Code == 0, straight.Err);

        // The same job; rank 1 is killed (SIGKILL) once a few checkpoints exist.
        string marker = Guid.NewGuid().ToString("N");
        string ckpt = dir.File("ckpt");
        using var process = Process.Start(MpiStart(mpirun, 2, marker, Args(ckpt, dir.File("killed.safetensors"))))!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        var clock = Stopwatch.StartNew();
        while (!File.Exists(MetaTrainer.CheckpointPath(ckpt, 4)) && !process.HasExited && clock.Elapsed < TimeSpan.FromMinutes(2)) Thread.Sleep(20);
        Skip.If(process.HasExited, "the run finished before a rank could be killed (machine too fast for this test's 150 iterations)");
        int victim = RankPid(marker, 1);
        Process.GetProcessById(victim).Kill();
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(1)), "mpirun did not end after rank 1 was killed");
        process.WaitForExit();
        output.WriteLine(stderr.Result);
        Assert.NotEqual(0, process.ExitCode);
        Assert.Contains("rank 1", stderr.Result);
        Assert.False(File.Exists(dir.File("killed.safetensors")));

        // Every checkpoint left is whole; resume from the last under mpirun and finish.
        var checkpoints = Directory.GetFiles(ckpt, "meta-*.safetensors").Order(StringComparer.Ordinal).ToList();
        Assert.NotEmpty(checkpoints);
        string last = checkpoints[^1];
        int at = int.Parse(Path.GetFileNameWithoutExtension(last)["meta-".Length..]);
        Assert.True(at < iterations, $"the killed run reached checkpoint {at}");
        Assert.Equal(at.ToString(), SafeTensors.Read(last).Metadata[MetaTrainer.IterationKey]);
        var resumed = RunMpi(2, [.. Args(ckpt, dir.File("resumed.safetensors")), "--resume", last]);
        Assert.True(resumed.Code == 0, resumed.Err);
        Assert.Equal(File.ReadAllBytes(dir.File("straight.safetensors")), File.ReadAllBytes(dir.File("resumed.safetensors")));
    }

    /// <summary>The pid of <paramref name="rank"/> of the job started with <paramref name="marker"/>.</summary>
    private static int RankPid(string marker, int rank)
    {
        foreach (string procDir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(procDir), out int pid)) continue;
            string environ;
            try { environ = File.ReadAllText(Path.Combine(procDir, "environ")); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }
            var vars = environ.Split('\0');
            if (vars.Contains($"WTE_TEST_JOB={marker}") && vars.Contains($"OMPI_COMM_WORLD_RANK={rank}")) return pid;
        }
        throw new InvalidOperationException($"no process of rank {rank} found");
    }

    [SkippableFact]
    public void A_bad_request_ends_every_rank_with_one_message_each_and_a_nonzero_exit()
    {
        Mpirun();
        using var dir = new TempDir();
        var (model, images) = MetaInputs(dir);
        var result = RunMpi(2, MetaArgs(model, images, 1, 2, dir.File("h.safetensors")));   // B = 1 cannot be split over 2 ranks
        Assert.NotEqual(0, result.Code);
        Assert.Matches(@"wte: rank [01] of 2: --batch 1 is smaller than the 2 MPI ranks", result.Err);
        Assert.False(File.Exists(dir.File("h.safetensors")));
        // A command that does not distribute says so instead of running N times.
        var info = RunMpi(2, "info", model);
        Assert.NotEqual(0, info.Code);
        Assert.Contains("`wte info` does not spread over MPI ranks", info.Err);
    }

    [SkippableFact]
    public void Sharded_eval_writes_the_records_tables_and_plots_of_a_single_process()
    {
        Mpirun();
        using var dir = new TempDir();
        string modelPath = EvalFixture.Build(dir, failures: 5);
        string[] Args(string outDir) => ["eval", "--model", modelPath, "--failures", dir.File("failures"), "--locality", dir.File("locality"),
            "--methods", "ft-l2,random,ft-l1", "--keeps", "0.5,0.25", "--coefs", "0.01", "--lr", "0.01", "--max-steps", "15", "--threads", "1", "--out", outDir];
        var single = RunHere(Args(dir.File("one")));
        Assert.True(single.Code == 0, single.Err);
        var two = RunMpi(2, Args(dir.File("two")));
        Assert.True(two.Code == 0, two.Err);
        Assert.Contains("wte: 2 MPI ranks", two.Err);

        static string[] Records(string path) => File.ReadAllLines(path).Select(l => WallTime().Replace(l, "")).ToArray();
        var r1 = Records(dir.File("one/edits.jsonl"));
        Assert.Equal(5 * 4, r1.Length);   // 5 edits × 4 settings
        Assert.Equal(r1, Records(dir.File("two/edits.jsonl")));
        Assert.Equal(File.ReadAllText(dir.File("one/summary.md")), File.ReadAllText(dir.File("two/summary.md")));
        var plots = Directory.GetFiles(dir.File("one/plots")).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        Assert.NotEmpty(plots);
        Assert.Equal(plots, Directory.GetFiles(dir.File("two/plots")).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList());
        foreach (string? plot in plots)
        {
            string a = Path.Combine(dir.File("one/plots"), plot!), b = Path.Combine(dir.File("two/plots"), plot!);
            // SVG clip-path ids come from a per-process counter of the renderer; everything else must match byte for byte.
            if (plot!.EndsWith(".svg", StringComparison.Ordinal)) Assert.Equal(SvgId().Replace(File.ReadAllText(a), "cl_N"), SvgId().Replace(File.ReadAllText(b), "cl_N"));
            else Assert.Equal(File.ReadAllBytes(a), File.ReadAllBytes(b));
        }
        // Open MPI gives ranks a pseudo-terminal, so .NET prefixes a keypad-mode escape; the text is the same.
        static IEnumerable<string> Table(string text) => Escape().Replace(text, "").Split('\n').Where(l => !l.StartsWith("wrote"));
        Assert.Equal(Table(single.Out), Table(two.Out));
    }

    [GeneratedRegex("\u001b(\\[[?0-9;]*[a-zA-Z]|=)")]
    private static partial Regex Escape();

    [GeneratedRegex("cl_[0-9A-Za-z]+")]
    private static partial Regex SvgId();

    [GeneratedRegex("\"wall_ms\":[^,]*,")]
    private static partial Regex WallTime();
}

/// <summary>A tiny RGB model with a folder of its failures on class 2 and a locality folder (the paper's layout).</summary>
internal static class EvalFixture
{
    public static string Build(TempDir dir, int failures)
    {
        var config = new VitConfig { ImageSize = 16, PatchSize = 4, InChans = 3, EmbedDim = 16, Depth = 4, NumHeads = 2, MlpHidden = 32, NumClasses = 4 };
        var pre = new Preprocessing(ResizeMode.Direct, 16, 16, Interpolation.Bilinear, [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]);
        string modelPath = dir.File("m.safetensors");
        var loader = new ImageLoader();
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 1 });
        using var model = new VitModel(be, config);
        TestModels.Randomise(model, 3);
        VitCheckpoint.Save(model, modelPath, pre, ["a", "b", "c", "d"]);
        Directory.CreateDirectory(dir.File("failures/2_c"));
        Directory.CreateDirectory(dir.File("locality"));
        var random = new System.Random(5);
        int found = 0;
        using var ws = model.CreateWorkspace(1);
        for (int i = 0; i < 200 && found < failures; i++)
        {
            using var img = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(16, 16);
            for (int y = 0; y < 16; y++) for (int x = 0; x < 16; x++) img[x, y] = new((byte)random.Next(256), (byte)random.Next(256), (byte)random.Next(256));
            string tmp = dir.File($"tmp{i}.png");
            SixLabors.ImageSharp.ImageExtensions.SaveAsPng(img, tmp);
            using var input = be.FromHost("x", loader.Load(tmp, pre), 1, 3, 16, 16);
            model.Forward(ws, input, 1);
            int pred = HostMath.ArgMax(ws.Logits.ToArray().AsSpan(0, 4));
            if (pred != 2) File.Move(tmp, dir.File($"failures/2_c/f{found++}.png"));
            else if (i < 40) File.Move(tmp, dir.File($"locality/l{i}.png"));
        }
        if (found < failures) throw new InvalidOperationException($"only {found} failures of class 2");
        return modelPath;
    }
}

using WhereToEdit.Cli;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.MetaTraining;
using WhereToEdit.Engine.Models;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.MetaTraining;

/// <summary>Checkpoint + resume gives the uninterrupted result bit for bit; hypernetwork files; `wte meta-train` end to end.</summary>
public sealed class ResumeAndFilesTests
{
    private static readonly float[] Half = [0.5f];

    private static MetaTrainOptions Small(int iterations) => new()
    {
        Batch = 2, OuterSteps = 2, InnerSteps = 1, InnerLr = 0.05f, Iterations = iterations, CheckpointEvery = 2, HypernetDepth = 1, Seed = 42,
        HypernetLr = 1e-3, CosineTMax = 3,   // the schedule visibly moves within 4 iterations
    };

    private static VitModel GrayModel(CpuBackend be)
    {
        var model = new VitModel(be, VitConfig.Preset("test_gray"));
        model.InitializeRandom(8);
        return model;
    }

    // 7 images, 4 per iteration: every iteration starts a new (drop-last) epoch, so the data position is exercised.
    private static IImageSource Data() => new SyntheticImageSource(7, 30, 26, seed: 5);

    private static float[][] Snapshot(MetaTrainer t) =>
        t.Hypernet.Parameters.Select(p => p.Value.ToArray()).Concat(t.Step.HypernetSquareAvg.Select(s => s.ToArray())).ToArray();

    [Fact]
    public void Two_plus_resumed_two_iterations_equal_four_straight()
    {
        using var dir = new TempDir();
        using var be = Backends.Cpu(GemmKind.Managed);
        using var model = GrayModel(be);

        using var straight = new MetaTrainer(model, Half, Half, Data(), Small(4));
        var straightStats = new List<IterationStats>();
        straight.Run(dir.File("straight"), straightStats.Add);
        Assert.Equal(4, straight.Iteration);
        Assert.True(File.Exists(MetaTrainer.CheckpointPath(dir.File("straight"), 2)));
        Assert.True(File.Exists(MetaTrainer.CheckpointPath(dir.File("straight"), 4)));

        string checkpoint;
        using (var first = new MetaTrainer(model, Half, Half, Data(), Small(2)))
        {
            first.Run(dir.File("split"));
            checkpoint = MetaTrainer.CheckpointPath(dir.File("split"), 2);
        }
        using var resumed = MetaTrainer.Resume(model, Half, Half, Data(), checkpoint, o => o with { Iterations = 4 });
        Assert.Equal(2, resumed.Iteration);
        var resumedStats = new List<IterationStats>();
        resumed.Run(null, resumedStats.Add);
        Assert.Equal(4, resumed.Iteration);

        var a = Snapshot(straight);
        var b = Snapshot(resumed);
        for (int i = 0; i < a.Length; i++) Assert.Equal(a[i], b[i]);   // bit-identical weights and RMSprop state
        Assert.Equal(straightStats.Skip(2).Select(s => (s.OuterKl, s.BceLast, s.LearningRate)), resumedStats.Select(s => (s.OuterKl, s.BceLast, s.LearningRate)));
        Assert.NotEqual(straightStats[0].BceLast, straightStats[3].BceLast);
        // The hypernetwork moved, and the same seed gives the same run.
        using var again = new MetaTrainer(model, Half, Half, Data(), Small(1));
        Assert.NotEqual(Snapshot(again)[0], a[0]);
    }

    [Fact]
    public void Resume_refuses_changed_options_other_models_and_other_data()
    {
        using var dir = new TempDir();
        using var be = Backends.Cpu(GemmKind.Managed);
        using var model = GrayModel(be);
        string ckpt = dir.File("c.safetensors");
        using (var t = new MetaTrainer(model, Half, Half, Data(), Small(1)))
        {
            t.RunIteration();
            t.SaveCheckpoint(ckpt);
        }
        Assert.Contains("only --iterations", Assert.Throws<ArgumentException>(() => MetaTrainer.Resume(model, Half, Half, Data(), ckpt, o => o with { Batch = 3 })).Message);
        Assert.Contains("images", Assert.Throws<CheckpointFormatException>(() => MetaTrainer.Resume(model, Half, Half, new SyntheticImageSource(9, 30, 26), ckpt)).Message);
        using var other = GrayModel(be);
        other.InitializeRandom(9);
        var e = Assert.Throws<CheckpointFormatException>(() => MetaTrainer.Resume(other, Half, Half, Data(), ckpt));
        Assert.StartsWith(ckpt, e.Message);
        Assert.Contains("fingerprint", e.Message);
    }

    [Fact]
    public void A_meta_training_checkpoint_loads_as_its_hypernetwork()
    {
        using var dir = new TempDir();
        using var be = Backends.Cpu(GemmKind.Managed);
        using var model = GrayModel(be);
        string ckpt = dir.File("meta-000001.safetensors");
        using var t = new MetaTrainer(model, Half, Half, Data(), Small(1));
        t.RunIteration();
        t.SaveCheckpoint(ckpt);
        Assert.Contains(SafeTensors.ReadHeader(ckpt).Entries, x => x.Name.StartsWith("rmsprop/", StringComparison.Ordinal));
        using var loaded = HypernetFile.Load(be, ckpt, model);
        Assert.Equal(t.Target.Blocks, loaded.EditBlocks);
        for (int i = 0; i < t.Hypernet.Parameters.Count; i++)
            Assert.Equal(t.Hypernet.Parameters[i].Value.ToArray(), loaded.Network.Parameters[i].Value.ToArray());
    }

    [Fact]
    public void Hypernet_file_round_trips_and_checks_its_base_model()
    {
        using var dir = new TempDir();
        using var be = Backends.Cpu(GemmKind.Managed);
        using var model = GrayModel(be);
        string path = dir.File("hyper.safetensors");
        using (var t = new MetaTrainer(model, Half, Half, Data(), Small(1)))
        {
            t.RunIteration();
            t.SaveHypernet(path);
            using var loaded = HypernetFile.Load(be, path, model);
            Assert.Equal(t.Target.Blocks, loaded.EditBlocks);
            Assert.Equal(t.BaseFingerprint, loaded.BaseFingerprint);
            Assert.Equal(t.Hypernet.Config, loaded.Network.Config);
            for (int i = 0; i < t.Hypernet.Parameters.Count; i++)
                Assert.Equal(t.Hypernet.Parameters[i].Value.ToArray(), loaded.Network.Parameters[i].Value.ToArray());
            var header = SafeTensors.ReadHeader(path);
            Assert.Equal("1", header.Metadata[MetaTrainer.IterationKey]);
            Assert.Contains("\"units\":2", header.Metadata[HypernetFile.ConfigKey]);
        }
        using var other = GrayModel(be);
        other.InitializeRandom(10);
        var e = Assert.Throws<CheckpointFormatException>(() => HypernetFile.Load(be, path, other));
        Assert.StartsWith(path, e.Message);
        Assert.Contains("trained on base model", e.Message);
        using (HypernetFile.Load(be, path)) { }   // no base model: no check

        string bare = dir.File("bare.safetensors");
        SafeTensors.Write(bare, [new NamedTensor("x", [1], [0f])]);
        Assert.Contains("wte.hypernet.config", Assert.Throws<CheckpointFormatException>(() => HypernetFile.Load(be, bare)).Message);
    }

    private static (int Code, string Out, string Err) Wte(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = WteCommands.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    [Fact]
    public void Cli_meta_train_writes_hypernet_log_and_checkpoints_and_resumes()
    {
        using var dir = new TempDir();
        string modelPath = dir.File("gray.safetensors");
        using (var be = Backends.Cpu(GemmKind.Managed))
        using (var model = GrayModel(be))
            VitCheckpoint.Save(model, modelPath, new Preprocessing(ResizeMode.Direct, 28, 28, Interpolation.Bilinear, [0.5f], [0.5f]), null);
        // A tiny IDX file of 6 random 28×28 images.
        var rng = new WhereToEdit.Engine.Tensors.Rng(2);
        byte[] idx = [0, 0, 8, 3, 0, 0, 0, 6, 0, 0, 0, 28, 0, 0, 0, 28, .. Enumerable.Range(0, 6 * 28 * 28).Select(_ => (byte)rng.NextInt(0, 256))];
        File.WriteAllBytes(dir.File("images.idx"), idx);
        string[] common = ["meta-train", modelPath, "--idx", dir.File("images.idx"), "--batch", "2", "--outer-steps", "2", "--inner-steps", "1", "--hypernet-depth", "1",
            "--threads", "2", "--checkpoint-dir", dir.File("ckpt"), "--checkpoint-every", "1", "--log", dir.File("log.csv"), "--seed", "3"];

        var (code, stdout, stderr) = Wte([.. common, "--iterations", "2", "--out", dir.File("out/h.safetensors")]);
        Assert.True(code == 0, stderr);
        Assert.Contains("wrote", stdout);
        Assert.Contains("2/2", stderr);
        Assert.Contains("outer KL", stderr);
        var log = File.ReadAllLines(dir.File("log.csv"));
        Assert.Equal(IterationStats.CsvHeader, log[0]);
        Assert.Equal(3, log.Length);
        Assert.True(File.Exists(dir.File("out/h.safetensors")));

        (code, _, stderr) = Wte([.. common, "--iterations", "3", "--out", dir.File("h3.safetensors"), "--resume", MetaTrainer.CheckpointPath(dir.File("ckpt"), 2)]);
        Assert.True(code == 0, stderr);
        Assert.Equal(4, File.ReadAllLines(dir.File("log.csv")).Length);
        Assert.StartsWith("3,", File.ReadAllLines(dir.File("log.csv"))[3]);
    }

    [Theory]
    [InlineData("no data", new[] { "--out", "h.safetensors" }, "--data FOLDER or --idx IMAGES")]
    [InlineData("both", new[] { "--data", ".", "--idx", "x", "--out", "h" }, "not both")]
    [InlineData("no out", new[] { "--idx", "x" }, "--out HYPERNET is required")]
    [InlineData("bad batch", new[] { "--idx", "x", "--out", "h", "--batch", "0" }, "--batch 0")]
    [InlineData("bad lr", new[] { "--idx", "x", "--out", "h", "--mask-lr", "-1" }, "--mask-lr")]
    [InlineData("missing idx", new[] { "--idx", "/nonexistent/images.gz", "--out", "h" }, "/nonexistent/images.gz: no such file")]
    [InlineData("missing folder", new[] { "--data", "/nonexistent/train", "--out", "h" }, "/nonexistent/train: no such folder")]
    [InlineData("bad blocks", new[] { "--idx", "x", "--out", "h", "--edit-blocks", "7,x" }, "'x' is not a block index")]
    public void Cli_errors_are_one_line_and_exit_1(string _, string[] args, string expected)
    {
        var (code, stdout, stderr) = Wte(["meta-train", "model.safetensors", .. args]);
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.Single(stderr.TrimEnd('\n', '\r').Split('\n'));
        Assert.Contains(expected, stderr);
    }
}

using System.Buffers.Binary;
using WhereToEdit.Cli;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using WhereToEdit.Engine.Training;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Evaluation;

public sealed class BenchmarkBuilderTests
{
    private static readonly VitConfig Tiny = new()
    {
        ImageSize = 28, PatchSize = 7, InChans = 1, EmbedDim = 16, Depth = 2, NumHeads = 2, MlpHidden = 32, NumClasses = 3,
    };

    private static readonly string[] Names = ["band", "column", "blob"];

    private static readonly Preprocessing Pre = new(ResizeMode.Direct, 28, 28, Interpolation.Bilinear, [0.5f], [0.5f]);

    /// <summary>Three classes (a bright row band, a column band, a centre blob) with noise and random offsets.</summary>
    private static LabeledImages Data(int n, int seed)
    {
        var rng = new System.Random(seed);
        var pixels = new byte[n * 784];
        var labels = new byte[n];
        for (int i = 0; i < n; i++)
        {
            int c = i % 3, shift = rng.Next(-4, 5);
            labels[i] = (byte)c;
            for (int y = 0; y < 28; y++)
                for (int x = 0; x < 28; x++)
                {
                    bool on = c == 0 ? Math.Abs(y - 14 - shift) < 4 : c == 1 ? Math.Abs(x - 14 - shift) < 4 : Math.Abs(x - 14 - shift) + Math.Abs(y - 14) < 8;
                    pixels[i * 784 + y * 28 + x] = (byte)Math.Clamp((on ? 190 : 20) + rng.Next(-40, 41), 0, 255);
                }
        }
        return new LabeledImages(pixels, labels, 28, 28, "synthetic");
    }

    /// <summary>
    /// The base model: the tiny ViT trained briefly on other synthetic images, so that it is right on many images but
    /// not all, with predictions that depend on the image (a freshly initialised ViT predicts one class everywhere).
    /// Trained once; each test loads the weights onto its own backend. Which images a style shift flips depends on the
    /// trained weights down to rounding (seed 2 lost its last style group when the last block's backward changed its
    /// summation order); the seed is one whose model has style groups.
    /// </summary>
    private static readonly Lazy<Dictionary<string, (int[] Shape, float[] Data)>> Trained = new(() =>
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var model = new VitModel(be, Tiny);
        model.InitializeRandom(2);
        using (var trainer = new Pretrainer(model, new PretrainOptions { Epochs = 5, Batch = 16, LearningRate = 1e-2f, WarmupEpochs = 0.2, Seed = 3, Shift = 2 }))
            trainer.Train(Data(240, 1), null, null, null);
        return model.Parameters.ToDictionary(p => p.Name, p => (p.Shape, p.Value.ToArray()));
    });

    private static VitModel Model(CpuBackend be)
    {
        var model = new VitModel(be, Tiny);
        model.LoadWeights(Trained.Value, "trained tiny ViT");
        return model;
    }

    /// <summary>A margin that puts about a third of the correctly classified images into the locality set.</summary>
    private static double MarginFor(VitModel model, LabeledImages test)
    {
        var logits = BenchmarkBuilder.Classify(model, Pre, test.Pixels, test.Count, 28, 64);
        var margins = Enumerable.Range(0, test.Count).Select(i => (i, r: BenchmarkBuilder.ArgmaxAndMargin(logits.AsSpan(i * 3, 3))))
            .Where(t => t.r.Predicted == test.Labels[t.i]).Select(t => t.r.Margin).Order().ToList();
        Assert.True(margins.Count >= 6, $"the test model gets only {margins.Count} images right");
        return Math.Min(1, margins[margins.Count / 3] + 1e-9);
    }

    private static readonly BenchmarkBuildOptions Options = new() { Seed = 9, MaxPerGroup = 7, MaxGroups = 3, Batch = 32 };

    private static Dictionary<string, byte[]> Files(string folder) =>
        Directory.GetFiles(folder, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(folder, f).Replace('\\', '/'), File.ReadAllBytes);

    [Fact]
    public void Builds_deterministically_and_obeys_the_group_and_locality_rules()
    {
        using var dir = new TempDir();
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var model = Model(be);
        var test = Data(240, 11);
        double margin = MarginFor(model, test);
        var options = Options with { Margin = margin };
        var result = BenchmarkBuilder.Build(model, Pre, Names, test, dir.File("a"), options);
        var again = BenchmarkBuilder.Build(model, Pre, Names, test, dir.File("b"), options);

        // Same seed → byte-identical manifest and images.
        var a = Files(dir.File("a"));
        var b = Files(dir.File("b"));
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var (name, bytes) in a) Assert.True(bytes.AsSpan().SequenceEqual(b[name]), $"{name} differs between two builds");
        Assert.Equal(result.Predictions, again.Predictions);

        var m = BenchmarkManifest.Read(dir.File("a"));
        Assert.Equal(result.Manifest.ToJsonBytes(), m.ToJsonBytes());
        Assert.Equal(VitCheckpoint.Fingerprint(model), m.BaseModelFingerprint);
        Assert.Equal((28, 1, (ulong?)9UL), (m.ImageSize!.Value, m.Channels!.Value, m.Seed));
        Assert.Equal(Names, m.Labels);
        Assert.Equal(a.Count - 1, result.Predictions.Count);   // every file but the manifest is a listed image

        // Ground truth from the model itself.
        var logits = BenchmarkBuilder.Classify(model, Pre, test.Pixels, test.Count, 28, 17);
        var predicted = Enumerable.Range(0, test.Count).Select(i => BenchmarkBuilder.ArgmaxAndMargin(logits.AsSpan(i * 3, 3))).ToArray();
        int Index(string path) => int.Parse(Path.GetFileNameWithoutExtension(path));

        var natural = m.Subset(BenchmarkBuilder.NaturalSubset);
        var pairs = Enumerable.Range(0, test.Count).Where(i => predicted[i].Predicted != test.Labels[i])
            .GroupBy(i => (Label: (int)test.Labels[i], predicted[i].Predicted)).Where(g => g.Count() >= 5)
            .OrderByDescending(g => g.Count()).ThenBy(g => g.Key.Label).ThenBy(g => g.Key.Predicted).Take(3)
            .Select(g => g.Key).OrderBy(k => k.Label).ThenBy(k => k.Predicted).ToList();
        Assert.NotEmpty(pairs);
        Assert.Equal(pairs, natural.Groups.Select(g => (g.Label, g.Predicted!.Value)));
        foreach (var g in natural.Groups)
        {
            Assert.InRange(g.Images.Count, 5, 7);
            Assert.Equal($"{Names[g.Label]}→{Names[g.Predicted!.Value]}", g.Name);
            foreach (string image in g.Images)
            {
                int i = Index(image);
                Assert.Equal(g.Label, test.Labels[i]);
                Assert.Equal(g.Predicted, predicted[i].Predicted);
            }
            Assert.Equal(g.Images.Order(StringComparer.Ordinal), g.Images);
        }
        foreach (var s in m.Subsets.Where(s => s.Kind == BenchmarkSubsetKind.Style))
        {
            Assert.InRange(s.Groups.Count, 1, 3);
            foreach (var g in s.Groups)
            {
                Assert.Null(g.Predicted);
                Assert.InRange(g.Images.Count, 5, 7);
                foreach (string image in g.Images)
                {
                    int i = Index(image);
                    Assert.Equal(g.Label, test.Labels[i]);
                    Assert.Equal(g.Label, predicted[i].Predicted);          // right before the style shift …
                    Assert.NotEqual(g.Label, result.Predictions[image]);     // … wrong after it
                }
            }
        }
        var stats = result.Subsets.ToDictionary(s => s.Name);
        Assert.Equal(3, stats.Count);
        Assert.Contains(m.Subsets, s => s.Kind == BenchmarkSubsetKind.Style);
        foreach (var s in result.Subsets.Where(s => s.Groups == 0))
        {
            Assert.DoesNotContain(m.Subsets, x => x.Name == s.Name);   // a subset without groups is left out, and said so
            Assert.Contains(m.Notes, n => n.StartsWith($"{s.Name}: left out", StringComparison.Ordinal));
        }
        Assert.Equal(Enumerable.Range(0, test.Count).Count(i => predicted[i].Predicted != test.Labels[i]), stats["natural"].Failures);

        // Locality: exactly the correct images with margin below the option.
        var expectedLocality = Enumerable.Range(0, test.Count)
            .Where(i => predicted[i].Predicted == test.Labels[i] && predicted[i].Margin < margin).ToList();
        Assert.NotEmpty(expectedLocality);
        Assert.Equal(expectedLocality, m.Locality.Images.Select(Index));
        Assert.Equal(("sensitive", margin), (m.Locality.Name, m.Locality.Margin));
        Assert.Contains(m.Notes, n => n.Contains($"{expectedLocality.Count} of", StringComparison.Ordinal));
        if (expectedLocality.Count < 50) Assert.Contains(m.Notes, n => n.StartsWith("WARNING: the locality set is small", StringComparison.Ordinal));

        // Another seed samples other images from groups larger than the cap.
        var other = BenchmarkBuilder.Build(model, Pre, Names, test, dir.File("c"), options with { Seed = 10 });
        if (stats["natural"].Failures > 3 * 7)
            Assert.NotEqual(result.Predictions.Keys, other.Predictions.Keys);
    }

    [Fact]
    public void Written_pngs_reload_to_the_builders_predictions()
    {
        using var dir = new TempDir();
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var model = Model(be);
        var test = Data(180, 12);
        double margin = MarginFor(model, test);
        var result = BenchmarkBuilder.Build(model, Pre, Names, test, dir.File("out"), Options with { Margin = margin });
        var m = result.Manifest;
        var images = m.Subsets.SelectMany(s => s.Groups).SelectMany(g => g.Images).Concat(m.Locality.Images).ToList();
        Assert.Equal(result.Predictions.Keys.Order(StringComparer.Ordinal), images.Order(StringComparer.Ordinal));

        var loader = new ImageLoader();
        var reloaded = Predictor.Run(model, loader, Pre, images.Select(m.ImagePath).ToList(), 32, 3, Names);
        for (int k = 0; k < images.Count; k++)
            Assert.True(reloaded[k].Top[0].Index == result.Predictions[images[k]], $"{images[k]}: reloaded {reloaded[k].Top[0].Index}, built {result.Predictions[images[k]]}");

        // The PNGs hold the exact pixels: gray, 28×28, the test image itself for natural and locality images.
        foreach (string image in m.Locality.Images.Concat(m.Subset("natural").Groups.SelectMany(g => g.Images)))
        {
            var decoded = loader.Decode(m.ImagePath(image), channels: 1);
            Assert.Equal((28, 28), (decoded.Width, decoded.Height));
            Assert.Equal(test.Image(int.Parse(Path.GetFileNameWithoutExtension(image))).ToArray(), decoded.Pixels);
        }
        // Locality margins measured on the reloaded files.
        foreach (var r in reloaded.Where(r => r.Image.Contains("/locality/", StringComparison.Ordinal)))
        {
            Assert.Equal(test.Labels[int.Parse(Path.GetFileNameWithoutExtension(r.Image))], r.Top[0].Index);
            Assert.True(r.Top[0].Probability - r.Top[1].Probability < margin + 1e-6, $"{r.Image}: margin {r.Top[0].Probability - r.Top[1].Probability}");
        }
    }

    [Fact]
    public void Refuses_a_non_empty_output_folder_and_cleans_up_a_failed_build()
    {
        using var dir = new TempDir();
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 1 });
        using var model = Model(be);
        var test = Data(90, 13);
        File.WriteAllText(dir.File("keep.txt"), "x");
        var e = Assert.Throws<IOException>(() => BenchmarkBuilder.Build(model, Pre, Names, test, dir.Path, Options));
        Assert.Contains("not empty", e.Message);
        Assert.True(File.Exists(dir.File("keep.txt")));

        // A margin nothing is below leaves no locality set: a clear error, and the new folder is removed.
        var tiny = Options with { Margin = 1e-12 };
        var ex = Assert.Throws<InvalidOperationException>(() => BenchmarkBuilder.Build(model, Pre, Names, test, dir.File("new"), tiny));
        Assert.Contains("--margin", ex.Message);
        Assert.False(Directory.Exists(dir.File("new")));

        Assert.Throws<ArgumentException>(() => BenchmarkBuilder.Build(model, Pre, ["just one"], test, dir.File("x"), Options));
        Assert.Throws<ArgumentException>(() => BenchmarkBuilder.Build(model, Pre, Names, test, dir.File("x"), Options with { MaxPerGroup = 4 }));
        Assert.Throws<ArgumentException>(() => BenchmarkBuilder.Build(model, Pre with { Mean = [0.5f, 0.5f, 0.5f], Std = [0.5f, 0.5f, 0.5f] }, Names, test, dir.File("x"), Options));
    }

    private static void WriteIdx(string folder, LabeledImages data)
    {
        var images = new byte[16 + data.Pixels.Length];
        BinaryPrimitives.WriteInt32BigEndian(images, 0x803);
        BinaryPrimitives.WriteInt32BigEndian(images.AsSpan(4), data.Count);
        BinaryPrimitives.WriteInt32BigEndian(images.AsSpan(8), data.Height);
        BinaryPrimitives.WriteInt32BigEndian(images.AsSpan(12), data.Width);
        data.Pixels.CopyTo(images, 16);
        File.WriteAllBytes(Path.Combine(folder, "t10k-images-idx3-ubyte"), images);
        var labels = new byte[8 + data.Count];
        BinaryPrimitives.WriteInt32BigEndian(labels, 0x801);
        BinaryPrimitives.WriteInt32BigEndian(labels.AsSpan(4), data.Count);
        data.Labels.CopyTo(labels, 8);
        File.WriteAllBytes(Path.Combine(folder, "t10k-labels-idx1-ubyte"), labels);
    }

    [Fact]
    public void Cli_builds_prints_a_summary_and_refuses_to_overwrite()
    {
        using var dir = new TempDir();
        using (var be = new CpuBackend(new CpuBackendOptions { Threads = 1 }))
        using (var model = Model(be))
            VitCheckpoint.Save(model, dir.File("model.safetensors"), Pre, Names);
        Directory.CreateDirectory(dir.File("data"));
        var data = Data(150, 14);
        WriteIdx(dir.File("data"), data);
        string margin;
        using (var be = new CpuBackend(new CpuBackendOptions { Threads = 1 }))
        using (var model = Model(be))
            margin = MarginFor(model, data).ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        int Run(out string stdout, out string stderr, params string[] args)
        {
            var o = new StringWriter(); var e = new StringWriter();
            int code = WteCommands.Run(args, o, e);
            (stdout, stderr) = (o.ToString(), e.ToString());
            return code;
        }
        string[] args = ["benchmark", "build", "--model", dir.File("model.safetensors"), "--data", dir.File("data"), "--out", dir.File("bench"),
                         "--seed", "3", "--margin", margin, "--max-per-group", "6", "--max-groups", "2", "--threads", "1"];
        int rc = Run(out var text, out var err, args);
        Assert.True(rc == 0, err);
        Assert.Contains("natural", text);
        Assert.Contains("locality", text);
        Assert.Contains("manifest.json", text);
        var m = BenchmarkManifest.Read(dir.File("bench"));
        Assert.Equal((ulong?)3UL, m.Seed);
        Assert.All(m.Subsets, s => Assert.InRange(s.Groups.Count, 1, 2));
        Assert.All(m.Subsets.SelectMany(s => s.Groups), g => Assert.InRange(g.Images.Count, 5, 6));

        Assert.Equal(0, Run(out text, out err, "benchmark", "info", dir.File("bench")));
        Assert.Contains("sensitive", text);

        Assert.Equal(1, Run(out _, out err, args));
        Assert.Contains("not empty", err);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Equal(1, Run(out _, out err, "benchmark", "build", "--model", dir.File("model.safetensors"), "--data", dir.File("data"), "--out", dir.File("bench2"), "--margin", "0"));
        Assert.Contains("margin 0", err);
    }
}

using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Evaluation;

/// <summary>The broad locality set (selection, storage, LR on it), confidence intervals and the gradient-saliency pre-check (issue 10).</summary>
public sealed class BroadLocalityAndSaliencyTests
{
    private static readonly VitConfig Config = new()
    {
        ImageSize = 16, PatchSize = 4, InChans = 3, EmbedDim = 16, Depth = 4, NumHeads = 2, MlpHidden = 32, NumClasses = 4,
    };

    private static VitModel Model(CpuBackend be)
    {
        var model = new VitModel(be, Config);
        TestModels.Randomise(model, 3);
        return model;
    }

    [Fact]
    public void Selection_takes_only_correct_images_equally_per_class_in_test_order()
    {
        int[] labels = [0, 0, 0, 1, 1, 1, 2, 2, 2, 0];
        int[] predicted = [0, 1, 0, 1, 1, 0, 2, 2, 2, 0];
        var picked = BroadLocality.Select(labels, predicted, 3, 6, seed: 1);
        Assert.Equal(picked.Order(), picked);
        Assert.All(picked, i => Assert.Equal(labels[i], predicted[i]));
        Assert.Equal(2, picked.Count(i => labels[i] == 0));
        Assert.Equal(2, picked.Count(i => labels[i] == 1));
        Assert.Equal(2, picked.Count(i => labels[i] == 2));
        Assert.Equal(picked, BroadLocality.Select(labels, predicted, 3, 6, seed: 1));
        Assert.Throws<ArgumentException>(() => BroadLocality.Select(labels, predicted, 3, 2, seed: 1));
    }

    [Fact]
    public void Idx_files_round_trip()
    {
        using var dir = new TempDir();
        var pixels = Enumerable.Range(0, 3 * 4 * 5).Select(i => (byte)(i * 7)).ToArray();
        BroadLocality.WriteIdx(dir.File("x.gz"), IdxReader.ImagesMagic, [3, 4, 5], pixels);
        var read = IdxReader.ReadImages(dir.File("x.gz"));
        Assert.Equal((3, 4, 5), (read.Count, read.Rows, read.Cols));
        Assert.Equal(pixels.AsSpan(20, 20).ToArray(), read.GetImage(1));
        Assert.False(File.Exists(dir.File("x.gz.tmp")));
    }

    [Fact]
    public void Broad_lr_is_measured_like_lr_on_its_own_set()
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var model = Model(be);
        var rng = new Rng(11);
        float[] Image() => Enumerable.Range(0, 3 * 16 * 16).Select(_ => (float)rng.NextNormal()).ToArray();
        var near = Enumerable.Range(0, 10).Select(_ => Image()).ToList();
        var broad = Enumerable.Range(0, 70).Select(_ => Image()).ToList();   // more than one chunk of 64
        var target = EditTarget.Default(Config);
        using var both = new EditEvaluator(model, null, target, near, broad);
        using var alone = new EditEvaluator(model, null, target, broad);
        Assert.Equal(70, both.BroadLocalityCount);
        Assert.Equal(1.0, both.BroadLocalityRate());
        // Move an edited matrix: both evaluators see the same weights, so the broad LR equals LR on that set alone.
        var fc1 = model[target.Units[0].Parameter];
        var w = fc1.Value.ToArray();
        for (int i = 0; i < w.Length; i++) w[i] += (float)(rng.NextNormal() * 0.8);
        fc1.Value.CopyFrom(w);
        double broadLr = both.BroadLocalityRate();
        Assert.Equal(alone.LocalityRate(), broadLr, 12);
        Assert.True(broadLr < 1, "a large weight change left every prediction unchanged: the test does not exercise LR");
        using var none = new EditEvaluator(model, null, target, near);
        Assert.True(double.IsNaN(none.BroadLocalityRate()));
    }

    [Fact]
    public void Confidence_half_width_is_196_standard_errors()
    {
        Assert.Equal(1.96 * Math.Sqrt(1.0 / 3 / 4), EvalReport.Ci95([0, 1, 0, 1, double.NaN]), 12);
        Assert.True(double.IsNaN(EvalReport.Ci95([0.5])));
    }

    [Fact]
    public void Learned_vs_random_pairs_the_same_edits_and_leaves_out_unmatched_ones()
    {
        static EditRecord R(string method, double keep, string group, string image, double gr, double lr, double broad) => new()
        {
            Subset = "natural", Group = group, Label = 0, Method = method, Setting = $"{method} keep={keep}", Keep = keep,
            EditImages = [image], Sr = 1, Gr = gr, Lr = lr, LrBroad = broad, Steps = 1, FinalLoss = 0, KeptGates = 1,
            WeightsChanged = 1, WallMs = 1, WeightsBefore = "h",
        };
        var records = new[]
        {
            R("hprd", 0.1, "a", "1.png", 0.9, 0.5, 0.95), R("random", 0.1, "a", "1.png", 0.5, 0.6, 0.96),
            R("hprd", 0.1, "b", "2.png", 0.7, 0.5, 0.90), R("random", 0.1, "b", "2.png", 0.6, 0.5, 0.94),
            R("hprd", 0.1, "b", "3.png", 0.1, 0.1, 0.10),                                   // no random partner: left out
            R("random", 0.25, "a", "1.png", 0.0, 0.0, 0.00),                                 // other keep: not a baseline
            R("hprd", 0.25, "c", "4.png", 1.0, 1.0, 1.00),                                   // no random at 0.25 for this edit
        };
        var d = Assert.Single(EvalReport.LearnedVsRandom(records));
        Assert.Equal(("hprd keep=0.1", "random keep=0.1", 2), (d.Setting, d.Baseline, d.Pairs));
        Assert.Equal((0.4 + 0.1) / 2, d.Gr, 12);
        Assert.Equal((-0.1 + 0.0) / 2, d.Lr, 12);
        Assert.Equal((-0.01 - 0.04) / 2, d.LrBroad, 12);
        Assert.Equal(EvalReport.Ci95([0.4, 0.1]), d.GrCi, 12);
        Assert.Contains("| natural | hprd keep=0.1 − random keep=0.1 | 2 | +0.250 ± ", EvalReport.PairedTable([d]));
    }

    [Fact]
    public void A_swept_learning_rate_multiplies_the_settings_and_pairs_learned_with_random_at_the_same_rate()
    {
        var options = new WhereToEdit.Engine.Jobs.EvaluateJobOptions
        {
            ModelPath = "m", OutDir = "o", Methods = ["hprd", "random", "ft-l2"], Keeps = [0.1], Coefficients = [0.01], LearningRates = [1e-4, 4e-4],
        };
        var settings = options.Settings();
        Assert.Equal(["hprd keep=0.1 lr=0.0001", "hprd keep=0.1 lr=0.0004", "random keep=0.1 lr=0.0001", "random keep=0.1 lr=0.0004",
                      "ft-l2 c=0.01 lr=0.0001", "ft-l2 c=0.01 lr=0.0004"], settings.Select(s => s.Key));
        // One rate is the run's rate: the settings keep their plain names.
        Assert.Equal(["hprd keep=0.1"], (options with { Methods = ["hprd"], LearningRates = [1e-4] }).Settings().Select(s => s.Key));
        Assert.Throws<ArgumentException>(() => (options with { LearningRates = [1e-4, -1] }).Settings());

        static EditRecord R(string method, float lr, double gr) => new()
        {
            Subset = "natural", Group = "a", Label = 0, Method = method, Setting = $"{method} keep=0.1 lr={lr}", Keep = 0.1, LearningRate = lr,
            EditImages = ["1.png"], Sr = 1, Gr = gr, Lr = 1, LrBroad = 1, Steps = 1, FinalLoss = 0, KeptGates = 1, WeightsChanged = 1, WallMs = 1, WeightsBefore = "h",
        };
        var differences = EvalReport.LearnedVsRandom([R("hprd", 1e-4f, 0.5), R("random", 1e-4f, 0.25), R("hprd", 4e-4f, 0.75), R("random", 4e-4f, 0.5)]);
        Assert.Equal(2, differences.Count);
        Assert.All(differences, d => Assert.Equal(d.Setting.Split(" lr=")[1], d.Baseline.Split(" lr=")[1]));
        Assert.All(differences, d => Assert.Equal(0.25, d.Gr, 12));
        var rows = EvalReport.Summarise([R("hprd", 1e-4f, 0.5), R("hprd", 4e-4f, 0.75)]);
        Assert.Equal([1e-4f, 4e-4f], rows.Select(r => r.LearningRate));
    }

    [Fact]
    public void Front_gaps_measure_gr_above_the_fine_tuning_and_random_fronts_at_the_same_lr()
    {
        static EditRecord R(string method, string setting, string group, double lr, double gr) => new()
        {
            Subset = "natural", Group = group, Label = 0, Method = method, Setting = setting, EditImages = [group + ".png"],
            Sr = 1, Gr = gr, Lr = lr, Steps = 1, FinalLoss = 0, KeptGates = 1, WeightsChanged = 1, WallMs = 1, WeightsBefore = "h",
        };
        string[] groups = ["a", "b", "c", "d"];
        var records = groups.SelectMany((g, i) => new[]
        {
            R("ft-l2", "ft-l2 c=0.1", g, 0.9, 0.2), R("ft-l2", "ft-l2 c=0", g, 0.5, 0.8),       // FT front: (0.5, 0.8) – (0.9, 0.2)
            R("random", "random keep=0.05", g, 0.6, 0.4), R("random", "random keep=0.1", g, 0.8, 0.3),
            R("hprd", "hprd keep=0.1", g, 0.7, i % 2 == 0 ? 0.5 : 0.7),                        // mean GR 0.6 at LR 0.7
            R("hprd", "hprd keep=0.5", g, 0.95, 0.9),                                          // beyond both fronts' LR range
        }).ToList();
        var gaps = EvalReport.FrontGaps(records, resamples: 200);
        Assert.All(gaps, g => Assert.Equal("sensitive", g.Locality));   // no broad LR in these records
        FrontGap Of(string setting, string front) => Assert.Single(gaps, g => g.Setting == setting && g.Front == front);
        var hprdFt = Of("hprd keep=0.1", "fine-tuning");
        Assert.Equal(0.6 - 0.5, hprdFt.Gap, 12);                        // the FT front at LR 0.7 is 0.5
        Assert.True(hprdFt.Low < hprdFt.Gap && hprdFt.Gap < hprdFt.High, $"{hprdFt.Low} … {hprdFt.High} does not bracket {hprdFt.Gap}");
        Assert.True(hprdFt.Low >= 0.5 - 0.5 - 1e-12 && hprdFt.High <= 0.7 - 0.5 + 1e-12);
        Assert.Equal(1.0, hprdFt.Coverage);
        Assert.Equal(0.6 - 0.35, Of("hprd keep=0.1", "random masks").Gap, 12);   // the random front at LR 0.7 is 0.35
        Assert.Equal(0.3 - 0.35, Of("random keep=0.1", "fine-tuning").Gap, 12);
        var outside = Of("hprd keep=0.5", "fine-tuning");
        Assert.True(double.IsNaN(outside.Gap) && double.IsNaN(outside.Low) && outside.Coverage == 0);
        Assert.DoesNotContain(gaps, g => g.Setting.StartsWith("ft", StringComparison.Ordinal));
        Assert.DoesNotContain(gaps, g => g.Front == "random masks" && g.Setting.StartsWith("random", StringComparison.Ordinal));
        Assert.Equal(gaps, EvalReport.FrontGaps(records, resamples: 200));                        // seeded: reproducible
        Assert.Contains("| natural | sensitive | hprd keep=0.1 | fine-tuning | +0.100 | ", EvalReport.FrontGapTable(gaps));
        // One FT setting is no front.
        Assert.DoesNotContain(EvalReport.FrontGaps(records.Where(r => r.Setting != "ft-l2 c=0.1"), resamples: 10), g => g.Front == "fine-tuning");
    }

    [Fact]
    public void Saliency_is_the_gradient_norm_of_each_units_weights()
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 1 });
        using var model = Model(be);
        var target = EditTarget.Default(Config);
        var rng = new Rng(5);
        var image = Enumerable.Range(0, 3 * 16 * 16).Select(_ => (float)rng.NextNormal()).ToArray();
        int label = 1;
        using var saliency = new GradientSaliency(model, target);
        var scores = saliency.Scores(image, label);
        Assert.Equal(target.TotalGates, scores.Length);

        // Finite differences: moving unit j's weights along their gradient g changes the loss at rate ‖g‖².
        double Loss()
        {
            using var ws = model.CreateWorkspace(1);
            using var x = be.Allocate("x", 1, 3, 16, 16);
            x.CopyFrom(image);
            model.Forward(ws, x, 1);
            var logits = ws.Logits.ToArray();
            double max = logits.Max(), sum = logits.Sum(v => Math.Exp(v - max));
            return -(logits[label] - max - Math.Log(sum));
        }
        int h = target.UnitSize;
        foreach (int r in new[] { 0, 1 })   // fc1 (rows) and fc2 (columns) of the first edited block
        {
            var p = model[target.Units[r].Parameter];
            int rows = p.Shape[0], cols = p.Shape[1];
            int j = Enumerable.Range(0, h).MaxBy(k => scores[r * h + k]);
            var w0 = p.Value.ToArray();
            // The gradient restricted to unit j, recovered from the saliency's own definition by a second backward.
            using var grads = new GradientProbe(model, target, image, label);
            var g = grads.Gradient(r);
            var direction = new float[w0.Length];
            for (int k = 0; k < (r % 2 == 0 ? cols : rows); k++)
            {
                int idx = r % 2 == 0 ? j * cols + k : k * cols + j;
                direction[idx] = g[idx];
            }
            double norm2 = direction.Sum(v => (double)v * v);
            Assert.Equal(Math.Sqrt(norm2), scores[r * h + j], 4);
            const double eps = 1e-3;
            p.Value.CopyFrom(w0.Select((v, i) => (float)(v + eps * direction[i])).ToArray());
            double up = Loss();
            p.Value.CopyFrom(w0.Select((v, i) => (float)(v - eps * direction[i])).ToArray());
            double down = Loss();
            p.Value.CopyFrom(w0);
            Assert.Equal(norm2, (up - down) / (2 * eps), 2e-2 * norm2 + 1e-7);
        }
    }

    /// <summary>Full (untruncated) backward of the CE: an independent path to the edited matrices' gradients.</summary>
    private sealed class GradientProbe : IDisposable
    {
        private readonly VitModel _model;
        private readonly EditTarget _target;

        public GradientProbe(VitModel model, EditTarget target, float[] image, int label)
        {
            _model = model;
            _target = target;
            var be = model.Backend;
            using var ws = model.CreateWorkspace(1);
            using var x = be.Allocate("x", 1, 3, 16, 16);
            using var y = be.Allocate("y", 1);
            x.CopyFrom(image);
            y.CopyFrom([label]);
            foreach (var p in model.Parameters) be.Fill(p.Grad, 0f);
            model.Forward(ws, x, 1);
            be.CrossEntropy(ws.Logits, y, ws.Losses, ws.DLogits, 1, Config.NumClasses, 1f);
            model.Backward(ws, 1, BackwardOptions.Full);
        }

        public float[] Gradient(int unit) => _model[_target.Units[unit].Parameter].Grad.ToArray();

        public void Dispose() { }
    }

    [Fact]
    public void Saliency_overlap_pairs_within_and_across_groups()
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 1 });
        using var model = Model(be);
        var target = EditTarget.Default(Config);
        var rng = new Rng(9);
        float[] Image() => Enumerable.Range(0, 3 * 16 * 16).Select(_ => (float)rng.NextNormal()).ToArray();
        var a = Image();
        var images = new List<(string, int, float[])> { ("g1", 0, a), ("g1", 0, a), ("g2", 1, Image()) };
        using var saliency = new GradientSaliency(model, target);
        var o = saliency.Overlap("s", images, 0.25);
        Assert.Equal((3, 1, 2), (o.Images, o.WithinPairs, o.AcrossPairs));
        Assert.Equal(1.0, o.WithinGroups, 12);   // the same image twice: the same mask
        Assert.InRange(o.AcrossGroups, 0, 0.999);
    }
}

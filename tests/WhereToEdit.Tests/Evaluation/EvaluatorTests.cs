using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Evaluation;

public sealed class EvaluatorTests
{
    [Fact]
    public void Metric_formulas_on_hand_computed_cases()
    {
        Assert.Equal(1, EditMetrics.Sr([3, 3], 3));
        Assert.Equal(0, EditMetrics.Sr([3, 1], 3));
        Assert.Equal(2 / 3.0, EditMetrics.Gr([3, 0, 3], 3), 12);
        Assert.True(double.IsNaN(EditMetrics.Gr([], 3)));
        // Reference GR: F_g = 4 failures incl. the edit image, 3 now correct → (3 − 1)/4.
        Assert.Equal(0.5, EditMetrics.GrReference([3, 3, 1, 3], 3), 12);
        Assert.Equal(-0.25, EditMetrics.GrReference([0, 1, 1, 2], 3), 12);   // nothing fixed: the formula goes negative
        Assert.Equal(0.75, EditMetrics.Lr([1, 2, 3, 4], [1, 2, 0, 4]), 12);
        Assert.Throws<ArgumentException>(() => EditMetrics.Lr([1], [1, 2]));
    }

    private static readonly VitConfig Config = new()
    {
        ImageSize = 16, PatchSize = 4, InChans = 3, EmbedDim = 16, Depth = 4, NumHeads = 2, MlpHidden = 32, NumClasses = 4,
    };

    [Fact]
    public void Every_edit_starts_from_the_original_weights_and_the_model_is_restored()
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var model = new VitModel(be, Config);
        var rng = new Rng(3);
        TestModels.Randomise(model, rng);
        var target = EditTarget.Default(Config);
        using var net = new Hypernetwork(be, HypernetConfig.For(Config, target.Units.Count, depth: 1));
        net.InitializeRandom(7);
        float[] Image() => Enumerable.Range(0, 3 * 16 * 16).Select(_ => (float)rng.NextNormal()).ToArray();
        var pool = Enumerable.Range(0, 60).Select(_ => Image()).ToList();
        string fingerprint = VitCheckpoint.Fingerprint(model);
        using var evaluator = new EditEvaluator(model, net, target, pool.Take(20).ToList());
        var predictions = evaluator.Predict(pool);
        // One group: the pool images the model does not call class 2.
        var wrong = pool.Select((img, i) => (img, i)).Where(t => predictions[t.i] != 2).Take(4).ToList();
        var group = new EvalGroup("synthetic", "→2", 2, wrong.Select(t => $"img{t.i}").ToList(), wrong.Select(t => t.img).ToList());
        var settings = new List<EvalSetting> { new(EditMethod.Hprd, 0.25, 0), new(EditMethod.Random, 0.25, 0), new(EditMethod.FtL2, 1, 0.01f) };
        var options = new EvalOptions { LearningRate = 1e-2f, MaxSteps = 30 };
        var records = evaluator.Run([group], settings, options);

        Assert.Equal(4 * settings.Count, records.Count);
        Assert.Single(records.Select(r => r.WeightsBefore).Distinct());
        Assert.Equal(fingerprint, VitCheckpoint.Fingerprint(model));
        Assert.All(records, r => Assert.InRange(r.Lr, 0, 1));
        Assert.All(records.Where(r => r.Method == "hprd"), r => Assert.NotNull(r.MaskGates));

        // Reference GR on the same edits: with a successful single-image edit, GR_ref·|F_g| = GR·(|F_g| − 1).
        var reference = evaluator.Run([group], settings, options with { GrFormula = GrFormula.Reference });
        for (int i = 0; i < records.Count; i++)
            if (records[i].Sr == 1)
                Assert.Equal(records[i].Gr * 3, reference[i].Gr * 4, 9);

        var summary = EvalReport.Summarise(records);
        Assert.Equal(3, summary.Count);
        Assert.Contains("hprd keep=0.25", EvalReport.MarkdownTable(summary));
        var overlaps = EvalReport.Overlaps(records);
        Assert.Single(overlaps);
        Assert.Equal(6, overlaps[0].WithinPairs);
        using var dir = new TempDir();
        var files = EvalReport.ParetoPlots(summary, dir.File("plots"), "test");
        Assert.All(files, f => Assert.True(new FileInfo(f).Length > 1000));
    }
}

using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.MetaTraining;
using WhereToEdit.Engine.Models;
using Xunit;

namespace WhereToEdit.Tests.MetaTraining;

/// <summary>The width scaling rules, the λ normalisation option and the meta-training diagnostics (issue 10).</summary>
public sealed class ScalingAndDiagnosticsTests
{
    private static readonly float[] Half = [0.5f];

    [Fact]
    public void Learning_rates_scale_by_768_over_width()
    {
        Assert.Equal(2e-5, ScalingRules.EditLearningRate(768), 12);
        Assert.Equal(2.4e-4, ScalingRules.EditLearningRate(64), 12);
        Assert.Equal(1e-3, MetaTrainOptions.ForWidth(768).InnerLr, 9);
        Assert.Equal(1.2e-2, MetaTrainOptions.ForWidth(64).InnerLr, 7);
        Assert.True(MetaTrainOptions.ForWidth(64).CutMixReferenceBounds);
        Assert.Throws<ArgumentOutOfRangeException>(() => ScalingRules.EditLearningRate(0));
    }

    [Fact]
    public void Sparsity_normalisation_sets_the_per_gate_penalty()
    {
        var perGate = new MetaTrainOptions { SparsityWeight = 2f };
        var refWidth = perGate with { SparsityNorm = SparsityNormalization.ReferenceWidth };
        int gates = 8 * 6 * 256;
        Assert.Equal(2f / gates, perGate.PenaltyGradPerGate(gates, 256), 12);
        // At the reference width both agree; at H = 256 reference-width is 12× weaker (λ / (B·R·3072)).
        Assert.Equal(2f / (8 * 6 * 3072), refWidth.PenaltyGradPerGate(gates, 256), 12);
        Assert.Equal(perGate.PenaltyGradPerGate(8 * 6 * 3072, 3072), refWidth.PenaltyGradPerGate(8 * 6 * 3072, 3072), 12);
        Assert.Throws<ArgumentException>(() => (perGate with { SparsityNorm = "per-row" }).Validate());
        Assert.Throws<ArgumentException>(() => (perGate with { DiagnosticsEvery = -1 }).Validate());
    }

    [Fact]
    public void Options_json_without_the_new_fields_reads_as_what_old_checkpoints_were_trained_with()
    {
        var legacy = MetaTrainOptions.FromJson("""{"batch":8,"inner_lr":0.001,"sparsity_weight":1}""");
        Assert.Equal(SparsityNormalization.PerGate, legacy.SparsityNorm);
        Assert.Equal(0, legacy.DiagnosticsEvery);
        Assert.False(legacy.CutMixReferenceBounds);
        var roundTrip = MetaTrainOptions.FromJson(new MetaTrainOptions { SparsityNorm = SparsityNormalization.ReferenceWidth, DiagnosticsEvery = 7 }.ToJson());
        Assert.Equal(SparsityNormalization.ReferenceWidth, roundTrip.SparsityNorm);
        Assert.Equal(7, roundTrip.DiagnosticsEvery);
    }

    [Fact]
    public void Overlap_measures_count_what_they_say()
    {
        // Two samples of 10 gates; keep 0.2 → top 2 each.
        float[] scores = [9, 8, 0, 0, 0, 0, 0, 0, 0, 0, /**/ 9, 0, 8, 0, 0, 0, 0, 0, 0, 0];
        var sets = MetaDiagnostics.TopKSets(scores, 2, 0.2);
        Assert.Equal([true, true, false, false, false, false, false, false, false, false], sets[0]);
        Assert.Equal([true, false, true, false, false, false, false, false, false, false], sets[1]);
        Assert.Equal(1.0 / 3, MetaDiagnostics.MeanIoUAcross(sets), 12);
        Assert.Equal(1.0, MetaDiagnostics.MeanIoUSame(sets, sets), 12);
        var open = MetaDiagnostics.PositiveSets([1, -1, 2, -2, /**/ 1, 1, -1, -1], 2);
        Assert.Equal([true, false, true, false], open[0]);
        Assert.Equal(1.0 / 3, MetaDiagnostics.IoU(open[0], open[1]), 12);
        Assert.Throws<ArgumentException>(() => MetaDiagnostics.TopKSets(new float[7], 2));
        Assert.True(double.IsNaN(MetaDiagnostics.MeanIoUAcross([open[0]])));
    }

    [Fact]
    public void Kl_reduction_is_the_mean_share_the_inner_loop_removes()
    {
        var a = new StageAResult([1f, 3f], [0.5f, 0.5f], [2f, 4f]);
        Assert.Equal((0.5 + 0.25) / 2, a.KlReduction, 6);
    }

    private static MetaTrainOptions Small(int diagnosticsEvery, float innerLr = 0.01f, int innerSteps = 2) => new()
    {
        Batch = 3, OuterSteps = 2, InnerSteps = innerSteps, InnerLr = innerLr, Iterations = 4, CheckpointEvery = 0, HypernetDepth = 1, Seed = 3,
        HypernetLr = 1e-3, DiagnosticsEvery = diagnosticsEvery,
    };

    [Fact]
    public void Diagnostics_are_reported_every_n_iterations_and_change_no_result()
    {
        using var be = Backends.Cpu(GemmKind.Managed);
        using var model = new VitModel(be, VitConfig.Preset("test_gray"));
        model.InitializeRandom(8);

        using var plain = new MetaTrainer(model, Half, Half, new SyntheticImageSource(12, 30, 26, seed: 5), Small(0));
        var plainStats = new List<IterationStats>();
        plain.Run(null, plainStats.Add);
        using var diagnosed = new MetaTrainer(model, Half, Half, new SyntheticImageSource(12, 30, 26, seed: 5), Small(2));
        var stats = new List<IterationStats>();
        diagnosed.Run(null, stats.Add);

        // Same arithmetic: the second stage A draws from its own generator and puts z back.
        for (int i = 0; i < plain.Hypernet.Parameters.Count; i++)
            Assert.Equal(plain.Hypernet.Parameters[i].Value.ToArray(), diagnosed.Hypernet.Parameters[i].Value.ToArray());
        Assert.Equal(plainStats.Select(s => s.BceLast), stats.Select(s => s.BceLast));

        foreach (var s in stats)
        {
            bool due = s.Iteration % 2 == 0;
            Assert.Equal(due, s.LabelIoUSame.HasValue);
            Assert.Equal(due, s.LabelIoUAcross.HasValue);
            Assert.Equal(due, s.ProbeIoUAcross.HasValue);
            if (due)
            {
                Assert.InRange(s.LabelIoUSame!.Value, 0, 1);
                Assert.InRange(s.ProbeIoUAcross!.Value, 0, 1);
            }
            Assert.True(float.IsFinite(s.KlReduction));
            var csv = s.ToCsv().Split(',');
            Assert.Equal(IterationStats.CsvHeader.Split(',').Length, csv.Length);
            Assert.Equal(due, csv[^1].Length > 0);
        }
        // The probe masks are the hypernetwork's top-10 % on fixed images: recomputing gives the logged value.
        Assert.Equal(stats[^1].ProbeIoUAcross!.Value, diagnosed.ProbeInputDependence(), 12);
    }

    [SkippableFact]
    public void On_the_shipped_model_the_scaled_inner_lr_removes_more_of_the_kl()
    {
        string? assets = null;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null && assets is null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "assets", "fashion_mnist", "vit.safetensors"))) assets = Path.Combine(dir.FullName, "assets", "fashion_mnist");
        Skip.If(assets is null, "assets/fashion_mnist not found above the test binary");
        using var be = Backends.Cpu(GemmKind.Managed);
        var loaded = WhereToEdit.Engine.IO.ModelFolder.Load(Path.Combine(assets!, "vit.safetensors"));
        using var model = VitCheckpoint.Load(be, loaded);
        float Reduction(float innerLr)
        {
            var o = new MetaTrainOptions { Batch = 4, OuterSteps = 2, InnerSteps = 5, InnerLr = innerLr, Iterations = 1, HypernetDepth = 1, Seed = 1 };
            using var t = new MetaTrainer(model, loaded.Preprocessing.Mean, loaded.Preprocessing.Std, new SyntheticImageSource(8, 28, 28, seed: 2), o);
            return t.RunIteration().KlReduction;
        }
        float reference = Reduction(1e-3f), scaled = Reduction((float)MetaTrainOptions.ForWidth(model.Config.EmbedDim).InnerLr);
        Assert.InRange(reference, 0f, 1f);
        Assert.True(scaled > reference, $"KL reduction {scaled} at the scaled inner lr, {reference} at 1e-3");
    }

    [Fact]
    public void Without_inner_steps_nothing_is_reduced()
    {
        using var be = Backends.Cpu(GemmKind.Managed);
        using var model = new VitModel(be, VitConfig.Preset("test_gray"));
        model.InitializeRandom(8);
        using var trainer = new MetaTrainer(model, Half, Half, new SyntheticImageSource(12, 30, 26, seed: 5), Small(0, innerSteps: 0) with { Iterations = 1 });
        Assert.Equal(0f, trainer.RunIteration().KlReduction);
    }
}

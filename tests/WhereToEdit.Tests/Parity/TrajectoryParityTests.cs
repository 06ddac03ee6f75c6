using System.Text.Json;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.MetaTraining;
using WhereToEdit.Engine.Models;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Parity;

/// <summary>
/// Whole runs against the float64 PyTorch trajectory fixture (tests/reference/make_trajectory_fixtures.py,
/// fixtures/method_trajectory.safetensors, from method_tiny's ViT and hypernetwork): three meta-training iterations in a
/// row — the hypernetwork and its stage-B RMSprop state carried over — and a whole HPRD edit run to its stop rule. One
/// step can match while a run drifts (state carried wrongly, a schedule off by one iteration); these catch that.
/// </summary>
public sealed class TrajectoryParityTests(ITestOutputHelper output)
{
    private static readonly Lazy<ReferenceFixture> Base = new(() => ReferenceFixture.Load("method_tiny"));
    private static readonly Lazy<ReferenceFixture> Trajectory = new(() => ReferenceFixture.Load("method_trajectory"));

    private static Dictionary<string, (int[] Shape, float[] Data)> Prefixed(ReferenceFixture fx, string prefix) =>
        fx.Tensors.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal)).ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value);

    [Theory]
    [InlineData(GemmKind.Managed)]
    [InlineData(GemmKind.OpenBlas)]
    public void Three_meta_training_iterations_match_the_pytorch_trajectory(GemmKind gemm)
    {
        var fx = Base.Value;
        var tj = Trajectory.Value;
        var config = VitConfig.FromJson(fx.Metadata["config"]);
        int[] blocks = JsonSerializer.Deserialize<int[]>(fx.Metadata["edit_blocks"])!;
        using var be = Backends.Cpu(gemm);
        using var model = new VitModel(be, config);
        model.LoadWeights(Prefixed(fx, "vit/param/"), "method_tiny");
        using var hyper = new Hypernetwork(be, HypernetConfig.FromJson(fx.Metadata["hyper_config"]));
        hyper.LoadWeights(Prefixed(fx, "hyper/param/"), "method_tiny");
        var target = new EditTarget(config, blocks);
        var options = new MetaTrainOptions { Batch = 2 };
        Assert.Equal(double.Parse(tj.Metadata["cosine_t_max"], System.Globalization.CultureInfo.InvariantCulture), options.CosineTMax);
        using var step = new MetaTrainingStep(model, target, hyper, options);

        int b = options.Batch, pixels = config.InChans * config.ImageSize * config.ImageSize;
        int iterations = int.Parse(tj.Metadata["iterations"], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(iterations >= 3);
        var lrs = JsonSerializer.Deserialize<double[]>(tj.Metadata["stage_b_lrs"])!;
        for (int it = 0; it < iterations; it++)
        {
            var images = tj[$"traj/meta/{it}/images"];
            var boxes = tj[$"traj/meta/{it}/boxes"];
            var mixed = new float[b * pixels];
            for (int i = 0; i < b; i++)
                CutMix.Apply(images.AsSpan(i * pixels, pixels), images.AsSpan((i + b) * pixels, pixels), mixed.AsSpan(i * pixels, pixels),
                    config.InChans, config.ImageSize, config.PatchSize,
                    new CutMixBox((int)boxes[4 * i], (int)boxes[4 * i + 1], (int)boxes[4 * i + 2], (int)boxes[4 * i + 3]));
            step.SetBatch(images.AsSpan(0, b * pixels), mixed);
            var a = step.RunStageA(tj[$"traj/meta/{it}/z0"]);
            // The outer KL is small (~0.02) and a sum of nearly cancelling terms: float32 gives ~1e-4 relative (a few 1e-6
            // absolute) already in the first iteration, so it gets 5e-4; drift from a wrong carried state is far larger.
            Compare.Check(output, $"iteration {it} outer_kl", a.OuterKl, tj[$"traj/meta/{it}/outer_kl"], 5e-4);
            Assert.Equal(lrs[it], options.HypernetLrAt(it), 12);
            var stageB = step.RunStageB(options.HypernetLrAt(it));
            Compare.Check(output, $"iteration {it} stage_b_losses", stageB.Losses, tj[$"traj/meta/{it}/stage_b_losses"], 1e-4);
        }
        int d = config.EmbedDim;
        // What the run changed (final − initial, all parameters but the key biases, normwise): sharper than the parameters
        // themselves, which the 12 stage-B steps move by ~1e-3 only. (A stage-B RMSprop state reset per iteration is
        // already 2.7e-2 off in iteration 1's stage-B losses.)
        var changeActual = new List<float>();
        var changeExpected = new List<float>();
        foreach (var p in hyper.Parameters)
        {
            var initial = fx["hyper/param/" + p.Name];
            var actual = p.Value.ToArray();
            var expected = tj["traj/meta/hyper_final/" + p.Name];
            for (int i = 0; i < initial.Length; i++)
            {
                if (p.Name.EndsWith("attn.qkv.bias", StringComparison.Ordinal) && i >= d && i < 2 * d) continue;
                changeActual.Add(actual[i] - initial[i]);
                changeExpected.Add(expected[i] - initial[i]);
            }
        }
        Compare.Check(output, "hypernetwork change over the run", changeActual.ToArray(), changeExpected.ToArray(), 2e-3);
        foreach (var p in hyper.Parameters)
        {
            var expected = tj["traj/meta/hyper_final/" + p.Name];
            var actual = p.Value.ToArray();
            if (p.Name.EndsWith("attn.qkv.bias", StringComparison.Ordinal))
            {
                // As in MetaFixtureParityTests: the key bias has an exactly-zero gradient in real arithmetic, so its fp32
                // noise gets RMSprop steps; q and v are compared tightly, k loosely.
                Compare.Check(output, p.Name + " [q]", actual.AsSpan(0, d), expected.AsSpan(0, d), 1e-4);
                Compare.Check(output, p.Name + " [v]", actual.AsSpan(2 * d, d), expected.AsSpan(2 * d, d), 1e-4);
                Compare.Check(output, p.Name + " [k, loose]", actual.AsSpan(d, d), expected.AsSpan(d, d), 1e-2);
            }
            else Compare.Check(output, "hyper_final/" + p.Name, actual, expected, 1e-4);
        }
    }

    [Theory]
    [InlineData(GemmKind.Managed)]
    [InlineData(GemmKind.OpenBlas)]
    public void A_whole_hprd_edit_matches_the_pytorch_loss_trajectory_and_stops_at_the_same_step(GemmKind gemm)
    {
        var fx = Base.Value;
        var tj = Trajectory.Value;
        var edit = JsonDocument.Parse(tj.Metadata["edit"]).RootElement;
        using var be = Backends.Cpu(gemm);
        using var model = new VitModel(be, VitConfig.FromJson(fx.Metadata["config"]));
        model.LoadWeights(Prefixed(fx, "vit/param/"), "method_tiny");
        var target = new EditTarget(model.Config, JsonSerializer.Deserialize<int[]>(fx.Metadata["edit_blocks"])!);
        var mask = new EditMask(target, target.Units.SelectMany(u => fx["edit/mask/" + u.Parameter[..^".weight".Length]].Select(v => v != 0)).ToArray());
        using var editor = new ModelEditor(model, target);
        var options = new EditOptions
        {
            Method = EditMethod.Hprd,
            LearningRate = edit.GetProperty("lr").GetSingle(),
            MaxSteps = edit.GetProperty("max_steps").GetInt32(),
            StopLoss = edit.GetProperty("stop_loss").GetSingle(),
        };
        var labels = tj["traj/edit/labels"].Select(v => (int)v).ToArray();
        var result = editor.Edit(fx["edit/images"], labels, mask, options);
        output.WriteLine($"steps {result.Steps}, loss {result.InitialLoss} -> {result.FinalLoss}");
        int steps = edit.GetProperty("steps").GetInt32();
        Assert.True(steps > 4, $"the fixture's edit runs only {steps} steps");
        Assert.Equal(steps, result.Steps);
        Assert.True(result.Success);
        Compare.Check(output, "edit losses (before each step)", result.LossHistory, tj["traj/edit/losses"], 1e-4);
        foreach (var u in target.Units)
            Compare.Check(output, "edit final " + u.Parameter, model[u.Parameter].Value.ToArray(), tj["traj/edit/final/" + u.Parameter], 1e-4);
    }
}

using System.Security.Cryptography;
using System.Runtime.InteropServices;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using Xunit;

namespace WhereToEdit.Tests.Editing;

/// <summary>
/// The editor's per-edit shortcuts change nothing in the results: the edit starting from the mask's forward
/// (<see cref="ModelEditor.MaskScores"/>) equals one that runs its own, a stale forward is never reused, and the record's
/// hashes and changed-weight count (cached for the snapshot, compared against it) are those of the whole matrices.
/// </summary>
public sealed class EditorReuseTests
{
    private static readonly VitConfig Config = new()
    {
        ImageSize = 16, PatchSize = 4, InChans = 3, EmbedDim = 16, Depth = 4, NumHeads = 2, MlpHidden = 32, NumClasses = 5,
    };

    private static VitModel Model(CpuBackend be, ulong seed = 1)
    {
        var m = new VitModel(be, Config);
        TestModels.Randomise(m, seed, lnStd: 0.1);
        return m;
    }

    private static float[] Images(int n, ulong seed)
    {
        var rng = new Rng(seed);
        return Enumerable.Range(0, n * 3 * 16 * 16).Select(_ => (float)rng.NextNormal()).ToArray();
    }

    private static readonly EditOptions Options = new() { LearningRate = 1e-2f, MaxSteps = 6, StopLoss = 0f };

    private static float[][] Weights(VitModel m, EditTarget t) => t.Units.Select(u => m[u.Parameter].Value.ToArray()).ToArray();

    private static string Sha(float[] values) => Convert.ToHexString(SHA256.HashData(MemoryMarshal.AsBytes(values.AsSpan())))[..16].ToLowerInvariant();

    private static void SameEdit(EditResult expected, float[][] expectedWeights, EditResult actual, float[][] actualWeights)
    {
        // Bit for bit: the shortcut runs the same kernels on the same inputs.
        Assert.Equal(expected.InitialLoss, actual.InitialLoss);
        Assert.Equal(expected.LossHistory, actual.LossHistory);
        Assert.Equal(expected.FinalLoss, actual.FinalLoss);
        Assert.Equal(expected.HashesAfter, actual.HashesAfter);
        for (int i = 0; i < expectedWeights.Length; i++) Assert.Equal(expectedWeights[i], actualWeights[i]);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void An_edit_from_the_masks_forward_equals_one_with_its_own(bool fastPath)
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        var target = EditTarget.Default(Config);
        var images = Images(2, 7);
        int[] labels = [1, 4];
        using var net = new Hypernetwork(be, HypernetConfig.For(Config, target.Units.Count, depth: 1));
        net.InitializeRandom(4);

        using var m1 = Model(be);
        var scores1 = new MaskPredictor(m1, net, target).Scores(images, 2);
        var mask = EditMask.TopK(target, scores1, 0.25);
        using var e1 = new ModelEditor(m1, target, fastPath);
        var r1 = e1.Edit(images, labels, mask, Options);

        using var m2 = Model(be);
        using var e2 = new ModelEditor(m2, target, fastPath);
        var scores2 = e2.MaskScores(new MaskPredictor(m2, net, target), images, 2);
        Assert.Equal(scores1, scores2);
        var r2 = e2.Edit(images, labels, EditMask.TopK(target, scores2, 0.25), Options);
        Assert.True(r1.Steps == Options.MaxSteps && r1.LossHistory[^1] < r1.LossHistory[0], "the edit must move the weights");
        SameEdit(r1, Weights(m1, target), r2, Weights(m2, target));

        // A predictor on another model (serve's base model, --base): the editor falls back to the predictor's own forward.
        using var other = Model(be);
        Assert.Equal(scores1, e2.MaskScores(new MaskPredictor(other, net, target), images, 2));

        // Not during an edit: its forward would overwrite the activations the steps start from.
        e2.Begin(images, labels, mask, Options);
        Assert.Throws<InvalidOperationException>(() => e2.MaskScores(new MaskPredictor(m2, net, target), images, 2));
        e2.Finish();
    }

    [Fact]
    public void A_stale_forward_is_not_reused()
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        var target = EditTarget.Default(Config);
        var x = Images(1, 7);
        var y = Images(1, 8);
        using var net = new Hypernetwork(be, HypernetConfig.For(Config, target.Units.Count, depth: 1));
        net.InitializeRandom(4);
        var mask = EditMask.Random(target, 0.25, seed: 3);

        using var m1 = Model(be);
        using var e1 = new ModelEditor(m1, target);
        var expected = e1.Edit(y, [2], mask, Options);
        var expectedWeights = Weights(m1, target);

        // Primed on other images: Begin must run its own forward on y.
        using var m2 = Model(be);
        using var e2 = new ModelEditor(m2, target);
        e2.MaskScores(new MaskPredictor(m2, net, target), x, 1);
        SameEdit(expected, expectedWeights, e2.Edit(y, [2], mask, Options), Weights(m2, target));

        // Primed on y with edited weights, then reverted: the forward is of weights the model no longer has.
        e2.MaskScores(new MaskPredictor(m2, net, target), y, 1);
        e2.Revert();
        SameEdit(expected, expectedWeights, e2.Edit(y, [2], mask, Options), Weights(m2, target));
    }

    [Theory]
    [InlineData(true, 3, 0f)]       // ended by the step budget: the last forward was before the last update
    [InlineData(true, 100, 0.01f)]  // ended by the stop rule: its check ran the forward of the final weights
    [InlineData(false, 3, 0f)]
    [InlineData(false, 100, 0.01f)]
    public void The_records_after_figures_are_those_of_the_final_weights(bool fastPath, int maxSteps, float stopLoss)
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        var target = EditTarget.Default(Config);
        using var model = Model(be);
        using var editor = new ModelEditor(model, target, fastPath);
        var images = Images(2, 7);
        int[] labels = [1, 4];
        var r = editor.Edit(images, labels, EditMask.Random(target, 0.25, seed: 3), new EditOptions { LearningRate = 1e-2f, MaxSteps = maxSteps, StopLoss = stopLoss });
        Assert.True(stopLoss == 0 ? r.Steps == maxSteps : r.Steps < maxSteps && r.Success, $"steps {r.Steps}");

        using var ws = model.CreateWorkspace(2);
        using var x = be.FromHost("x", images, 2, 3, 16, 16);
        model.Forward(ws, x, 2);
        var logits = ws.Logits.ToArray();
        double loss = 0;
        for (int i = 0; i < 2; i++)
        {
            var row = logits.AsSpan(i * Config.NumClasses, Config.NumClasses).ToArray();
            double max = row.Max(), sum = row.Sum(v => Math.Exp(v - max));
            double p = Math.Exp(row[labels[i]] - max) / sum;
            Assert.Equal(Array.IndexOf(row, row.Max()), r.PredictionsAfter[i]);
            Assert.Equal(p, r.TargetProbAfter[i], 4);
            loss -= Math.Log(p) / 2;
        }
        Assert.True(Math.Abs(loss - r.FinalLoss) <= 1e-4 * Math.Max(1, loss), $"final loss {r.FinalLoss}, of the final weights {loss}");
    }

    [Fact]
    public void Hashes_and_changed_counts_are_of_the_whole_matrices_whatever_the_edit_starts_from()
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        var target = EditTarget.Default(Config);
        using var model = Model(be);
        using var editor = new ModelEditor(model, target);
        var image = Images(1, 7);
        // Gates in the first block's two matrices only: the other four do not change, and keep their hashes.
        var gates = new bool[target.TotalGates];
        for (int j = 0; j < target.UnitSize; j += 3) { gates[j] = true; gates[target.UnitSize + j] = true; }
        var mask = new EditMask(target, gates);

        void Check(EditResult r, float[][] before, float[][] after)
        {
            long changed = 0;
            for (int i = 0; i < before.Length; i++)
            {
                string name = target.Units[i].Parameter;
                Assert.Equal(Sha(before[i]), r.HashesBefore[name]);
                Assert.Equal(Sha(after[i]), r.HashesAfter[name]);
                for (int k = 0; k < before[i].Length; k++)
                    if (BitConverter.SingleToInt32Bits(before[i][k]) != BitConverter.SingleToInt32Bits(after[i][k])) changed++;
            }
            Assert.Equal(changed, r.WeightsChanged);
            Assert.True(changed > 0);
        }

        var w0 = Weights(model, target);
        var first = editor.Edit(image, [3], mask, Options);
        var w1 = Weights(model, target);
        Check(first, w0, w1);
        Assert.Equal(first.HashesBefore[target.Units[2].Parameter], first.HashesAfter[target.Units[2].Parameter]);
        Assert.NotEqual(first.HashesBefore[target.Units[0].Parameter], first.HashesAfter[target.Units[0].Parameter]);

        // From the edited weights (not the snapshot): hashed and counted against those.
        var second = editor.Edit(image, [1], mask, Options);
        Check(second, w1, Weights(model, target));

        // Back at the snapshot: its cached hashes.
        editor.Revert();
        var third = editor.Edit(image, [3], mask, Options);
        Check(third, w0, Weights(model, target));
        Assert.Equal(first.HashesBefore, third.HashesBefore);

        // A new snapshot of other weights: hashed anew.
        editor.SnapshotOriginal();
        var w3 = Weights(model, target);
        var fourth = editor.Edit(image, [1], mask, Options);
        Check(fourth, w3, Weights(model, target));
    }
}

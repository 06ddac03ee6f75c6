using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Editing;

/// <summary>
/// The fast edit path (<see cref="EditPass"/>: [CLS]-only last block, gather-GEMM weight gradients for the masked units)
/// against the full path (the model's forward and truncated backward) on small models: same logits, same gradients on
/// the selected units, same edits.
/// </summary>
public sealed class EditPassTests(ITestOutputHelper output)
{
    private static readonly VitConfig WithBias = TestModels.Small;
    private static readonly VitConfig NoBias = TestModels.SmallNoBias;

    private static VitModel Model(CpuBackend be, VitConfig config, ulong seed)
    {
        var m = new VitModel(be, config);
        TestModels.Randomise(m, seed, lnStd: 0.1);
        return m;
    }

    private static float[] Images(VitConfig c, int n, ulong seed)
    {
        var rng = new Rng(seed);
        return Enumerable.Range(0, n * c.InChans * c.ImageSize * c.ImageSize).Select(_ => (float)rng.NextNormal()).ToArray();
    }

    private static float MaxAbs(float[] a) => a.Length == 0 ? 0 : a.Max(Math.Abs);

    private float CheckClose(string name, float[] expected, float[] actual, float relTolerance = 2e-5f)
    {
        Assert.Equal(expected.Length, actual.Length);
        float err = 0;
        for (int i = 0; i < expected.Length; i++) err = Math.Max(err, Math.Abs(expected[i] - actual[i]));
        float scale = Math.Max(1e-3f, MaxAbs(expected));
        output.WriteLine($"{name}: max |fast − full| = {err:E2} (max |full| = {scale:E2})");
        Assert.True(err <= relTolerance * scale, $"{name}: max error {err} > {relTolerance} × {scale}");
        return err;
    }

    public static TheoryData<string, int[], int, bool> Cases => new()
    {
        { "bias", [2, 3], 1, true },      // edits the last block itself
        { "bias", [3], 2, true },         // edits the last block only: the backward ends inside it
        { "bias", [1, 2], 3, true },      // last block only forwarded, batch 3
        { "nobias", [0, 1], 2, true },    // no qkv bias, three heads' worth of width per head
        { "bias", [1, 2], 2, false },     // whole matrices (FT)
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Fast_pass_matches_the_full_forward_and_backward(string configName, int[] blocks, int batch, bool masked)
    {
        var config = configName == "bias" ? WithBias : NoBias;
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var model = Model(be, config, seed: 5);
        var target = new EditTarget(config, blocks);
        var mask = EditMask.Random(target, 0.3, seed: 9);
        int[] labels = Enumerable.Range(0, batch).Select(i => (i * 2 + 1) % config.NumClasses).ToArray();
        using var images = be.FromHost("x", Images(config, batch, 11), batch, config.InChans, config.ImageSize, config.ImageSize);
        using var labelTensor = be.FromHost("y", labels.Select(l => (float)l).ToArray(), batch);

        // Full path: every token through every block.
        using var ws = model.CreateWorkspace(batch);
        (float[] Logits, float[][] Grads) Full()
        {
            model.ZeroGrad();
            model.LastBlockClsOnly = false;
            model.Forward(ws, images, batch);
            model.LastBlockClsOnly = true;
            var logits = ws.Logits.ToArray();
            be.CrossEntropy(ws.Logits, labelTensor, ws.Losses, ws.DLogits, batch, config.NumClasses, 1f / batch);
            model.Backward(ws, batch, BackwardOptions.Truncated(target.FirstBlock, target.ParameterNames));
            return (logits, target.Units.Select(u => model[u.Parameter].Grad.ToArray()).ToArray());
        }
        var (fullLogits, fullGrads) = Full();

        // Fast path, in a fresh workspace, the gradients starting from garbage (the selected units are overwritten).
        using var ws2 = model.CreateWorkspace(batch);
        using var pass = new EditPass(model, target.FirstBlock, target.Units.Select(u => (u.Parameter, u.Axis)).ToArray(), batch);
        foreach (var u in target.Units)
        {
            var gates = mask.UnitAsFloats(u.Index);
            pass.Select(u.Index, masked ? Enumerable.Range(0, gates.Length).Where(j => gates[j] != 0).ToArray() : null);
        }
        int d = config.EmbedDim, h = config.MlpHidden;
        bool Selected(EditUnit u, int i) => !masked || mask.Unit(u.Index)[u.Axis == MaskAxis.Rows ? i / d : i % h];
        void FastBackwardMatches(string when, float[][] expectedGrads)
        {
            foreach (var u in target.Units)
            {
                var g = model[u.Parameter].Grad;
                if (masked) g.CopyFrom(Enumerable.Repeat(123f, (int)g.Length).ToArray()); else be.Fill(g, 0f);
            }
            be.CrossEntropy(ws2.Logits, labelTensor, ws2.Losses, ws2.DLogits, batch, config.NumClasses, 1f / batch);
            pass.Backward(ws2, batch);
            foreach (var u in target.Units)
            {
                var fast = model[u.Parameter].Grad.ToArray();
                var full = expectedGrads[u.Index];
                var expected = new List<float>();
                var actual = new List<float>();
                for (int i = 0; i < full.Length; i++)
                {
                    if (Selected(u, i)) { expected.Add(full[i]); actual.Add(fast[i]); }
                    else Assert.Equal(123f, fast[i]);   // outside the selection: not written
                }
                Assert.True(expected.Count > 0);
                Assert.True(MaxAbs(expected.ToArray()) > 0, $"{u.Parameter}: the full path's gradient is zero (the test would prove nothing)");
                CheckClose($"{u.Parameter}.grad ({when})", expected.ToArray(), actual.ToArray());
            }
        }
        pass.Forward(ws2, images, batch);
        CheckClose("logits", fullLogits, ws2.Logits.ToArray());
        FastBackwardMatches("first forward", fullGrads);

        // A second forward from the cache gives the same logits again.
        pass.ForwardFrom(ws2, batch);
        CheckClose("logits (from cache)", fullLogits, ws2.Logits.ToArray());

        // The selected weights move, as in a masked step (the first edited block then runs from its cache: only the
        // selected units are recomputed): the fast path still matches the full one, forward and backward, twice.
        var rng = new Rng(17);
        for (int step = 0; step < 2; step++)
        {
            foreach (var u in target.Units)
            {
                var w = model[u.Parameter].Value.ToArray();
                for (int i = 0; i < w.Length; i++)
                    if (Selected(u, i)) w[i] += (float)(rng.NextNormal() * 0.2);
                model[u.Parameter].Value.CopyFrom(w);
            }
            var (movedLogits, movedGrads) = Full();
            Assert.True(fullLogits.Zip(movedLogits).Max(p => Math.Abs(p.First - p.Second)) > 1e-2f, "the moved weights must change the logits");
            pass.ForwardFrom(ws2, batch);
            CheckClose($"logits (weights moved {step + 1}×)", movedLogits, ws2.Logits.ToArray());
            FastBackwardMatches($"weights moved {step + 1}×", movedGrads);
        }
    }

    [Fact]
    public void Gather_rows_copies_the_selected_rows_in_order_and_checks_the_indices()
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var src = be.FromHost("src", Enumerable.Range(0, 15).Select(i => (float)i).ToArray(), 5, 3);
        using var dst = be.Allocate("dst", 3, 3);
        be.GatherRows(src, [4, 0, 2], 3, dst);
        Assert.Equal([12f, 13, 14, 0, 1, 2, 6, 7, 8], dst.ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => be.GatherRows(src, [5], 3, dst));
    }

    [Theory]
    [InlineData("hprd")]
    [InlineData("random")]
    public void The_compact_optimizer_gives_the_weights_of_the_scattered_gradients_bit_for_bit(string method)
    {
        var config = WithBias;
        var target = EditTarget.Default(config);
        var mask = EditMask.Random(target, 0.25, seed: 5);
        var images = Images(config, 2, 9);
        var options = new EditOptions { Method = EditMethods.Parse(method), LearningRate = 1e-2f, MaxSteps = 8 };
        int[] labels = [2, 4];

        (EditResult Result, float[][] Weights) Run(bool compact) => EditFreshModel(config, target,
            model => new ModelEditor(model, target) { CompactOptimizer = compact },
            editor =>
            {
                editor.Edit(images, labels, mask, options);
                // A second edit on the same editor reuses (and re-zeroes) the compact state.
                editor.Revert();
                return editor.Edit(images, labels, mask, options);
            });

        var (scattered, scatteredWeights) = Run(false);
        var (compact, compactWeights) = Run(true);
        Assert.Equal(scattered.Steps, compact.Steps);
        Assert.Equal(scattered.LossHistory, compact.LossHistory);
        Assert.Equal(scattered.HashesAfter, compact.HashesAfter);
        Assert.True(compact.WeightsChanged > 0);
        for (int i = 0; i < scatteredWeights.Length; i++)
            Assert.True(scatteredWeights[i].AsSpan().SequenceEqual(compactWeights[i]), $"{target.Units[i].Parameter} differs");
    }

    [Theory]
    [InlineData("hprd")]
    [InlineData("random")]
    [InlineData("ft-l2")]
    public void Edits_through_the_fast_path_match_the_full_path(string method)
    {
        var config = WithBias;
        var target = EditTarget.Default(config);
        var mask = EditMask.Random(target, 0.25, seed: 3);
        var images = Images(config, 2, 7);
        var options = new EditOptions { Method = EditMethods.Parse(method), LearningRate = 1e-2f, MaxSteps = 12, Coefficient = 0.1f };
        int[] labels = [1, 4];

        (EditResult Result, float[][] Weights) Run(bool fast) => EditFreshModel(config, target,
            model => new ModelEditor(model, target, fastPath: fast),
            editor =>
            {
                Assert.Equal(fast, editor.FastPath);
                return editor.Edit(images, labels, mask, options);
            });

        var (full, fullWeights) = Run(false);
        var (fast, fastWeights) = Run(true);
        output.WriteLine($"{method}: steps full {full.Steps}, fast {fast.Steps}; losses full [{string.Join(", ", full.LossHistory.Select(l => l.ToString("G6")))}]");
        Assert.Equal(full.Steps, fast.Steps);
        Assert.True(full.Steps > 1);
        CheckClose("loss history", full.LossHistory, fast.LossHistory, 1e-4f);
        Assert.Equal(full.PredictionsAfter, fast.PredictionsAfter);
        Assert.Equal(full.WeightsChanged, fast.WeightsChanged);
        for (int i = 0; i < fullWeights.Length; i++)
            CheckClose(target.Units[i].Parameter, fullWeights[i], fastWeights[i], 1e-4f);
    }

    /// <summary>The seed-1 model on a 2-thread CPU backend, edited by <paramref name="edit"/> with the editor <paramref name="editorFor"/> makes: its result and the edited matrices after it.</summary>
    private static (EditResult Result, float[][] Weights) EditFreshModel(VitConfig config, EditTarget target,
        Func<VitModel, ModelEditor> editorFor, Func<ModelEditor, EditResult> edit)
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var model = Model(be, config, seed: 1);
        using var editor = editorFor(model);
        var result = edit(editor);
        return (result, target.Units.Select(u => model[u.Parameter].Value.ToArray()).ToArray());
    }
}

using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Ops;

/// <summary>
/// The meta-training ops: per-sample gated weights W'_b = W + g_b ⊙ Δ_b, the gate gradient Σ ∇W'⊙Δ over a row or
/// column (checked by finite differences of the combine), binary cross-entropy with torch's clamp, and the
/// per-sample-weights path of the ViT against one-image-at-a-time runs with the shared weights swapped.
/// </summary>
public sealed class GatingOpsTests(ITestOutputHelper output) : IDisposable
{
    private readonly CpuBackend _be = Backends.Cpu(GemmKind.Managed);
    private readonly Rng _rng = new(19);

    public void Dispose() => _be.Dispose();

    private float[] Random(int n, double scale = 1) => TestMath.Normal(_rng, n, scale);

    private Tensor T(string name, float[] data) => _be.FromHost(name, data, data.Length);

    [Theory]
    [InlineData(MaskAxis.Rows)]
    [InlineData(MaskAxis.Columns)]
    public void Gated_combine_values_and_gate_gradient(MaskAxis axis)
    {
        const int batch = 3, rows = 5, cols = 300, gateStride = 700, gateOffset = 11;   // cols > the column chunk
        int length = axis == MaskAxis.Rows ? rows : cols;
        float[] w = Random(rows * cols), delta = Random(batch * rows * cols), gates = Random(gateOffset + (batch - 1) * gateStride + length);
        float[] Combine(float[] g)
        {
            var o = _be.Allocate("o", batch * rows * cols);
            _be.GatedCombine(T("w", w), T("g", g), gateOffset, gateStride, T("d", delta), o, batch, rows, cols, axis);
            return o.ToArray();
        }
        var y = Combine(gates);
        for (int b = 0; b < batch; b++)
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++)
                {
                    float g = gates[gateOffset + b * gateStride + (axis == MaskAxis.Rows ? r : c)];
                    int i = (b * rows + r) * cols + c;
                    Assert.Equal(w[r * cols + c] + g * delta[i], y[i], 5e-6f);
                }

        // d/dg Σ u ⊙ combine(g) = Σ over the gated row/column of u ⊙ Δ, plus the addend; other entries untouched.
        float[] u = Random(batch * rows * cols);
        var dg = _be.FromHost("dg", Enumerable.Repeat(-7f, gates.Length).ToArray(), gates.Length);
        _be.GateGradient(T("u", u), T("d", delta), dg, gateOffset, gateStride, batch, rows, cols, axis, 0.25f);
        var got = dg.ToArray();
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < length; j++)
            {
                double expected = 0.25;
                int n = axis == MaskAxis.Rows ? cols : rows;
                for (int k = 0; k < n; k++)
                {
                    int i = axis == MaskAxis.Rows ? (b * rows + j) * cols + k : (b * rows + k) * cols + j;
                    expected += (double)u[i] * delta[i];
                }
                Assert.Equal(expected, got[gateOffset + b * gateStride + j], 1e-4);
            }
        Assert.Equal(-7f, got[0]);
        Assert.Equal(-7f, got[gateOffset + length]);

        // Finite differences of the combine on a few gates.
        foreach (int j in new[] { 0, length - 1 })
        {
            int at = gateOffset + 2 * gateStride + j;
            float keep = gates[at];
            gates[at] = keep + 1e-2f; double plus = TestMath.Dot(u, Combine(gates));
            gates[at] = keep - 1e-2f; double minus = TestMath.Dot(u, Combine(gates));
            gates[at] = keep;
            double numerical = (plus - minus) / 2e-2 + 0.25;
            Assert.True(Math.Abs(numerical - got[at]) <= 2e-3 * Math.Max(1, Math.Abs(numerical)), $"gate {j}: numerical {numerical}, analytic {got[at]}");
        }
    }

    [Fact]
    public void Gate_ops_refuse_bad_arguments()
    {
        var w = _be.Allocate("w", 4, 6);
        var d = _be.Allocate("d", 2, 4, 6);
        var g = _be.Allocate("g", 11);
        Assert.Throws<ArgumentException>(() => _be.GatedCombine(w, g, 0, 6, d, d, 2, 4, 6, MaskAxis.None));
        Assert.Throws<ArgumentException>(() => _be.GatedCombine(w, g, 0, 6, d, d, 2, 4, 6, MaskAxis.Columns));   // needs 12 gates
        _be.GatedCombine(w, g, 0, 5, d, d, 2, 4, 6, MaskAxis.Columns);
        Assert.Throws<ArgumentException>(() => _be.GateGradient(d, d, g, 8, 4, 2, 4, 6, MaskAxis.Rows, 0f));         // 8 + 4 + 4 > 11
    }

    [Fact]
    public void Binary_cross_entropy_matches_torch_formula_and_gradient()
    {
        const int n = 9000;   // more than two sum blocks
        float[] p = Enumerable.Range(0, n).Select(_ => (float)(0.02 + 0.96 * _rng.NextDouble())).ToArray();
        float[] y = Enumerable.Range(0, n).Select(_ => (float)_rng.NextDouble()).ToArray();
        float Loss(float[] pv)
        {
            var l = _be.Allocate("l", 1);
            _be.BinaryCrossEntropy(T("p", pv), T("y", y), l, null, n, 0.1f);
            return l.ToArray()[0];
        }
        double expected = 0;
        for (int i = 0; i < n; i++) expected -= y[i] * Math.Log(p[i]) + (1 - y[i]) * Math.Log(1 - p[i]);
        expected *= 0.1 / n;
        Assert.Equal(expected, Loss(p), 1e-6);

        var dp = _be.Allocate("dp", n);
        _be.BinaryCrossEntropy(T("p", p), T("y", y), _be.Allocate("l", 1), dp, n, 0.1f);
        var analytic = dp.ToArray();
        foreach (int i in new[] { 0, 4095, 4096, n - 1 })
        {
            float keep = p[i];
            p[i] = keep + 1e-3f; double plus = Loss(p);
            p[i] = keep - 1e-3f; double minus = Loss(p);
            p[i] = keep;
            double numerical = (plus - minus) / 2e-3;
            double exact = 0.1 / n * (p[i] - y[i]) / (p[i] * (1 - p[i]));
            Assert.Equal(exact, analytic[i], Math.Abs(exact) * 1e-5);
            Assert.True(Math.Abs(numerical - exact) <= 0.05 * Math.Abs(exact) + 1e-9, $"element {i}: numerical {numerical}, exact {exact}");
        }
    }

    [Fact]
    public void Binary_cross_entropy_clamps_the_log_at_minus_100()
    {
        var l = _be.Allocate("l", 1);
        var dp = _be.Allocate("dp", 2);
        _be.BinaryCrossEntropy(T("p", [0f, 1f]), T("y", [1f, 0f]), l, dp, 2, 1f);
        Assert.Equal(100f, l.ToArray()[0]);                // both terms are log 0 → −100
        Assert.Equal(-0.5f / 1e-12f, dp.ToArray()[0], 1e6f);   // (p − y)/max(p(1 − p), 1e-12)/n
        Assert.Equal(0.5f / 1e-12f, dp.ToArray()[1], 1e6f);
    }


    /// <summary>
    /// A batch run with per-sample fc1/fc2 weights in two blocks gives, for each sample, the logits and the weight
    /// gradients of a one-image run in which the model's shared weights are those of the sample.
    /// </summary>
    [Fact]
    public void Per_sample_weights_match_one_image_runs_with_swapped_weights()
    {
        var config = VitConfig.Preset("test_tiny");
        using var model = new VitModel(_be, config);
        model.InitializeRandom(5);
        const int batch = 3;
        int[] blocks = [2, 3];
        int c = config.NumClasses;
        var images = T("images", Random(batch * config.InChans * config.ImageSize * config.ImageSize));
        var teacher = _be.Allocate("teacher", batch, c);
        _be.Softmax(T("t", Random(batch * c, 2)), teacher, batch, c, 5f);

        var names = blocks.SelectMany(b => new[] { $"blocks.{b}.mlp.fc1.weight", $"blocks.{b}.mlp.fc2.weight" }).ToArray();
        var shared = names.Select(n => model[n].Value.ToArray()).ToArray();
        var perSample = names.Select((n, i) =>
        {
            var shape = model[n].Shape;
            var values = new float[batch * shared[i].Length];
            for (int b = 0; b < batch; b++)
                for (int k = 0; k < shared[i].Length; k++) values[b * shared[i].Length + k] = shared[i][k] + (float)(0.05 * _rng.NextNormal());
            return new PerSampleWeights(_be.FromHost(n + ".per_sample", values, batch, shape[0], shape[1]), _be.Allocate(n + ".per_sample.grad", batch, shape[0], shape[1]));
        }).ToArray();

        using var ws = model.CreateWorkspace(batch);
        model.Forward(ws, images, batch);
        for (int k = 0; k < blocks.Length; k++) ws.SetPerSampleWeights(blocks[k], perSample[2 * k], perSample[2 * k + 1]);
        model.ForwardFrom(ws, blocks[0], batch);
        var logits = ws.Logits.ToArray();
        _be.KlDivergence(ws.Logits, teacher, ws.Losses, ws.DLogits, batch, c, 5f, 1f);
        model.Backward(ws, batch, BackwardOptions.Truncated(blocks[0], []));
        var grads = perSample.Select(p => p.Grads.ToArray()).ToArray();
        ws.ClearPerSampleWeights();

        using var one = model.CreateWorkspace(1);
        var single = _be.Allocate("single", config.InChans, config.ImageSize, config.ImageSize);
        var target = _be.Allocate("target", 1, c);
        var backward = BackwardOptions.Truncated(blocks[0], names);
        for (int b = 0; b < batch; b++)
        {
            for (int i = 0; i < names.Length; i++)
                _be.Copy(perSample[i].Values, b * shared[i].Length, model[names[i]].Value, 0, shared[i].Length);
            _be.Copy(images, b * single.Length, single, 0, single.Length);
            _be.Copy(teacher, b * c, target, 0, c);
            model.Forward(one, single, 1);
            Compare.Check(output, $"logits sample {b}", logits.AsSpan(b * c, c), one.Logits.ToArray(), 1e-5);
            _be.KlDivergence(one.Logits, target, one.Losses, one.DLogits, 1, c, 5f, 1f);
            model.ZeroGrad(names);
            model.Backward(one, 1, backward);
            for (int i = 0; i < names.Length; i++)
                Compare.Check(output, $"{names[i]} grad sample {b}", grads[i].AsSpan(b * shared[i].Length, shared[i].Length), model[names[i]].Grad.ToArray(), 1e-5);
        }
        for (int i = 0; i < names.Length; i++) model[names[i]].Value.CopyFrom(shared[i]);
    }
}

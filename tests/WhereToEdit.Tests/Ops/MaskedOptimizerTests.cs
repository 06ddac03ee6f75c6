using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Tensors;
using Xunit;

namespace WhereToEdit.Tests.Ops;

/// <summary>
/// The CPU optimizer steps split rows over the pool and gather a column mask's columns 8 at a time. Every element
/// must come out bit-identical to a one-thread dense step of the same rule (inside the mask), and untouched outside
/// it, whatever the mask's layout or the tail of a row. The dense rule itself is checked against the reference
/// backend by the conformance suite.
/// </summary>
public sealed class MaskedOptimizerTests
{
    public static TheoryData<string, MaskAxis> Cases()
    {
        var data = new TheoryData<string, MaskAxis>();
        foreach (string rule in new[] { "sgd", "rmsprop", "adam", "adamw" })
            foreach (var axis in new[] { MaskAxis.None, MaskAxis.Rows, MaskAxis.Columns })
                data.Add(rule, axis);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_pooled_masked_step_equals_a_one_thread_dense_step_on_the_masked_entries(string rule, MaskAxis axis)
    {
        // Sizes chosen so the pool runs several chunks: fc1-like [1000, 512] for a row mask, fc2-like [768, 603]
        // (an odd width: each row has a scalar tail of masked columns) for a column mask.
        int rows = axis == MaskAxis.Columns ? 768 : 1000, cols = axis == MaskAxis.Columns ? 603 : 512;
        int units = axis == MaskAxis.Columns ? cols : rows;
        var rng = new Random(16);
        var keep = new float[units];
        for (int u = 0; u < units; u++) keep[u] = rng.NextDouble() < 0.1 ? 1f : 0f;
        float[] w = Values(rng, rows * cols, 1f), g = Values(rng, rows * cols, 1f);
        float[] s1 = Values(rng, rows * cols, 0.1f), s2 = Values(rng, rows * cols, 0.1f);
        for (int i = 0; i < s2.Length; i++) { s2[i] *= s2[i]; if (rule == "rmsprop") s1[i] *= s1[i]; }

        using var pooled = new CpuBackend(new CpuBackendOptions { Threads = 2, Gemm = GemmKind.Managed });
        using var single = new CpuBackend(new CpuBackendOptions { Threads = 1, Gemm = GemmKind.Managed });
        var (pw, ps1, ps2) = Run(pooled, rule, axis, w, g, s1, s2, keep, rows, cols);
        var (dw, ds1, ds2) = Run(single, rule, MaskAxis.None, w, g, s1, s2, keep, rows, cols);

        int moved = 0;
        for (int i = 0; i < w.Length; i++)
        {
            bool inside = axis switch { MaskAxis.Rows => keep[i / cols] != 0, MaskAxis.Columns => keep[i % cols] != 0, _ => true };
            var (ew, es1, es2) = inside ? (dw[i], ds1[i], ds2[i]) : (w[i], s1[i], s2[i]);
            if (BitConverter.SingleToInt32Bits(pw[i]) != BitConverter.SingleToInt32Bits(ew)
                || BitConverter.SingleToInt32Bits(ps1[i]) != BitConverter.SingleToInt32Bits(es1)
                || BitConverter.SingleToInt32Bits(ps2[i]) != BitConverter.SingleToInt32Bits(es2))
                Assert.Fail($"{rule} {axis}: element {i} (row {i / cols}, column {i % cols}, {(inside ? "inside" : "outside")} the mask): "
                            + $"param {pw[i]:R} vs {ew:R}, state {ps1[i]:R} vs {es1:R}, {ps2[i]:R} vs {es2:R}");
            if (inside && pw[i] != w[i]) moved++;
        }
        Assert.True(moved > w.Length / 20, $"{rule} {axis}: only {moved} parameters moved");
    }

    private static (float[] W, float[] S1, float[] S2) Run(CpuBackend be, string rule, MaskAxis axis, float[] w, float[] g,
                                                         float[] s1, float[] s2, float[] keep, int rows, int cols)
    {
        using var tw = be.FromHost("w", w, rows, cols);
        using var tg = be.FromHost("g", g, rows, cols);
        using var ts1 = be.FromHost("s1", s1, rows, cols);
        using var ts2 = be.FromHost("s2", s2, rows, cols);
        using var mask = be.FromHost("mask", keep, keep.Length);
        var update = axis switch
        {
            MaskAxis.None => UpdateMask.None((long)rows * cols),
            MaskAxis.Rows => UpdateMask.RowMask(mask, rows, cols),
            _ => UpdateMask.ColumnMask(mask, rows, cols),
        };
        for (int step = 1; step <= 2; step++)
            switch (rule)
            {
                case "sgd": be.SgdStep(tw, tg, 0.1f, 0.01f, update); break;
                case "rmsprop": be.RmsPropStep(tw, tg, ts1, 1e-2f, 0.99f, 1e-8f, 0.01f, update); break;
                case "adam": be.AdamStep(tw, tg, ts1, ts2, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, false, step, update); break;
                default: be.AdamStep(tw, tg, ts1, ts2, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.05f, true, step, update); break;
            }
        return (tw.ToArray(), ts1.ToArray(), ts2.ToArray());
    }

    private static float[] Values(Random rng, int n, float scale)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return v;
    }
}

using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Tensors;
using Xunit;

namespace WhereToEdit.Tests.Ops;

/// <summary>
/// The edit's compact RMSprop (<c>IEditKernels.CompactRmsPropStep</c>: gradient and state [K, cols] or [rows, K] for the K
/// selected rows or columns) gives the parameter bits of the masked RMSprop on full-size tensors, step after step, leaves
/// everything outside the selection as it was, and its state is the full state's selected rows or columns.
/// </summary>
public sealed class CompactRmsPropTests
{
    [Theory]
    [InlineData(MaskAxis.Rows, 1)]
    [InlineData(MaskAxis.Rows, 2)]
    [InlineData(MaskAxis.Columns, 1)]
    [InlineData(MaskAxis.Columns, 2)]
    public void Compact_rmsprop_matches_the_masked_step_on_full_tensors(MaskAxis axis, int threads)
    {
        // fc1-like [1000, 512] by rows, fc2-like [768, 603] by columns (an odd width).
        int rows = axis == MaskAxis.Columns ? 768 : 1000, cols = axis == MaskAxis.Columns ? 603 : 512;
        int count = axis == MaskAxis.Rows ? rows : cols, other = axis == MaskAxis.Rows ? cols : rows;
        var rng = new Random(23);
        var keep = Enumerable.Range(0, count).Select(_ => rng.NextDouble() < 0.1 ? 1f : 0f).ToArray();
        int[] units = Enumerable.Range(0, count).Where(u => keep[u] != 0).ToArray();
        float[] w = Values(rng, rows * cols);

        using var be = new CpuBackend(new CpuBackendOptions { Threads = threads });
        using var full = be.FromHost("w.full", w, rows, cols);
        using var compact = be.FromHost("w.compact", w, rows, cols);
        using var fullGrad = be.Allocate("g.full", rows, cols);
        using var fullState = be.Allocate("s.full", rows, cols);
        using var compactGrad = be.Allocate("g.compact", units.Length * other);
        using var compactState = be.Allocate("s.compact", units.Length * other);
        using var gates = be.FromHost("gates", keep, count);
        var mask = axis == MaskAxis.Rows ? UpdateMask.RowMask(gates, rows, cols) : UpdateMask.ColumnMask(gates, rows, cols);
        for (int step = 0; step < 4; step++)
        {
            // A fresh gradient per step, inside the selection only (what the EditPass scatters, or keeps compact).
            var g = Values(rng, rows * cols);
            var gc = new float[units.Length * other];
            for (int i = 0; i < units.Length; i++)
                for (int j = 0; j < other; j++)
                {
                    int at = axis == MaskAxis.Rows ? units[i] * cols + j : j * cols + units[i];
                    gc[axis == MaskAxis.Rows ? i * other + j : j * units.Length + i] = g[at];
                }
            fullGrad.CopyFrom(g);
            compactGrad.CopyFrom(gc);
            be.RmsPropStep(full, fullGrad, fullState, 1e-2f, 0.99f, 1e-8f, 0f, mask);
            be.CompactRmsPropStep(compact, compactGrad, compactState, units, axis, rows, cols, 1e-2f, 0.99f, 1e-8f);
        }
        float[] fw = full.ToArray(), cw = compact.ToArray(), fs = fullState.ToArray(), cs = compactState.ToArray();
        int moved = 0;
        for (int i = 0; i < fw.Length; i++)
        {
            Assert.True(BitConverter.SingleToInt32Bits(fw[i]) == BitConverter.SingleToInt32Bits(cw[i]),
                $"{axis}: element {i}: compact {cw[i]:R}, masked full {fw[i]:R}");
            if (cw[i] != w[i]) moved++;
        }
        Assert.Equal(units.Length * other, moved);
        for (int i = 0; i < units.Length; i++)
            for (int j = 0; j < other; j++)
            {
                int at = axis == MaskAxis.Rows ? units[i] * cols + j : j * cols + units[i];
                Assert.Equal(fs[at], cs[axis == MaskAxis.Rows ? i * other + j : j * units.Length + i]);
            }
    }

    [Fact]
    public void Compact_rmsprop_refuses_unsorted_or_out_of_range_units()
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 1 });
        using var w = be.Allocate("w", 8, 4);
        using var g = be.Allocate("g", 8);
        using var s = be.Allocate("s", 8);
        var unsorted = Assert.Throws<ArgumentException>(() => be.CompactRmsPropStep(w, g, s, [3, 1], MaskAxis.Rows, 8, 4, 1e-2f, 0.99f, 1e-8f));
        Assert.Contains("sorted and distinct", unsorted.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => be.CompactRmsPropStep(w, g, s, [1, 9], MaskAxis.Rows, 8, 4, 1e-2f, 0.99f, 1e-8f));
        var shape = Assert.Throws<ArgumentException>(() => be.CompactRmsPropStep(w, g, s, [1], MaskAxis.Rows, 4, 4, 1e-2f, 0.99f, 1e-8f));
        Assert.Contains("given as 4×4", shape.Message);
    }

    private static float[] Values(Random rng, int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
}

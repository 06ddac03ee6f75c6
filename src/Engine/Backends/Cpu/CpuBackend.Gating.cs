using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Cpu;

// Per-sample gated weights W'_b = W + g_b ⊙ Δ_b (rows of fc1, columns of fc2) and the gradient that reaches the
// gates through that product: the row or column dot Σ ∇W'_b ⊙ Δ_b. Used by meta-training's batched inner loops.
public sealed unsafe partial class CpuBackend
{
    private struct GateArgs
    {
        public float* W, G, Delta, Out;
        public long GStride, OutStride;
        public int Rows, Cols, ColumnChunks;
        public float Addend;
    }

    /// <summary>Columns per work item of the column-axis reduction (outputs accumulate in place, rows in order).</summary>
    private const int GateColumnChunk = 256;

    public void GatedCombine(Tensor weight, Tensor gates, long gatesOffset, long gatesStride, Tensor delta, Tensor output,
                             int batch, int rows, int cols, MaskAxis axis)
    {
        int length = OpChecks.GateLength(axis, rows, cols, "gated combine");
        if (batch <= 0 || rows <= 0 || cols <= 0) throw new ArgumentException($"gated combine: batch {batch}, rows {rows}, cols {cols} must be positive");
        long matrix = (long)rows * cols;
        Need(weight, matrix, "gated-combine weight");
        Need(delta, batch * matrix, "gated-combine delta");
        Need(output, batch * matrix, "gated-combine output");
        OpChecks.Gates(gates, gatesOffset, gatesStride, batch, length, "gated-combine gates");
        fixed (float* pw = Cpu(weight, "weight").Data, pg = Cpu(gates, "gates").Data, pd = Cpu(delta, "delta").Data, po = Cpu(output, "output").Data)
        {
            var args = new GateArgs { W = pw, G = pg + gatesOffset, Delta = pd, Out = po, GStride = gatesStride, Rows = rows, Cols = cols };
            int items = checked(batch * rows);
            int grain = Math.Max(1, 8192 / cols);
            if (axis == MaskAxis.Rows) _pool.For(items, grain, &args, &CombineRowsChunk);
            else _pool.For(items, grain, &args, &CombineColumnsChunk);
        }
    }

    // Work item = (sample b, row r): out[b, r, :] = w[r, :] + g_b[r]·delta[b, r, :].
    private static void CombineRowsChunk(void* p, int start, int end)
    {
        ref var a = ref *(GateArgs*)p;
        for (int item = start; item < end; item++)
        {
            int b = item / a.Rows, r = item % a.Rows;
            long at = (long)item * a.Cols;
            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(a.Delta + at, a.Cols), a.G[b * a.GStride + r],
                new ReadOnlySpan<float>(a.W + (long)r * a.Cols, a.Cols), new Span<float>(a.Out + at, a.Cols));
        }
    }

    // Work item = (sample b, row r): out[b, r, :] = w[r, :] + g_b ⊙ delta[b, r, :].
    private static void CombineColumnsChunk(void* p, int start, int end)
    {
        ref var a = ref *(GateArgs*)p;
        for (int item = start; item < end; item++)
        {
            int b = item / a.Rows, r = item % a.Rows;
            long at = (long)item * a.Cols;
            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(a.Delta + at, a.Cols), new ReadOnlySpan<float>(a.G + b * a.GStride, a.Cols),
                new ReadOnlySpan<float>(a.W + (long)r * a.Cols, a.Cols), new Span<float>(a.Out + at, a.Cols));
        }
    }

    public void GateGradient(Tensor dweights, Tensor delta, Tensor output, long outputOffset, long outputStride,
                             int batch, int rows, int cols, MaskAxis axis, float addend)
    {
        int length = OpChecks.GateLength(axis, rows, cols, "gate gradient");
        if (batch <= 0 || rows <= 0 || cols <= 0) throw new ArgumentException($"gate gradient: batch {batch}, rows {rows}, cols {cols} must be positive");
        long matrix = (long)rows * cols;
        Need(dweights, batch * matrix, "gate-gradient weight gradient");
        Need(delta, batch * matrix, "gate-gradient delta");
        OpChecks.Gates(output, outputOffset, outputStride, batch, length, "gate-gradient output");
        fixed (float* pw = Cpu(dweights, "dweights").Data, pd = Cpu(delta, "delta").Data, po = Cpu(output, "output").Data)
        {
            var args = new GateArgs
            {
                W = pw, Delta = pd, Out = po + outputOffset, OutStride = outputStride, Rows = rows, Cols = cols, Addend = addend,
                ColumnChunks = (cols + GateColumnChunk - 1) / GateColumnChunk,
            };
            if (axis == MaskAxis.Rows)
                _pool.For(checked(batch * rows), Math.Max(1, 8192 / cols), &args, &GateGradientRowsChunk);
            else
                _pool.For(checked(batch * args.ColumnChunks), 1, &args, &GateGradientColumnsChunk);
        }
    }

    // Work item = (sample b, row j): out_b[j] = addend + dW[b, j, :]·Δ[b, j, :].
    private static void GateGradientRowsChunk(void* p, int start, int end)
    {
        ref var a = ref *(GateArgs*)p;
        for (int item = start; item < end; item++)
        {
            int b = item / a.Rows, j = item % a.Rows;
            long at = (long)item * a.Cols;
            a.Out[b * a.OutStride + j] = a.Addend + TensorPrimitives.Dot(new ReadOnlySpan<float>(a.W + at, a.Cols), new ReadOnlySpan<float>(a.Delta + at, a.Cols));
        }
    }

    // Work item = (sample b, a chunk of columns): out_b[j] = addend + Σ_k dW[b, k, j]·Δ[b, k, j], rows added in order.
    private static void GateGradientColumnsChunk(void* p, int start, int end)
    {
        ref var a = ref *(GateArgs*)p;
        for (int item = start; item < end; item++)
        {
            int b = item / a.ColumnChunks, c0 = item % a.ColumnChunks * GateColumnChunk;
            int width = Math.Min(GateColumnChunk, a.Cols - c0);
            var acc = new Span<float>(a.Out + b * a.OutStride + c0, width);
            acc.Clear();
            long sample = (long)b * a.Rows * a.Cols + c0;
            for (int k = 0; k < a.Rows; k++)
            {
                long at = sample + (long)k * a.Cols;
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(a.W + at, width), new ReadOnlySpan<float>(a.Delta + at, width), acc, acc);
            }
            TensorPrimitives.Add(acc, a.Addend, acc);
        }
    }
}

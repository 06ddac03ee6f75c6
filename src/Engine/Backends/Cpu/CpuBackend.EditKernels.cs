using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Cpu;

// The edit's optional ops (IEditKernels): row/column gathers and scatters for the masked gather-GEMM, and the
// attention of the [CLS] query alone for the last block.
public sealed unsafe partial class CpuBackend : IEditKernels
{
    private struct IndexArgs
    {
        public float* Src, Dst;
        public int* Index;
        public int Count, Cols, Ld;
    }

    public void GatherColumns(Tensor src, int rows, int ld, ReadOnlySpan<int> columns, Tensor dst)
    {
        int k = columns.Length;
        if (rows == 0 || k == 0) return;
        CheckIndices(columns, ld, "gathered column");
        Need(src, (long)(rows - 1) * ld + ld, "gather source");
        Need(dst, (long)rows * k, "gather destination");
        fixed (float* ps = Cpu(src, "gather source").Data, pd = Cpu(dst, "gather destination").Data)
        fixed (int* pi = columns)
        {
            var args = new IndexArgs { Src = ps, Dst = pd, Index = pi, Count = k, Ld = ld };
            _pool.For(rows, Math.Max(1, ElementGrain / k), &args, &GatherColumnsChunk);
        }
    }

    private static void GatherColumnsChunk(void* p, int start, int end)
    {
        ref var a = ref *(IndexArgs*)p;
        for (int r = start; r < end; r++)
        {
            float* s = a.Src + (long)r * a.Ld, d = a.Dst + (long)r * a.Count;
            for (int i = 0; i < a.Count; i++) d[i] = s[a.Index[i]];
        }
    }

    public void GatherRows(Tensor src, ReadOnlySpan<int> rowIndex, int cols, Tensor dst)
    {
        int k = rowIndex.Length;
        if (k == 0 || cols == 0) return;
        CheckIndices(rowIndex, checked((int)(src.Length / cols)), "gathered row");
        Need(dst, (long)k * cols, "gather destination");
        float[] s = Cpu(src, "gather source").Data, d = Cpu(dst, "gather destination").Data;
        for (int i = 0; i < k; i++) s.AsSpan(rowIndex[i] * cols, cols).CopyTo(d.AsSpan(i * cols, cols));
    }

    public void ScatterRows(Tensor src, ReadOnlySpan<int> rowIndex, int cols, Tensor dst)
    {
        int k = rowIndex.Length;
        if (k == 0 || cols == 0) return;
        CheckIndices(rowIndex, checked((int)(dst.Length / cols)), "scattered row");
        Need(src, (long)k * cols, "scatter source");
        float[] s = Cpu(src, "scatter source").Data, d = Cpu(dst, "scatter destination").Data;
        for (int i = 0; i < k; i++) s.AsSpan(i * cols, cols).CopyTo(d.AsSpan(rowIndex[i] * cols, cols));
    }

    public void ScatterColumns(Tensor src, int rows, ReadOnlySpan<int> columns, int ld, Tensor dst)
    {
        int k = columns.Length;
        if (rows == 0 || k == 0) return;
        CheckIndices(columns, ld, "scattered column");
        Need(src, (long)rows * k, "scatter source");
        Need(dst, (long)rows * ld, "scatter destination");
        fixed (float* ps = Cpu(src, "scatter source").Data, pd = Cpu(dst, "scatter destination").Data)
        fixed (int* pi = columns)
        {
            var args = new IndexArgs { Src = ps, Dst = pd, Index = pi, Count = k, Ld = ld };
            _pool.For(rows, Math.Max(1, ElementGrain / k), &args, &ScatterColumnsChunk);
        }
    }

    private static void ScatterColumnsChunk(void* p, int start, int end)
    {
        ref var a = ref *(IndexArgs*)p;
        for (int r = start; r < end; r++)
        {
            float* s = a.Src + (long)r * a.Count, d = a.Dst + (long)r * a.Ld;
            for (int i = 0; i < a.Count; i++) d[a.Index[i]] = s[i];
        }
    }

    private static void CheckIndices(ReadOnlySpan<int> indices, int limit, string role)
    {
        foreach (int i in indices)
            if ((uint)i >= (uint)limit) throw new ArgumentOutOfRangeException(nameof(indices), i, $"{role} index must be in [0, {limit})");
    }

    public void ClsAttentionForward(Tensor qkv, Tensor output, Tensor probs, int batch, int tokens, int heads, int headDim)
    {
        int dim = heads * headDim;
        Need(qkv, (long)batch * tokens * 3 * dim, "attention qkv");
        Need(output, (long)batch * dim, "[CLS] attention output");
        Need(probs, (long)batch * heads * tokens, "[CLS] attention probabilities");
        fixed (float* pq = Cpu(qkv, "qkv").Data, po = Cpu(output, "output").Data, pp = Cpu(probs, "probs").Data)
        {
            var args = new AttentionArgs { Qkv = pq, Out = po, Probs = pp, Tokens = tokens, Heads = heads, HeadDim = headDim, Scale = 1f / MathF.Sqrt(headDim) };
            _pool.For(batch * heads, 1, &args, &ClsAttentionForwardChunk);
        }
    }

    private static void ClsAttentionForwardChunk(void* p, int start, int end)
    {
        ref var a = ref *(AttentionArgs*)p;
        int n = a.Tokens, hd = a.HeadDim, dim = a.Heads * hd, ld = 3 * dim;
        for (int item = start; item < end; item++)
        {
            int b = item / a.Heads, h = item % a.Heads;
            float* q = a.Qkv + (long)b * n * ld + h * hd;
            float* k = q + dim;
            float* v = q + 2 * dim;
            float* s = a.Probs + (long)item * n;
            ManagedGemm.Sgemm(false, true, 1, n, hd, a.Scale, q, ld, k, ld, 0f, s, n, 1);
            var row = new Span<float>(s, n);
            SoftmaxRow(row, row, 1f);
            ManagedGemm.Sgemm(false, false, 1, hd, n, 1f, s, n, v, ld, 0f, a.Out + (long)b * dim + h * hd, dim, 1);
        }
    }

    public void ClsAttentionBackward(Tensor doutput, Tensor qkv, Tensor probs, Tensor dqkv, int batch, int tokens, int heads, int headDim)
    {
        int dim = heads * headDim;
        Need(doutput, (long)batch * dim, "[CLS] attention output gradient");
        Need(qkv, (long)batch * tokens * 3 * dim, "attention qkv");
        Need(probs, (long)batch * heads * tokens, "[CLS] attention probabilities");
        Need(dqkv, (long)batch * tokens * 3 * dim, "attention qkv gradient");
        fixed (float* pdo = Cpu(doutput, "doutput").Data, pq = Cpu(qkv, "qkv").Data, pp = Cpu(probs, "probs").Data, pdq = Cpu(dqkv, "dqkv").Data)
        {
            var args = new AttentionArgs { DOut = pdo, Qkv = pq, Probs = pp, DQkv = pdq, Tokens = tokens, Heads = heads, HeadDim = headDim, Scale = 1f / MathF.Sqrt(headDim) };
            _pool.For(batch * heads, 1, &args, &ClsAttentionBackwardChunk);
        }
    }

    private static void ClsAttentionBackwardChunk(void* p, int start, int end)
    {
        ref var a = ref *(AttentionArgs*)p;
        int n = a.Tokens, hd = a.HeadDim, dim = a.Heads * hd, ld = 3 * dim;
        if (_attentionScratch is null || _attentionScratch.Length < n) _attentionScratch = new float[Math.Max(n, 64)];
        fixed (float* dp = _attentionScratch)
        {
            for (int item = start; item < end; item++)
            {
                int b = item / a.Heads, h = item % a.Heads;
                long rowBase = (long)b * n * ld + h * hd;
                float* q = a.Qkv + rowBase, k = q + dim, v = q + 2 * dim;
                float* dq = a.DQkv + rowBase, dk = dq + dim, dv = dq + 2 * dim;
                float* dout = a.DOut + (long)b * dim + h * hd;
                float* prob = a.Probs + (long)item * n;
                // dV = pᵀ·dO (an outer product) ; dp = dO·Vᵀ
                ManagedGemm.Sgemm(true, false, n, hd, 1, 1f, prob, n, dout, dim, 0f, dv, ld, 1);
                ManagedGemm.Sgemm(false, true, 1, n, hd, 1f, dout, dim, v, ld, 0f, dp, n, 1);
                var pr = new ReadOnlySpan<float>(prob, n);
                var dr = new Span<float>(dp, n);
                float dot = TensorPrimitives.Dot(pr, dr);
                TensorPrimitives.Subtract(dr, dot, dr);
                TensorPrimitives.Multiply(dr, pr, dr);
                // dq₀ = scale·ds·K ; dK = scale·dsᵀ·q₀
                ManagedGemm.Sgemm(false, false, 1, hd, n, a.Scale, dp, n, k, ld, 0f, dq, ld, 1);
                ManagedGemm.Sgemm(true, false, n, hd, 1, a.Scale, dp, n, q, ld, 0f, dk, ld, 1);
            }
        }
    }
}

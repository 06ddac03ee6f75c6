using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Cpu;

// Multi-head attention core: S = q·kᵀ/√d, P = softmax(S), O = P·v, and its backward. One (batch, head)
// pair per work item, each running single-threaded managed GEMMs directly on the strided qkv rows.
public sealed unsafe partial class CpuBackend
{
    private struct AttentionArgs
    {
        public float* Qkv, Out, Probs, DOut, DQkv;
        public int Tokens, Heads, HeadDim;
        public float Scale;
    }

    [ThreadStatic] private static float[]? _attentionScratch;

    public void AttentionForward(Tensor qkv, Tensor output, Tensor probs, int batch, int tokens, int heads, int headDim)
    {
        int dim = heads * headDim;
        Need(qkv, (long)batch * tokens * 3 * dim, "attention qkv");
        Need(output, (long)batch * tokens * dim, "attention output");
        Need(probs, (long)batch * heads * tokens * tokens, "attention probabilities");
        fixed (float* pq = Cpu(qkv, "qkv").Data, po = Cpu(output, "output").Data, pp = Cpu(probs, "probs").Data)
        {
            var args = new AttentionArgs { Qkv = pq, Out = po, Probs = pp, Tokens = tokens, Heads = heads, HeadDim = headDim, Scale = 1f / MathF.Sqrt(headDim) };
            _pool.For(batch * heads, 1, &args, &AttentionForwardChunk);
        }
    }

    private static void AttentionForwardChunk(void* p, int start, int end)
    {
        ref var a = ref *(AttentionArgs*)p;
        int n = a.Tokens, hd = a.HeadDim, dim = a.Heads * hd, ld = 3 * dim;
        for (int item = start; item < end; item++)
        {
            int b = item / a.Heads, h = item % a.Heads;
            float* q = a.Qkv + (long)b * n * ld + h * hd;
            float* k = q + dim;
            float* v = q + 2 * dim;
            float* s = a.Probs + (long)item * n * n;
            if (ManagedGemm.CanFuseAttention(n, hd))
            {
                ManagedGemm.AttentionHeadForward(q, k, v, ld, n, hd, a.Scale, s, a.Out + (long)b * n * dim + h * hd, dim);
                continue;
            }
            ManagedGemm.Sgemm(false, true, n, n, hd, a.Scale, q, ld, k, ld, 0f, s, n, 1);
            for (int r = 0; r < n; r++)
            {
                var row = new Span<float>(s + (long)r * n, n);
                SoftmaxRow(row, row, 1f);
            }
            ManagedGemm.Sgemm(false, false, n, hd, n, 1f, s, n, v, ld, 0f, a.Out + (long)b * n * dim + h * hd, dim, 1);
        }
    }

    public void AttentionBackward(Tensor doutput, Tensor qkv, Tensor probs, Tensor dqkv, int batch, int tokens, int heads, int headDim)
    {
        int dim = heads * headDim;
        Need(doutput, (long)batch * tokens * dim, "attention output gradient");
        Need(qkv, (long)batch * tokens * 3 * dim, "attention qkv");
        Need(probs, (long)batch * heads * tokens * tokens, "attention probabilities");
        Need(dqkv, (long)batch * tokens * 3 * dim, "attention qkv gradient");
        fixed (float* pdo = Cpu(doutput, "doutput").Data, pq = Cpu(qkv, "qkv").Data, pp = Cpu(probs, "probs").Data, pdq = Cpu(dqkv, "dqkv").Data)
        {
            var args = new AttentionArgs { DOut = pdo, Qkv = pq, Probs = pp, DQkv = pdq, Tokens = tokens, Heads = heads, HeadDim = headDim, Scale = 1f / MathF.Sqrt(headDim) };
            _pool.For(batch * heads, 1, &args, &AttentionBackwardChunk);
        }
    }

    private static void AttentionBackwardChunk(void* p, int start, int end)
    {
        ref var a = ref *(AttentionArgs*)p;
        int n = a.Tokens, hd = a.HeadDim, dim = a.Heads * hd, ld = 3 * dim;
        // dP scratch, per thread; grows once, then reused (no steady-state allocation).
        if (_attentionScratch is null || _attentionScratch.Length < n * n) _attentionScratch = new float[n * n];
        fixed (float* dp = _attentionScratch)
        {
            for (int item = start; item < end; item++)
            {
                int b = item / a.Heads, h = item % a.Heads;
                long rowBase = (long)b * n * ld + h * hd;
                float* q = a.Qkv + rowBase, k = q + dim, v = q + 2 * dim;
                float* dq = a.DQkv + rowBase, dk = dq + dim, dv = dq + 2 * dim;
                float* dout = a.DOut + (long)b * n * dim + h * hd;
                float* prob = a.Probs + (long)item * n * n;
                // dV = Pᵀ·dO ; dP = dO·Vᵀ
                ManagedGemm.Sgemm(true, false, n, hd, n, 1f, prob, n, dout, dim, 0f, dv, ld, 1);
                ManagedGemm.Sgemm(false, true, n, n, hd, 1f, dout, dim, v, ld, 0f, dp, n, 1);
                // dS = P ⊙ (dP − rowsum(P ⊙ dP)), in place in dp.
                for (int r = 0; r < n; r++)
                {
                    var pr = new ReadOnlySpan<float>(prob + (long)r * n, n);
                    var dr = new Span<float>(dp + (long)r * n, n);
                    float dot = TensorPrimitives.Dot(pr, dr);
                    TensorPrimitives.Subtract(dr, dot, dr);
                    TensorPrimitives.Multiply(dr, pr, dr);
                }
                // dQ = scale·dS·K ; dK = scale·dSᵀ·Q
                ManagedGemm.Sgemm(false, false, n, hd, n, a.Scale, dp, n, k, ld, 0f, dq, ld, 1);
                ManagedGemm.Sgemm(true, false, n, hd, n, a.Scale, dp, n, q, ld, 0f, dk, ld, 1);
            }
        }
    }
}

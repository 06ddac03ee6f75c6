using ILGPU;
using ILGPU.Runtime;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// Multi-head attention core: S = q·kᵀ/√d, P = softmax(S), O = P·v, and its backward. Every product is one
// batched launch of the tiled GEMM over all (batch, head) pairs, reading q, k, v straight from the strided qkv
// rows (item z = (b, h): b·tokens·3·dim + h·headDim); the row softmax and its backward are one group per row.
public sealed partial class GpuBackend
{
    /// <summary>dP/dS scratch of the attention backward ([batch, heads, tokens, tokens]); grows, never shrinks.</summary>
    private GpuTensor? _attentionScratch;

    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int> _softmaxBackward = null!;

    private void LoadAttentionKernels()
    {
        _softmaxBackward = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, int>(SoftmaxBackwardKernel);
    }

    public void AttentionForward(Tensor qkv, Tensor output, Tensor probs, int batch, int tokens, int heads, int headDim)
    {
        int dim = heads * headDim;
        Need(qkv, (long)batch * tokens * 3 * dim, "attention qkv");
        Need(output, (long)batch * tokens * dim, "attention output");
        Need(probs, (long)batch * heads * tokens * tokens, "attention probabilities");
        var gq = Own(qkv, "qkv"); var go = Own(output, "output"); var gp = Own(probs, "probs");
        if (batch == 0 || tokens == 0 || heads == 0 || headDim == 0) return;
        int items = CheckedInt((long)batch * heads, "batch·heads");
        int rows = CheckedInt((long)items * tokens, "batch·heads·tokens");
        long n = tokens, ld = 3L * dim, tt = (long)tokens * tokens;
        float scale = 1f / MathF.Sqrt(headDim);

        // S = scale·Q·Kᵀ into probs.
        LaunchGemm(gq, gq, gp, new GemmArgs
        {
            TransA = 0, TransB = 1, M = tokens, N = tokens, K = headDim, Lda = (int)ld, Ldb = (int)ld, Ldc = tokens,
            Alpha = scale, Beta = 0f, AOffset = 0, BOffset = dim, COffset = 0, Batch = items, Inner = heads,
            StrideAOuter = n * ld, StrideAInner = headDim, StrideBOuter = n * ld, StrideBInner = headDim,
            StrideCOuter = heads * tt, StrideCInner = tt,
        });
        _softmax(Stream, PerRow(rows), gp.View, gp.View, rows, tokens, 1f);
        // O = P·V, written per head into output[b, t, h·headDim ..].
        LaunchGemm(gp, gq, go, new GemmArgs
        {
            TransA = 0, TransB = 0, M = tokens, N = headDim, K = tokens, Lda = tokens, Ldb = (int)ld, Ldc = dim,
            Alpha = 1f, Beta = 0f, AOffset = 0, BOffset = 2L * dim, COffset = 0, Batch = items, Inner = heads,
            StrideAOuter = heads * tt, StrideAInner = tt, StrideBOuter = n * ld, StrideBInner = headDim,
            StrideCOuter = n * dim, StrideCInner = headDim,
        });
    }

    public void AttentionBackward(Tensor doutput, Tensor qkv, Tensor probs, Tensor dqkv, int batch, int tokens, int heads, int headDim)
    {
        int dim = heads * headDim;
        Need(doutput, (long)batch * tokens * dim, "attention output gradient");
        Need(qkv, (long)batch * tokens * 3 * dim, "attention qkv");
        Need(probs, (long)batch * heads * tokens * tokens, "attention probabilities");
        Need(dqkv, (long)batch * tokens * 3 * dim, "attention qkv gradient");
        var gdo = Own(doutput, "doutput"); var gq = Own(qkv, "qkv"); var gp = Own(probs, "probs"); var gdq = Own(dqkv, "dqkv");
        if (batch == 0 || tokens == 0 || heads == 0 || headDim == 0) return;
        int items = CheckedInt((long)batch * heads, "batch·heads");
        int rows = CheckedInt((long)items * tokens, "batch·heads·tokens");
        long n = tokens, ld = 3L * dim, tt = (long)tokens * tokens;
        float scale = 1f / MathF.Sqrt(headDim);
        var dp = AttentionScratch(checked((int)((long)items * tt)));

        // dV = Pᵀ·dO
        LaunchGemm(gp, gdo, gdq, new GemmArgs
        {
            TransA = 1, TransB = 0, M = tokens, N = headDim, K = tokens, Lda = tokens, Ldb = dim, Ldc = (int)ld,
            Alpha = 1f, Beta = 0f, AOffset = 0, BOffset = 0, COffset = 2L * dim, Batch = items, Inner = heads,
            StrideAOuter = heads * tt, StrideAInner = tt, StrideBOuter = n * dim, StrideBInner = headDim,
            StrideCOuter = n * ld, StrideCInner = headDim,
        });
        // dP = dO·Vᵀ
        LaunchGemm(gdo, gq, dp, new GemmArgs
        {
            TransA = 0, TransB = 1, M = tokens, N = tokens, K = headDim, Lda = dim, Ldb = (int)ld, Ldc = tokens,
            Alpha = 1f, Beta = 0f, AOffset = 0, BOffset = 2L * dim, COffset = 0, Batch = items, Inner = heads,
            StrideAOuter = n * dim, StrideAInner = headDim, StrideBOuter = n * ld, StrideBInner = headDim,
            StrideCOuter = heads * tt, StrideCInner = tt,
        });
        // dS = P ⊙ (dP − rowsum(P ⊙ dP)), in place.
        _softmaxBackward(Stream, PerRow(rows), gp.View, dp.View, rows, tokens);
        // dQ = scale·dS·K
        LaunchGemm(dp, gq, gdq, new GemmArgs
        {
            TransA = 0, TransB = 0, M = tokens, N = headDim, K = tokens, Lda = tokens, Ldb = (int)ld, Ldc = (int)ld,
            Alpha = scale, Beta = 0f, AOffset = 0, BOffset = dim, COffset = 0, Batch = items, Inner = heads,
            StrideAOuter = heads * tt, StrideAInner = tt, StrideBOuter = n * ld, StrideBInner = headDim,
            StrideCOuter = n * ld, StrideCInner = headDim,
        });
        // dK = scale·dSᵀ·Q
        LaunchGemm(dp, gq, gdq, new GemmArgs
        {
            TransA = 1, TransB = 0, M = tokens, N = headDim, K = tokens, Lda = tokens, Ldb = (int)ld, Ldc = (int)ld,
            Alpha = scale, Beta = 0f, AOffset = 0, BOffset = 0, COffset = dim, Batch = items, Inner = heads,
            StrideAOuter = heads * tt, StrideAInner = tt, StrideBOuter = n * ld, StrideBInner = headDim,
            StrideCOuter = n * ld, StrideCInner = headDim,
        });
    }

    private GpuTensor AttentionScratch(int length)
    {
        if (_attentionScratch is null || _attentionScratch.Length < length)
        {
            if (_attentionScratch is not null)
            {
                Stream.Synchronize();   // earlier backward passes may still be reading it
                _attentionScratch.Dispose();
            }
            _attentionScratch = new GpuTensor(this, "attention.scratch", [length]);
        }
        return _attentionScratch;
    }

    /// <summary>Softmax backward per row, in place in <paramref name="dp"/>: dS = P ⊙ (dP − Σ_c P·dP).</summary>
    [GpuKernel]
    private static void SoftmaxBackwardKernel(ArrayView<float> probs, ArrayView<float> dp, int rows, int cols)
    {
        var scratch = SharedMemory.Allocate<float>(2 * MaxWarps);
        int step = 0;   // reductions so far: alternates the scratch slot
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long row = (long)r * cols;
            float dot = 0f;
            for (int c = Group.IdxX; c < cols; c += Group.DimX) dot += probs[row + c] * dp[row + c];
            dot = GroupSum(dot, scratch, step++ & 1);
            for (int c = Group.IdxX; c < cols; c += Group.DimX) dp[row + c] = (dp[row + c] - dot) * probs[row + c];
        }
    }
}

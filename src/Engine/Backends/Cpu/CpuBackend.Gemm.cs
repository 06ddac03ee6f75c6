using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Cpu;

// GEMM and the linear layer's bias ops (forward: AddBias; backward: BiasGradient).
public sealed unsafe partial class CpuBackend
{
    /// <summary>Below this many multiply-adds per matrix, a batched GEMM runs its items in parallel, one thread each.</summary>
    private const long SmallGemmMacs = 4L << 20;

    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha,
                     Tensor a, long aOffset, int lda, Tensor b, long bOffset, int ldb,
                     float beta, Tensor c, long cOffset, int ldc,
                     int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0)
    {
        if (!OpChecks.Gemm(transA, transB, m, n, k, a, aOffset, lda, b, bOffset, ldb, c, cOffset, ldc, batch, strideA, strideB, strideC)) return;
        fixed (float* pa = Cpu(a, "GEMM A").Data, pb = Cpu(b, "GEMM B").Data, pc = Cpu(c, "GEMM C").Data)
        {
            if (batch > 1 && (long)m * n * k < SmallGemmMacs)
            {
                var args = new GemmArgs
                {
                    TransA = transA, TransB = transB, M = m, N = n, K = k, Alpha = alpha, Beta = beta,
                    A = pa + aOffset, B = pb + bOffset, C = pc + cOffset, Lda = lda, Ldb = ldb, Ldc = ldc,
                    StrideA = strideA, StrideB = strideB, StrideC = strideC,
                };
                _pool.For(batch, 1, &args, &GemmBatchChunk);
                return;
            }
            for (int i = 0; i < batch; i++)
                Sgemm(transA, transB, m, n, k, alpha, pa + aOffset + i * strideA, lda, pb + bOffset + i * strideB, ldb,
                      beta, pc + cOffset + i * strideC, ldc, Threads);
        }
    }

    /// <summary>One GEMM on raw pointers with the configured provider (used by ops that slice their own operands).</summary>
    internal void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
                        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, int threads)
    {
        if (m == 0 || n == 0) return;
        if (k == 0)
        {
            for (int i = 0; i < m; i++)
            {
                var row = new Span<float>(c + (long)i * ldc, n);
                if (beta == 0) row.Clear(); else TensorPrimitives.Multiply(row, beta, row);
            }
            return;
        }
        if (GemmKind == GemmKind.OpenBlas && threads == Threads)
            OpenBlas.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        else
            ManagedGemm.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads, _pool);
    }

    private struct GemmArgs
    {
        public bool TransA, TransB;
        public int M, N, K, Lda, Ldb, Ldc;
        public float Alpha, Beta;
        public float* A, B, C;
        public long StrideA, StrideB, StrideC;
    }

    // Small batched GEMMs (attention-shaped): one thread per matrix, always the managed kernel so that
    // OpenBLAS's own thread pool is never entered from several of our threads at once.
    private static void GemmBatchChunk(void* p, int start, int end)
    {
        ref var g = ref *(GemmArgs*)p;
        for (int i = start; i < end; i++)
            ManagedGemm.Sgemm(g.TransA, g.TransB, g.M, g.N, g.K, g.Alpha, g.A + i * g.StrideA, g.Lda,
                              g.B + i * g.StrideB, g.Ldb, g.Beta, g.C + i * g.StrideC, g.Ldc, 1);
    }

    // ---- bias -----------------------------------------------------------------------------------

    private struct BiasArgs { public float* Y, Bias; public int Rows, Cols; }

    public void AddBias(Tensor y, Tensor bias, int rows, int cols)
    {
        Need(y, (long)rows * cols, "bias-add output"); Need(bias, cols, "bias");
        fixed (float* py = Cpu(y, "y").Data, pb = Cpu(bias, "bias").Data)
        {
            var args = new BiasArgs { Y = py, Bias = pb, Rows = rows, Cols = cols };
            _pool.For(rows, Math.Max(1, 8192 / Math.Max(cols, 1)), &args, &AddBiasChunk);
        }
    }

    private static void AddBiasChunk(void* p, int start, int end)
    {
        ref var a = ref *(BiasArgs*)p;
        var bias = new ReadOnlySpan<float>(a.Bias, a.Cols);
        for (int r = start; r < end; r++)
        {
            var row = new Span<float>(a.Y + (long)r * a.Cols, a.Cols);
            TensorPrimitives.Add(row, bias, row);
        }
    }

    public void BiasGradient(Tensor dy, Tensor dbias, int rows, int cols)
    {
        Need(dy, (long)rows * cols, "bias-gradient input"); Need(dbias, cols, "bias gradient");
        fixed (float* pd = Cpu(dy, "dy").Data, pb = Cpu(dbias, "dbias").Data)
        {
            var args = new BiasArgs { Y = pd, Bias = pb, Rows = rows, Cols = cols };
            _pool.For(cols, 64, &args, &BiasGradientChunk);
        }
    }

    // Column-partitioned so every sum runs over rows in the same order whatever the thread count.
    private static void BiasGradientChunk(void* p, int start, int end)
    {
        ref var a = ref *(BiasArgs*)p;
        var acc = new Span<float>(a.Bias + start, end - start);
        for (int r = 0; r < a.Rows; r++)
            TensorPrimitives.Add(acc, new ReadOnlySpan<float>(a.Y + (long)r * a.Cols + start, end - start), acc);
    }
}

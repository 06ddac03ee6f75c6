using System.Runtime.Intrinsics;
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
        var cb = CpuOperand(b, "GEMM B");
        fixed (float* pa = CpuOperand(a, "GEMM A").Data, pb = cb.Data, pc = Cpu(c, "GEMM C").Data)
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
            if (batch == 1 && Precision == CpuPrecision.Bf16 && !transA && transB && alpha == 1f && beta == 0f)
            {
                GemmBf16(m, n, k, pa + aOffset, lda, cb, bOffset, pb + bOffset, ldb, pc + cOffset, ldc);
                return;
            }
            if (batch == 1 && GemmKind == GemmKind.Managed && !ManagedGemm.IsSmallM(transA, m))
            {
                float* packed = _packs.Find(cb, bOffset, transB, n, k, ldb, pb + bOffset, _pool);
                if (packed != null)
                {
                    ManagedGemm.Sgemm(transA, transB, m, n, k, alpha, pa + aOffset, lda, pb + bOffset, ldb,
                                      beta, pc + cOffset, ldc, Threads, _pool, packed);
                    return;
                }
            }
            for (int i = 0; i < batch; i++)
                Sgemm(transA, transB, m, n, k, alpha, pa + aOffset + i * strideA, lda, pb + bOffset + i * strideB, ldb,
                      beta, pc + cOffset + i * strideC, ldc, Threads);
        }
    }

    /// <summary>
    /// y = x·Wᵀ + bias with the managed GEMM adding the bias to each tile of y as it finishes (no second pass over y);
    /// bit-identical to <see cref="Gemm"/> then <see cref="AddBias"/>, which the other paths (OpenBLAS, bf16, a small m)
    /// still run.
    /// </summary>
    public void LinearForward(Tensor x, Tensor weight, Tensor? bias, Tensor y, int rows, int inFeatures, int outFeatures)
    {
        if (bias is null || rows == 0 || Precision == CpuPrecision.Bf16 || GemmKind != GemmKind.Managed || ManagedGemm.IsSmallM(false, rows))
        {
            IBackend.GemmThenBias(this, x, weight, bias, y, rows, inFeatures, outFeatures);
            return;
        }
        if (!OpChecks.Gemm(false, true, rows, outFeatures, inFeatures, x, 0, inFeatures, weight, 0, inFeatures, y, 0, outFeatures, 1, 0, 0, 0)) return;
        Need(bias, outFeatures, "bias");
        var cw = CpuOperand(weight, "GEMM B");
        fixed (float* px = CpuOperand(x, "GEMM A").Data, pw = cw.Data, pb = CpuOperand(bias, "bias").Data, py = Cpu(y, "GEMM C").Data)
        {
            float* packed = _packs.Find(cw, 0, true, outFeatures, inFeatures, inFeatures, pw, _pool);
            ManagedGemm.SgemmBias(rows, outFeatures, inFeatures, px, inFeatures, pw, inFeatures, py, outFeatures, Threads, _pool, packed, pb);
        }
    }

    // ---- bf16 (opt-in) ------------------------------------------------------------------------------

    private uint[]? _bf16A, _bf16B;

    /// <summary>
    /// C = bf16(A)·bf16(W)ᵀ accumulated in fp32 (<see cref="Bf16Gemm"/>): W packed once per version (scratch when the
    /// pack budget is full), A packed per call, the panels split over the pool. Each element's sum runs in the same
    /// order whatever the split, so results do not depend on the thread count.
    /// </summary>
    private void GemmBf16(int m, int n, int k, float* a, int lda, CpuTensor w, long wOffset, float* b, int ldb, float* c, int ldc)
    {
        uint* bpack = _packs.FindBf16(w, wOffset, n, k, ldb, b, _pool);
        fixed (uint* aScratch = Scratch(ref _bf16A, Bf16Gemm.PackedAWords(m, k)))
        fixed (uint* bScratch = bpack is null ? Scratch(ref _bf16B, Bf16Gemm.PackedBWords(n, k)) : null)
        {
            var args = new Bf16Args { M = m, N = n, K = k, A = a, Lda = lda, B = b, Ldb = ldb, C = c, Ldc = ldc, APack = aScratch, BPack = bpack };
            if (bpack is null)
            {
                args.BPack = bScratch;
                _pool.For(Bf16Gemm.Panels(n), 4, &args, &Bf16PackBChunk);
            }
            _pool.For(Bf16Gemm.Tiles(m), 4, &args, &Bf16PackAChunk);
            _pool.For(Bf16Gemm.Panels(n), 1, &args, &Bf16PanelsChunk);
        }
    }

    private static uint[] Scratch(ref uint[]? buffer, long words)
    {
        if (buffer is null || buffer.Length < words) buffer = GC.AllocateUninitializedArray<uint>(checked((int)words), pinned: true);
        return buffer;
    }

    private struct Bf16Args
    {
        public int M, N, K, Lda, Ldb, Ldc;
        public float* A, B, C;
        public uint* APack, BPack;
    }

    private static void Bf16PackBChunk(void* p, int start, int end)
    {
        ref var g = ref *(Bf16Args*)p;
        Bf16Gemm.PackB(g.B, g.Ldb, g.N, g.K, g.BPack, start, end);
    }

    private static void Bf16PackAChunk(void* p, int start, int end)
    {
        ref var g = ref *(Bf16Args*)p;
        Bf16Gemm.PackA(g.A, g.Lda, g.M, g.K, g.APack, start, end);
    }

    private static void Bf16PanelsChunk(void* p, int start, int end)
    {
        ref var g = ref *(Bf16Args*)p;
        Bf16Gemm.Panels(g.M, g.N, g.K, g.APack, g.BPack, g.C, g.Ldc, start, end);
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
        int j = start;
        if (Vector512.IsHardwareAccelerated)
        {
            // 64 columns at a time with the sums in registers across all rows (one short Add call per row and column
            // chunk cost more than the adds); per element the same additions in the same row order.
            for (; j + 64 <= end; j += 64)
            {
                float* b = a.Bias + j;
                Vector512<float> s0 = Vector512.Load(b), s1 = Vector512.Load(b + 16), s2 = Vector512.Load(b + 32), s3 = Vector512.Load(b + 48);
                float* y = a.Y + j;
                for (int r = 0; r < a.Rows; r++, y += a.Cols)
                {
                    s0 += Vector512.Load(y); s1 += Vector512.Load(y + 16); s2 += Vector512.Load(y + 32); s3 += Vector512.Load(y + 48);
                }
                s0.Store(b); s1.Store(b + 16); s2.Store(b + 32); s3.Store(b + 48);
            }
        }
        if (j == end) return;
        var acc = new Span<float>(a.Bias + j, end - j);
        for (int r = 0; r < a.Rows; r++)
            TensorPrimitives.Add(acc, new ReadOnlySpan<float>(a.Y + (long)r * a.Cols + j, end - j), acc);
    }
}

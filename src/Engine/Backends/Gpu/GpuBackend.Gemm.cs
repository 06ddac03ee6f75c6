using ILGPU;
using ILGPU.Runtime;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// SGEMM (all four transpose combinations, offsets, leading dimensions, strided batches) as one shared-memory
// tiled kernel with register blocking, and the linear layer's bias ops (forward: AddBias; backward: BiasGradient).
public sealed partial class GpuBackend
{
    // A group of 16×16 threads computes a 64×64 tile of C; each thread a 4×4 micro-tile in registers, at rows
    // ty + 16·i and columns tx + 16·j (so a warp's shared-memory reads are conflict-free and its C writes coalesce).
    // K advances in slices of 16: the group stages op(A)[64×16] and op(B)[16×64] in shared memory, k-major, with
    // global loads laid out so consecutive threads read consecutive addresses for either storage order.
    private const int TileM = 64, TileN = 64, TileK = 16, GemmThreadsX = 16, GemmThreadsY = 16;

    /// <summary>Row length of the shared tiles: 64 + 2 makes the k-major stores of row-major slices bank-conflict-free.</summary>
    private const int TileLd = TileM + 2;

    private const int MaxGridYz = 65535;

    internal struct GemmArgs
    {
        public int TransA, TransB, M, N, K, Lda, Ldb, Ldc;
        public float Alpha, Beta;
        public long AOffset, BOffset, COffset;

        /// <summary>Batch item z is (z / Inner, z % Inner); its operands start Outer·z/Inner + Inner·(z % Inner) further on.</summary>
        public int Batch, Inner;
        public long StrideAOuter, StrideAInner, StrideBOuter, StrideBInner, StrideCOuter, StrideCInner;
    }

    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs> _gemm = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int> _addBias = null!;

    private void LoadGemmKernels()
    {
        _gemm = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(GemmKernel);
        _addBias = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, int>(AddBiasKernel);
    }

    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha,
                     Tensor a, long aOffset, int lda, Tensor b, long bOffset, int ldb,
                     float beta, Tensor c, long cOffset, int ldc,
                     int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0)
    {
        if (!OpChecks.Gemm(transA, transB, m, n, k, a, aOffset, lda, b, bOffset, ldb, c, cOffset, ldc, batch, strideA, strideB, strideC)) return;
        var args = new GemmArgs
        {
            TransA = transA ? 1 : 0, TransB = transB ? 1 : 0, M = m, N = n, K = k, Lda = lda, Ldb = ldb, Ldc = ldc,
            Alpha = alpha, Beta = beta, AOffset = aOffset, BOffset = bOffset, COffset = cOffset,
            Batch = batch, Inner = 1, StrideAOuter = strideA, StrideBOuter = strideB, StrideCOuter = strideC,
        };
        LaunchGemm(Own(a, "GEMM A"), Own(b, "GEMM B"), Own(c, "GEMM C"), args);
    }

    /// <summary>Enqueues the tiled kernel (sizes already validated by the caller).</summary>
    private void LaunchGemm(GpuTensor a, GpuTensor b, GpuTensor c, in GemmArgs args)
    {
        if (args.M == 0 || args.N == 0 || args.Batch == 0) return;
        int tilesM = (args.M + TileM - 1) / TileM, tilesN = (args.N + TileN - 1) / TileN;
        if (tilesM > MaxGridYz)
            throw new NotSupportedException($"GEMM with m={args.M}: more than {MaxGridYz} row tiles");
        var config = new KernelConfig(new Index3D(tilesN, tilesM, Math.Min(args.Batch, MaxGridYz)), new Index3D(GemmThreadsX, GemmThreadsY, 1));
        _gemm(Stream, config, a.View, b.View, c.View, args);
    }

    // ---- bias -----------------------------------------------------------------------------------

    public void AddBias(Tensor y, Tensor bias, int rows, int cols)
    {
        Need(y, (long)rows * cols, "bias-add output"); Need(bias, cols, "bias");
        var gy = Own(y, "y"); var gb = Own(bias, "bias");
        if (rows > 0 && cols > 0) _addBias(Stream, Linear((long)rows * cols), gy.View, gb.View, rows, cols);
    }

    public void BiasGradient(Tensor dy, Tensor dbias, int rows, int cols)
    {
        Need(dy, (long)rows * cols, "bias-gradient input"); Need(dbias, cols, "bias gradient");
        ColumnSum(Own(dy, "dy"), 0, cols, rows, cols, Own(dbias, "dbias"), 0);
    }

    // ---- kernels ----------------------------------------------------------------------------------

    [GpuKernel]
    private static void AddBiasKernel(ArrayView<float> y, ArrayView<float> bias, int rows, int cols)
    {
        long n = (long)rows * cols;
        for (long i = GlobalIndex(); i < n; i += GridStride()) y[i] += bias[i % cols];
    }

    /// <summary>
    /// C = alpha·op(A)·op(B) + beta·C for one 64×64 tile of C per group (grid x: column tiles, y: row tiles, z: batch
    /// items, grid-strided). With beta = 0, C is not read (NaN/Inf in C are overwritten, as in BLAS).
    /// </summary>
    [GpuKernel]
    private static void GemmKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmArgs p)
    {
        var tileA = SharedMemory.Allocate<float>(TileK * TileLd);   // tileA[kk·TileLd + i] = op(A)[row0 + i, k0 + kk]
        var tileB = SharedMemory.Allocate<float>(TileK * TileLd);   // tileB[kk·TileLd + j] = op(B)[k0 + kk, col0 + j]
        int tx = Group.IdxX, ty = Group.IdxY, t = ty * GemmThreadsX + tx;
        int row0 = Grid.IdxY * TileM, col0 = Grid.IdxX * TileN;

        for (int z = Grid.IdxZ; z < p.Batch; z += Grid.DimZ)
        {
            long outer = z / p.Inner, inner = z - outer * p.Inner;
            long aBase = p.AOffset + outer * p.StrideAOuter + inner * p.StrideAInner;
            long bBase = p.BOffset + outer * p.StrideBOuter + inner * p.StrideBInner;
            long cBase = p.COffset + outer * p.StrideCOuter + inner * p.StrideCInner;

            float c00 = 0f, c01 = 0f, c02 = 0f, c03 = 0f;
            float c10 = 0f, c11 = 0f, c12 = 0f, c13 = 0f;
            float c20 = 0f, c21 = 0f, c22 = 0f, c23 = 0f;
            float c30 = 0f, c31 = 0f, c32 = 0f, c33 = 0f;

            for (int k0 = 0; k0 < p.K; k0 += TileK)
            {
                // Stage op(A)[row0.., k0..]: 1024 values, 4 per thread.
                if (p.TransA == 0)
                {
                    // A row-major m×k: 16 consecutive threads read 16 consecutive k of one row.
                    int kk = t % TileK, i = t / TileK, gk = k0 + kk;
                    for (int l = 0; l < TileM; l += GemmThreadsX * GemmThreadsY / TileK)
                    {
                        int gi = row0 + i + l;
                        tileA[kk * TileLd + i + l] = gi < p.M && gk < p.K ? a[aBase + (long)gi * p.Lda + gk] : 0f;
                    }
                }
                else
                {
                    // A stored k×m: 64 consecutive threads read 64 consecutive rows of op(A) at one k.
                    int i = t % TileM, kk = t / TileM, gi = row0 + i;
                    for (int l = 0; l < TileK; l += GemmThreadsX * GemmThreadsY / TileM)
                    {
                        int gk = k0 + kk + l;
                        tileA[(kk + l) * TileLd + i] = gi < p.M && gk < p.K ? a[aBase + (long)gk * p.Lda + gi] : 0f;
                    }
                }
                // Stage op(B)[k0.., col0..].
                if (p.TransB == 0)
                {
                    // B row-major k×n: 64 consecutive threads read 64 consecutive columns at one k.
                    int j = t % TileN, kk = t / TileN, gj = col0 + j;
                    for (int l = 0; l < TileK; l += GemmThreadsX * GemmThreadsY / TileN)
                    {
                        int gk = k0 + kk + l;
                        tileB[(kk + l) * TileLd + j] = gj < p.N && gk < p.K ? b[bBase + (long)gk * p.Ldb + gj] : 0f;
                    }
                }
                else
                {
                    // B stored n×k: 16 consecutive threads read 16 consecutive k of one column of op(B).
                    int kk = t % TileK, j = t / TileK, gk = k0 + kk;
                    for (int l = 0; l < TileN; l += GemmThreadsX * GemmThreadsY / TileK)
                    {
                        int gj = col0 + j + l;
                        tileB[kk * TileLd + j + l] = gj < p.N && gk < p.K ? b[bBase + (long)gj * p.Ldb + gk] : 0f;
                    }
                }
                Group.Barrier();

                for (int kk = 0; kk < TileK; kk++)
                {
                    int ao = kk * TileLd + ty, bo = kk * TileLd + tx;
                    float a0 = tileA[ao], a1 = tileA[ao + 16], a2 = tileA[ao + 32], a3 = tileA[ao + 48];
                    float b0 = tileB[bo], b1 = tileB[bo + 16], b2 = tileB[bo + 32], b3 = tileB[bo + 48];
                    c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                    c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                    c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                    c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
                }
                Group.Barrier();
            }

            int r = row0 + ty, col = col0 + tx;
            StoreRow(c, cBase, p, r, col, c00, c01, c02, c03);
            StoreRow(c, cBase, p, r + 16, col, c10, c11, c12, c13);
            StoreRow(c, cBase, p, r + 32, col, c20, c21, c22, c23);
            StoreRow(c, cBase, p, r + 48, col, c30, c31, c32, c33);
        }
    }

    private static void StoreRow(ArrayView<float> c, long cBase, GemmArgs p, int row, int col, float v0, float v1, float v2, float v3)
    {
        if (row >= p.M) return;
        long at = cBase + (long)row * p.Ldc + col;
        StoreOne(c, at, p, col, v0);
        StoreOne(c, at + 16, p, col + 16, v1);
        StoreOne(c, at + 32, p, col + 32, v2);
        StoreOne(c, at + 48, p, col + 48, v3);
    }

    private static void StoreOne(ArrayView<float> c, long at, GemmArgs p, int col, float acc)
    {
        if (col >= p.N) return;
        c[at] = p.Beta == 0f ? p.Alpha * acc : p.Alpha * acc + p.Beta * c[at];
    }
}

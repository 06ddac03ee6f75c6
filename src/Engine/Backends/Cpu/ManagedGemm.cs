using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace WhereToEdit.Engine.Backends.Cpu;

/// <summary>
/// Managed single-precision GEMM (GotoBLAS/BLIS structure): op(B) is packed into kc×NR panels and op(A)
/// into kc×MR panels (zero-padded, 64-byte aligned, per-thread buffers reused across calls), and an
/// MR×NR register-blocked FMA micro-kernel walks them (AVX-512: 12×32, AVX2/Vector256: 6×16,
/// Vector128/scalar: 4×8).
/// <para>
/// Determinism: every element of C is computed by the same sequence of operations whatever the thread
/// count, the partition, the tile it falls in (edge tiles go through a temporary tile with the same
/// arithmetic) and the kernel width: for each k-block (the k-blocking depends only on k) an FMA chain over
/// p in increasing order, then one fused write-back. So results are bit-identical for any
/// <c>threads</c> value, not just for a fixed one.
/// </para>
/// <para>
/// Thread safety: any number of threads may call <see cref="Sgemm"/> concurrently with <c>threads == 1</c>
/// (each uses its own thread-static packing buffers). Calls with <c>threads &gt; 1</c> run their parts on a
/// <see cref="Cpu.WorkerPool"/>: the CPU backend passes its own (one pool for every op), standalone calls share one
/// process-wide pool and are serialized against each other (a second such call waits for the first).
/// </para>
/// </summary>
[SkipLocalsInit]
public static unsafe partial class ManagedGemm
{
    /// <summary>Micro-kernel flavours. All produce bit-identical results (same FMA chains).</summary>
    internal enum KernelKind
    {
        /// <summary>4×8 tiles with Vector128 (software FMA where the hardware has none).</summary>
        V128 = 0,
        /// <summary>6×16 tiles with Vector256.</summary>
        V256 = 1,
        /// <summary>12×32 tiles with Vector512.</summary>
        V512 = 2,
    }

    /// <summary>The widest kernel the hardware accelerates.</summary>
    internal static readonly KernelKind DefaultKernel =
        Vector512.IsHardwareAccelerated ? KernelKind.V512 :
        Vector256.IsHardwareAccelerated ? KernelKind.V256 : KernelKind.V128;

    // Cache blocking. KC depends only on k (never on the kernel, partition or thread count), which is
    // what makes results independent of all three.
    private const int KC = 256;
    // Rows of op(A) per packed A block at most (a multiple of every MR). The rows of a band are split into equal
    // blocks under this cap, so that no block is a thin tail: each block streams all of the packed B panel once, and
    // a 5-row tail (one image's 197 tokens under a 192-row cap) re-read it for a twentieth of the work.
    private const int MCMax = 264;
    private const int NCTarget = 1536;  // columns of op(B) per packed B panel (multiple of every NR)

    /// <summary>Below this m·n·k the call runs on the caller's thread only.</summary>
    internal const long ParallelThreshold = 1L << 20;

    private static int Mr(KernelKind kind) => kind switch { KernelKind.V512 => 12, KernelKind.V256 => 6, _ => 4 };
    private static int Nr(KernelKind kind) => kind switch { KernelKind.V512 => 32, KernelKind.V256 => 16, _ => 8 };

    /// <summary>
    /// Row-major C[m×n] = alpha·op(A)·op(B) + beta·C. op(A) is m×k: A stored m×k (lda ≥ k) or, when
    /// <paramref name="transA"/>, k×m (lda ≥ m). op(B) is k×n: B stored k×n (ldb ≥ n) or, when
    /// <paramref name="transB"/>, n×k (ldb ≥ k). ldc ≥ n. beta == 0 ignores C's old contents (NaN-safe);
    /// alpha == 0 or k == 0 gives C = beta·C without reading A or B. <paramref name="threads"/> caps the
    /// threads used (1 = the caller only); small problems always run on the caller only.
    /// No alignment is required of a, b or c. C must not overlap A or B.
    /// </summary>
    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, int threads)
        => Sgemm(DefaultKernel, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads, null);

    /// <summary>As above, with the parts of C run on <paramref name="pool"/> (the caller's, never entered concurrently).</summary>
    internal static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, int threads, WorkerPool pool)
        => Sgemm(DefaultKernel, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads, pool);

    internal static void Sgemm(KernelKind kind, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, int threads)
        => Sgemm(kind, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads, null);

    /// <summary>
    /// As above with op(B) already packed by <see cref="PackWholeB"/> (same transB, n, k and ldb, default kernel):
    /// skips packing B, which for a small m (one image's 197 tokens) is a sizeable share of the call. Bit-identical
    /// to packing on the fly: the panels hold the same values in the same order.
    /// </summary>
    internal static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, int threads, WorkerPool pool, float* packedB)
        => Sgemm(DefaultKernel, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads, pool, packedB);

    /// <summary>
    /// As above (<paramref name="packedB"/> may be null), then C[i, j] += <paramref name="columnBias"/>[j]: a linear
    /// layer's bias, added to each tile right after its last k-block while the tile is in L1 — the same operation on
    /// the same values as a separate pass over C (<see cref="CpuBackend.AddBias"/>), so bit-identical to it, without
    /// that pass. Not for a small m (<see cref="IsSmallM"/>), which takes another path.
    /// </summary>
    internal static void SgemmBias(int m, int n, int k, float* a, int lda, float* b, int ldb, float* c, int ldc,
        int threads, WorkerPool pool, float* packedB, float* columnBias)
    {
        if (IsSmallM(false, m)) throw new ArgumentException($"m = {m} takes the small-m path, which has no bias epilogue", nameof(m));
        Sgemm(DefaultKernel, false, true, m, n, k, 1f, a, lda, b, ldb, 0f, c, ldc, threads, pool, packedB, columnBias);
    }

    private static void Sgemm(KernelKind kind, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, int threads, WorkerPool? pool,
        float* packedB = null, float* columnBias = null)
    {
        if (m < 0) throw new ArgumentOutOfRangeException(nameof(m));
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n));
        if (k < 0) throw new ArgumentOutOfRangeException(nameof(k));
        if (m == 0 || n == 0) return;
        if (ldc < n) throw new ArgumentOutOfRangeException(nameof(ldc), "ldc < n");
        if (k > 0 && alpha != 0f)
        {
            if (lda < (transA ? m : k)) throw new ArgumentOutOfRangeException(nameof(lda), transA ? "lda < m" : "lda < k");
            if (ldb < (transB ? k : n)) throw new ArgumentOutOfRangeException(nameof(ldb), transB ? "ldb < k" : "ldb < n");
        }
        if (kind > DefaultKernel) kind = DefaultKernel;
        if (kind != DefaultKernel) packedB = null;   // panels are packed for the default kernel's width

        if (k == 0 || alpha == 0f)
        {
            ScaleC(m, n, beta, c, ldc);
            return;
        }
        if (IsSmallM(transA, m))
        {
            SgemmSmallM(transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads, pool);
            return;
        }

        var job = new Job
        {
            Kind = kind, TransA = transA, TransB = transB, M = m, N = n, K = k, Alpha = alpha, Beta = beta,
            A = a, Lda = lda, B = b, Ldb = ldb, C = c, Ldc = ldc, PackedB = packedB, ColumnBias = columnBias,
        };

        int mr = Mr(kind), nr = Nr(kind);
        int tilesM = (m + mr - 1) / mr, tilesN = (n + nr - 1) / nr;
        int t = threads < 1 ? 1 : threads;
        if ((long)m * n * k < ParallelThreshold) t = 1;
        if (t > 1) t = Math.Min(t, Math.Max(tilesM, tilesN));
        if (t > 1) t = Math.Min(t, pool?.Threads ?? SharedPool.MaxThreads);

        if (t <= 1)
        {
            job.SplitN = true;
            job.Parts = 1;
            job.Tiles = tilesN;
            RunPart(ref job, 0);
            return;
        }

        // Split C into t contiguous bands of whole tiles along the dimension that duplicates less packing:
        // a split over n makes every thread pack all of op(A) (per NC panel), a split over m makes every
        // thread pack all of op(B).
        long nPerThread = ((long)(tilesN + t - 1) / t) * nr;
        long costSplitN = tilesN >= t ? (long)t * m * ((nPerThread + NCTarget - 1) / NCTarget) + n : long.MaxValue;
        long costSplitM = tilesM >= t ? (long)m * ((n + NCTarget - 1) / NCTarget) + (long)t * n : long.MaxValue;
        job.SplitN = costSplitN <= costSplitM;
        job.Tiles = job.SplitN ? tilesN : tilesM;
        job.Parts = t;
        if (pool is not null) RunParts(pool, ref job);
        else SharedPool.Run(ref job);
    }

    /// <summary>Runs parts 0..Parts−1 of the job, one per pool chunk (which thread runs which part does not change C).</summary>
    private static void RunParts(WorkerPool pool, ref Job job)
    {
        fixed (Job* j = &job) pool.For(job.Parts, 1, j, &RunPartRange);
    }

    private static void RunPartRange(void* args, int start, int end)
    {
        for (int part = start; part < end; part++) RunPart(ref *(Job*)args, part);
    }

    /// <summary>C = beta·C (beta == 0 writes zeros without reading C).</summary>
    private static void ScaleC(int m, int n, float beta, float* c, int ldc)
    {
        if (beta == 1f) return;
        for (int i = 0; i < m; i++)
        {
            var row = new Span<float>(c + (long)i * ldc, n);
            if (beta == 0f) row.Clear();
            else for (int j = 0; j < row.Length; j++) row[j] *= beta;
        }
    }

    internal struct Job
    {
        public KernelKind Kind;
        public bool TransA, TransB;
        public int M, N, K;
        public float Alpha, Beta;
        public float* A, B, C;
        public int Lda, Ldb, Ldc;
        public bool SplitN;
        public int Parts, Tiles;
        /// <summary>All of op(B) packed by <see cref="PackWholeB"/>, or null to pack per block.</summary>
        public float* PackedB;
        /// <summary>Added to every row of C after the product (<see cref="SgemmBias"/>), or null.</summary>
        public float* ColumnBias;
    }

    // ---- whole-B packing (prepacked weights) -------------------------------------------------------

    /// <summary>Floats <see cref="PackWholeB"/> writes for an n-column, k-deep op(B) (panels zero-padded to the kernel width).</summary>
    internal static long WholeBFloats(int n, int k)
    {
        int nr = Nr(DefaultKernel);
        return (long)((n + nr - 1) / nr) * nr * k;
    }

    /// <summary>Panels of the default kernel's width in an n-column op(B).</summary>
    internal static int WholeBPanels(int n) => (n + Nr(DefaultKernel) - 1) / Nr(DefaultKernel);

    /// <summary>
    /// Packs panels [<paramref name="panelStart"/>, <paramref name="panelEnd"/>) of all of op(B) (k×n) into
    /// <paramref name="dst"/> (<see cref="WholeBFloats"/> floats): for each k-block (the blocking <see cref="Compute"/>
    /// uses, a function of k only) the panels in order, each exactly what the per-call packing writes for it.
    /// Disjoint panel ranges may be packed concurrently.
    /// </summary>
    internal static void PackWholeB(bool transB, int n, int k, float* b, int ldb, float* dst, int panelStart, int panelEnd)
    {
        int nr = Nr(DefaultKernel);
        int panels = WholeBPanels(n);
        int kBlocks = (k + KC - 1) / KC;
        int kcMax = (k + kBlocks - 1) / kBlocks;
        var job = new Job { Kind = DefaultKernel, TransB = transB, N = n, K = k, B = b, Ldb = ldb };
        int j0 = panelStart * nr, j1 = Math.Min(n, panelEnd * nr);
        if (j1 <= j0) return;
        for (int pc = 0; pc < k; pc += kcMax)
        {
            int kc = Math.Min(kcMax, k - pc);
            PackB(ref job, dst + (long)pc * panels * nr + (long)panelStart * kc * nr, pc, kc, j0, j1 - j0, nr);
        }
    }

    /// <summary>Computes band <paramref name="part"/> of C (all of C when Parts == 1).</summary>
    internal static void RunPart(ref Job job, int part)
    {
        int mr = Mr(job.Kind), nr = Nr(job.Kind);
        int t0 = (int)((long)job.Tiles * part / job.Parts);
        int t1 = (int)((long)job.Tiles * (part + 1) / job.Parts);
        if (t1 <= t0) return;
        int i0 = 0, i1 = job.M, j0 = 0, j1 = job.N;
        if (job.SplitN) { j0 = t0 * nr; j1 = Math.Min(job.N, t1 * nr); }
        else { i0 = t0 * mr; i1 = Math.Min(job.M, t1 * mr); }
        Compute(ref job, i0, i1, j0, j1);
    }

    private static void Compute(ref Job job, int i0, int i1, int j0, int j1)
    {
        KernelKind kind = job.Kind;
        int mr = Mr(kind), nr = Nr(kind);
        int k = job.K;
        int kBlocks = (k + KC - 1) / KC;
        int kcMax = (k + kBlocks - 1) / kBlocks;   // balanced k-blocks; a function of k only
        int rows = i1 - i0;
        int mBlocks = (rows + MCMax - 1) / MCMax;
        int mcMax = ((rows + mBlocks - 1) / mBlocks + mr - 1) / mr * mr;
        int ncMax = Math.Min(NCTarget, (j1 - j0 + nr - 1) / nr * nr);
        int mcCap = Math.Min(mcMax, (i1 - i0 + mr - 1) / mr * mr);

        Buffers buf = Buffers.ForCurrentThread((long)mcCap * kcMax, (long)ncMax * kcMax);
        float* ap = buf.A, bp = buf.B;
        float* tmp = stackalloc float[12 * 32 + 16];
        float* tile = (float*)(((nint)tmp + 63) & ~(nint)63);

        for (int jc = j0; jc < j1; jc += ncMax)
        {
            int nc = Math.Min(ncMax, j1 - jc);
            for (int pc = 0; pc < k; pc += kcMax)
            {
                int kc = Math.Min(kcMax, k - pc);
                int mode = pc > 0 || job.Beta == 1f ? ModeAccumulate : job.Beta == 0f ? ModeStore : ModeScale;
                if (job.PackedB != null)
                    bp = job.PackedB + (long)pc * ((job.N + nr - 1) / nr) * nr + (long)(jc / nr) * kc * nr;
                else
                    PackB(ref job, bp, pc, kc, jc, nc, nr);
                for (int ic = i0; ic < i1; ic += mcMax)
                {
                    int mc = Math.Min(mcMax, i1 - ic);
                    PackA(ref job, ap, ic, mc, pc, kc, mr);
                    for (int jr = 0; jr < nc; jr += nr)
                    {
                        int nrem = Math.Min(nr, nc - jr);
                        float* bpanel = bp + (long)(jr / nr) * kc * nr;
                        for (int ir = 0; ir < mc; ir += mr)
                        {
                            int mrem = Math.Min(mr, mc - ir);
                            float* apanel = ap + (long)(ir / mr) * kc * mr;
                            float* cTile = job.C + (long)(ic + ir) * job.Ldc + jc + jr;
                            switch (kind)
                            {
                                case KernelKind.V512 when mrem <= 6:
                                    Kernel12x32Half(kc, apanel, bpanel, cTile, job.Ldc, job.Alpha, job.Beta, mode, mrem, nrem, tile);
                                    break;
                                case KernelKind.V512:
                                    Kernel12x32(kc, apanel, bpanel, cTile, job.Ldc, job.Alpha, job.Beta, mode, mrem, nrem, tile);
                                    break;
                                case KernelKind.V256:
                                    Kernel6x16(kc, apanel, bpanel, cTile, job.Ldc, job.Alpha, job.Beta, mode, mrem, nrem, tile);
                                    break;
                                default:
                                    Kernel4x8(kc, apanel, bpanel, cTile, job.Ldc, job.Alpha, job.Beta, mode, mrem, nrem, tile);
                                    break;
                            }
                            if (job.ColumnBias != null && pc + kc == k) AddColumnBias(cTile, job.Ldc, job.ColumnBias + jc + jr, mrem, nrem);
                        }
                    }
                }
            }
        }
    }

    /// <summary>c[r, j] += bias[j] for a finished tile (rows × cols), as TensorPrimitives.Add does it: one rounding each.</summary>
    private static void AddColumnBias(float* c, int ldc, float* bias, int rows, int cols)
    {
        int j0 = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; j0 + 16 <= cols; j0 += 16)
            {
                var bv = Vector512.Load(bias + j0);
                for (int r = 0; r < rows; r++)
                {
                    float* row = c + (long)r * ldc + j0;
                    (Vector512.Load(row) + bv).Store(row);
                }
            }
        for (int r = 0; r < rows; r++)
            for (int j = j0; j < cols; j++) c[(long)r * ldc + j] += bias[j];
    }

    // ---- packing ----------------------------------------------------------------------------------

    /// <summary>
    /// Packs op(A)[ic..ic+mc, pc..pc+kc] into ceil(mc/mr) panels; panel q holds, for each p, the mr values
    /// op(A)[ic+q·mr+i, pc+p] (rows past mc are zero).
    /// </summary>
    private static void PackA(ref Job job, float* dst, int ic, int mc, int pc, int kc, int mr)
    {
        int lda = job.Lda;
        for (int ir = 0; ir < mc; ir += mr, dst += (long)kc * mr)
        {
            int rows = Math.Min(mr, mc - ir);
            if (job.TransA)
            {
                // A stored k×m: op(A)[i, p] = a[p·lda + i]; each p is a contiguous run of rows.
                float* src = job.A + (long)pc * lda + ic + ir;
                if (rows == 12 && mr == 12 && Vector256.IsHardwareAccelerated)
                {
                    // A full 12-row panel (the weight gradient's dyᵀ): two vector copies per p, not 12 scalar ones.
                    for (int p = 0; p < kc; p++, src += lda)
                    {
                        float* d = dst + (long)p * 12;
                        Vector256.Store(Vector256.Load(src), d);
                        Vector128.Store(Vector128.Load(src + 8), d + 8);
                    }
                    continue;
                }
                for (int p = 0; p < kc; p++, src += lda)
                {
                    float* d = dst + (long)p * mr;
                    int i = 0;
                    for (; i < rows; i++) d[i] = src[i];
                    for (; i < mr; i++) d[i] = 0f;
                }
            }
            else
            {
                // A stored m×k: op(A)[i, p] = a[i·lda + p]; a transpose of a rows×kc block.
                float* src = job.A + (long)(ic + ir) * lda + pc;
                int i = 0;
                if (Sse.IsSupported)
                {
                    for (; i + 4 <= rows; i += 4)
                    {
                        float* s0 = src + (long)i * lda;
                        Transpose4Rows(s0, lda, dst + i, mr, kc);
                    }
                }
                for (; i < rows; i++)
                {
                    float* s = src + (long)i * lda;
                    float* d = dst + i;
                    for (int p = 0; p < kc; p++) d[(long)p * mr] = s[p];
                }
                for (; i < mr; i++)
                {
                    float* d = dst + i;
                    for (int p = 0; p < kc; p++) d[(long)p * mr] = 0f;
                }
            }
        }
    }

    /// <summary>
    /// Packs op(B)[pc..pc+kc, jc..jc+nc] into ceil(nc/nr) panels; panel q holds, for each p, the nr values
    /// op(B)[pc+p, jc+q·nr+j] (columns past nc are zero).
    /// </summary>
    private static void PackB(ref Job job, float* dst, int pc, int kc, int jc, int nc, int nr)
    {
        int ldb = job.Ldb;
        for (int jr = 0; jr < nc; jr += nr, dst += (long)kc * nr)
        {
            int cols = Math.Min(nr, nc - jr);
            if (!job.TransB)
            {
                // B stored k×n: each p is a contiguous run of columns.
                float* src = job.B + (long)pc * ldb + jc + jr;
                if (cols == 32 && nr == 32 && Vector512.IsHardwareAccelerated)
                {
                    for (int p = 0; p < kc; p++, src += ldb)
                    {
                        float* d = dst + (long)p * 32;
                        Vector512.Store(Vector512.Load(src), d);
                        Vector512.Store(Vector512.Load(src + 16), d + 16);
                    }
                }
                else if (cols == nr)
                {
                    for (int p = 0; p < kc; p++, src += ldb)
                        Buffer.MemoryCopy(src, dst + (long)p * nr, nr * sizeof(float), nr * sizeof(float));
                }
                else
                {
                    for (int p = 0; p < kc; p++, src += ldb)
                    {
                        float* d = dst + (long)p * nr;
                        int j = 0;
                        for (; j < cols; j++) d[j] = src[j];
                        for (; j < nr; j++) d[j] = 0f;
                    }
                }
            }
            else
            {
                // B stored n×k: op(B)[p, j] = b[j·ldb + p]; a transpose of a cols×kc block.
                float* src = job.B + (long)(jc + jr) * ldb + pc;
                int j = 0;
                if (Avx.IsSupported)
                {
                    for (; j + 8 <= cols; j += 8)
                        Transpose8Rows(src + (long)j * ldb, ldb, dst + j, nr, kc);
                }
                else if (Sse.IsSupported)
                {
                    for (; j + 4 <= cols; j += 4)
                        Transpose4Rows(src + (long)j * ldb, ldb, dst + j, nr, kc);
                }
                for (; j < cols; j++)
                {
                    float* s = src + (long)j * ldb;
                    float* d = dst + j;
                    for (int p = 0; p < kc; p++) d[(long)p * nr] = s[p];
                }
                for (; j < nr; j++)
                {
                    float* d = dst + j;
                    for (int p = 0; p < kc; p++) d[(long)p * nr] = 0f;
                }
            }
        }
    }

    /// <summary>dst[p·dstStride + r] = src[r·srcStride + p] for r &lt; 4, p &lt; len.</summary>
    private static void Transpose4Rows(float* src, int srcStride, float* dst, int dstStride, int len)
    {
        float* s0 = src, s1 = src + srcStride, s2 = src + 2L * srcStride, s3 = src + 3L * srcStride;
        int p = 0;
        for (; p + 4 <= len; p += 4)
        {
            Vector128<float> r0 = Sse.LoadVector128(s0 + p), r1 = Sse.LoadVector128(s1 + p);
            Vector128<float> r2 = Sse.LoadVector128(s2 + p), r3 = Sse.LoadVector128(s3 + p);
            Vector128<float> t0 = Sse.UnpackLow(r0, r1), t1 = Sse.UnpackLow(r2, r3);
            Vector128<float> t2 = Sse.UnpackHigh(r0, r1), t3 = Sse.UnpackHigh(r2, r3);
            float* d = dst + (long)p * dstStride;
            Sse.Store(d, Sse.MoveLowToHigh(t0, t1));
            Sse.Store(d + dstStride, Sse.MoveHighToLow(t1, t0));
            Sse.Store(d + 2L * dstStride, Sse.MoveLowToHigh(t2, t3));
            Sse.Store(d + 3L * dstStride, Sse.MoveHighToLow(t3, t2));
        }
        for (; p < len; p++)
        {
            float* d = dst + (long)p * dstStride;
            d[0] = s0[p]; d[1] = s1[p]; d[2] = s2[p]; d[3] = s3[p];
        }
    }

    /// <summary>dst[p·dstStride + r] = src[r·srcStride + p] for r &lt; 8, p &lt; len.</summary>
    private static void Transpose8Rows(float* src, int srcStride, float* dst, int dstStride, int len)
    {
        long ss = srcStride;
        int p = 0;
        for (; p + 8 <= len; p += 8)
        {
            float* s = src + p;
            Vector256<float> r0 = Avx.LoadVector256(s), r1 = Avx.LoadVector256(s + ss);
            Vector256<float> r2 = Avx.LoadVector256(s + 2 * ss), r3 = Avx.LoadVector256(s + 3 * ss);
            Vector256<float> r4 = Avx.LoadVector256(s + 4 * ss), r5 = Avx.LoadVector256(s + 5 * ss);
            Vector256<float> r6 = Avx.LoadVector256(s + 6 * ss), r7 = Avx.LoadVector256(s + 7 * ss);
            Vector256<float> t0 = Avx.UnpackLow(r0, r1), t1 = Avx.UnpackHigh(r0, r1);
            Vector256<float> t2 = Avx.UnpackLow(r2, r3), t3 = Avx.UnpackHigh(r2, r3);
            Vector256<float> t4 = Avx.UnpackLow(r4, r5), t5 = Avx.UnpackHigh(r4, r5);
            Vector256<float> t6 = Avx.UnpackLow(r6, r7), t7 = Avx.UnpackHigh(r6, r7);
            Vector256<float> u0 = Avx.Shuffle(t0, t2, 0x44), u1 = Avx.Shuffle(t0, t2, 0xEE);
            Vector256<float> u2 = Avx.Shuffle(t1, t3, 0x44), u3 = Avx.Shuffle(t1, t3, 0xEE);
            Vector256<float> u4 = Avx.Shuffle(t4, t6, 0x44), u5 = Avx.Shuffle(t4, t6, 0xEE);
            Vector256<float> u6 = Avx.Shuffle(t5, t7, 0x44), u7 = Avx.Shuffle(t5, t7, 0xEE);
            long ds = dstStride;
            float* d = dst + p * ds;
            Avx.Store(d, Avx.Permute2x128(u0, u4, 0x20));
            Avx.Store(d + ds, Avx.Permute2x128(u1, u5, 0x20));
            Avx.Store(d + 2 * ds, Avx.Permute2x128(u2, u6, 0x20));
            Avx.Store(d + 3 * ds, Avx.Permute2x128(u3, u7, 0x20));
            Avx.Store(d + 4 * ds, Avx.Permute2x128(u0, u4, 0x31));
            Avx.Store(d + 5 * ds, Avx.Permute2x128(u1, u5, 0x31));
            Avx.Store(d + 6 * ds, Avx.Permute2x128(u2, u6, 0x31));
            Avx.Store(d + 7 * ds, Avx.Permute2x128(u3, u7, 0x31));
        }
        for (; p < len; p++)
        {
            float* d = dst + (long)p * dstStride;
            for (int r = 0; r < 8; r++) d[r] = src[r * ss + p];
        }
    }

    // ---- micro-kernels ----------------------------------------------------------------------------

    // Write-back modes; the edge path (scalar, through a temporary tile) uses the same formulas.
    private const int ModeStore = 0;       // C = alpha·acc                  (first k-block, beta == 0)
    private const int ModeAccumulate = 1;  // C = fma(alpha, acc, C)          (later k-blocks, or beta == 1)
    private const int ModeScale = 2;       // C = fma(alpha, acc, beta·C)     (first k-block, other beta)

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(float* c, Vector512<float> acc, int mode, Vector512<float> alpha, Vector512<float> beta)
    {
        if (mode == ModeStore) Vector512.Store(acc * alpha, c);
        else if (mode == ModeAccumulate) Vector512.Store(Vector512.FusedMultiplyAdd(alpha, acc, Vector512.Load(c)), c);
        else Vector512.Store(Vector512.FusedMultiplyAdd(alpha, acc, beta * Vector512.Load(c)), c);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(float* c, Vector256<float> acc, int mode, Vector256<float> alpha, Vector256<float> beta)
    {
        if (mode == ModeStore) Vector256.Store(acc * alpha, c);
        else if (mode == ModeAccumulate) Vector256.Store(Vector256.FusedMultiplyAdd(alpha, acc, Vector256.Load(c)), c);
        else Vector256.Store(Vector256.FusedMultiplyAdd(alpha, acc, beta * Vector256.Load(c)), c);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(float* c, Vector128<float> acc, int mode, Vector128<float> alpha, Vector128<float> beta)
    {
        if (mode == ModeStore) Vector128.Store(acc * alpha, c);
        else if (mode == ModeAccumulate) Vector128.Store(Vector128.FusedMultiplyAdd(alpha, acc, Vector128.Load(c)), c);
        else Vector128.Store(Vector128.FusedMultiplyAdd(alpha, acc, beta * Vector128.Load(c)), c);
    }

    /// <summary>Writes the valid rows×cols corner of a raw accumulator tile (row stride ld) into C.</summary>
    private static void PutEdge(float* tile, int ld, float* c, int ldc, int rows, int cols, int mode, float alpha, float beta)
    {
        for (int i = 0; i < rows; i++)
        {
            float* t = tile + (long)i * ld;
            float* cr = c + (long)i * ldc;
            for (int j = 0; j < cols; j++)
            {
                cr[j] = mode == ModeStore ? t[j] * alpha
                    : mode == ModeAccumulate ? MathF.FusedMultiplyAdd(alpha, t[j], cr[j])
                    : MathF.FusedMultiplyAdd(alpha, t[j], beta * cr[j]);
            }
        }
    }

    private static void Kernel12x32(int kc, float* a, float* b, float* c, int ldc, float alpha, float beta,
        int mode, int rows, int cols, float* tile)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        Vector512<float> c60 = default, c61 = default, c70 = default, c71 = default, c80 = default, c81 = default;
        Vector512<float> c90 = default, c91 = default, cA0 = default, cA1 = default, cB0 = default, cB1 = default;
        // A tile that adds to C (every k-block after the first) reads its 24 cache lines of C at the end, last touched a
        // whole k-block ago (for a weight gradient's k = 8·197 rows, 7 passes over all of C): asking for them now lets
        // the loads overlap the FMAs. Measured alone at B=8 shapes: +6–16 % (weight gradients), +6 % (fc1, fc2 forward).
        if (Sse.IsSupported && mode != ModeStore && rows == 12 && cols == 32)
        {
            float* pc = c;
            for (int r = 0; r < 12; r++, pc += ldc) { Sse.Prefetch0(pc); Sse.Prefetch0(pc + 16); }
        }
        for (int p = 0; p < kc; p++)
        {
            Vector512<float> b0 = Vector512.Load(b), b1 = Vector512.Load(b + 16);
            Vector512<float> x;
            x = Vector512.Create(a[0]); c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a[1]); c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a[2]); c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a[3]); c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(a[4]); c40 = Vector512.FusedMultiplyAdd(x, b0, c40); c41 = Vector512.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(a[5]); c50 = Vector512.FusedMultiplyAdd(x, b0, c50); c51 = Vector512.FusedMultiplyAdd(x, b1, c51);
            x = Vector512.Create(a[6]); c60 = Vector512.FusedMultiplyAdd(x, b0, c60); c61 = Vector512.FusedMultiplyAdd(x, b1, c61);
            x = Vector512.Create(a[7]); c70 = Vector512.FusedMultiplyAdd(x, b0, c70); c71 = Vector512.FusedMultiplyAdd(x, b1, c71);
            x = Vector512.Create(a[8]); c80 = Vector512.FusedMultiplyAdd(x, b0, c80); c81 = Vector512.FusedMultiplyAdd(x, b1, c81);
            x = Vector512.Create(a[9]); c90 = Vector512.FusedMultiplyAdd(x, b0, c90); c91 = Vector512.FusedMultiplyAdd(x, b1, c91);
            x = Vector512.Create(a[10]); cA0 = Vector512.FusedMultiplyAdd(x, b0, cA0); cA1 = Vector512.FusedMultiplyAdd(x, b1, cA1);
            x = Vector512.Create(a[11]); cB0 = Vector512.FusedMultiplyAdd(x, b0, cB0); cB1 = Vector512.FusedMultiplyAdd(x, b1, cB1);
            a += 12;
            b += 32;
        }

        bool full = rows == 12 && cols == 32;
        float* o = full ? c : tile;
        int ld = full ? ldc : 32;
        int m = full ? mode : ModeStore;
        var va = Vector512.Create(full ? alpha : 1f);
        var vb = Vector512.Create(beta);
        Put(o, c00, m, va, vb); Put(o + 16, c01, m, va, vb); o += ld;
        Put(o, c10, m, va, vb); Put(o + 16, c11, m, va, vb); o += ld;
        Put(o, c20, m, va, vb); Put(o + 16, c21, m, va, vb); o += ld;
        Put(o, c30, m, va, vb); Put(o + 16, c31, m, va, vb); o += ld;
        Put(o, c40, m, va, vb); Put(o + 16, c41, m, va, vb); o += ld;
        Put(o, c50, m, va, vb); Put(o + 16, c51, m, va, vb); o += ld;
        Put(o, c60, m, va, vb); Put(o + 16, c61, m, va, vb); o += ld;
        Put(o, c70, m, va, vb); Put(o + 16, c71, m, va, vb); o += ld;
        Put(o, c80, m, va, vb); Put(o + 16, c81, m, va, vb); o += ld;
        Put(o, c90, m, va, vb); Put(o + 16, c91, m, va, vb); o += ld;
        Put(o, cA0, m, va, vb); Put(o + 16, cA1, m, va, vb); o += ld;
        Put(o, cB0, m, va, vb); Put(o + 16, cB1, m, va, vb);
        if (!full) PutEdge(tile, 32, c, ldc, rows, cols, mode, alpha, beta);
    }

    /// <summary>
    /// The 12×32 kernel's last row tile when it holds 6 rows or fewer (one image's 197 tokens end in a 5-row tile):
    /// half the FMAs of a padded 12-row tile, with the same per-element FMA chain (so bit-identical to it).
    /// </summary>
    private static void Kernel12x32Half(int kc, float* a, float* b, float* c, int ldc, float alpha, float beta,
        int mode, int rows, int cols, float* tile)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector512<float> b0 = Vector512.Load(b), b1 = Vector512.Load(b + 16);
            Vector512<float> x;
            x = Vector512.Create(a[0]); c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a[1]); c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a[2]); c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a[3]); c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(a[4]); c40 = Vector512.FusedMultiplyAdd(x, b0, c40); c41 = Vector512.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(a[5]); c50 = Vector512.FusedMultiplyAdd(x, b0, c50); c51 = Vector512.FusedMultiplyAdd(x, b1, c51);
            a += 12;
            b += 32;
        }

        // Always through the temporary tile (rows < 12 here), as the 12×32 kernel's edge path does.
        var one = Vector512.Create(1f);
        var vb = Vector512.Create(beta);
        float* o = tile;
        Put(o, c00, ModeStore, one, vb); Put(o + 16, c01, ModeStore, one, vb); o += 32;
        Put(o, c10, ModeStore, one, vb); Put(o + 16, c11, ModeStore, one, vb); o += 32;
        Put(o, c20, ModeStore, one, vb); Put(o + 16, c21, ModeStore, one, vb); o += 32;
        Put(o, c30, ModeStore, one, vb); Put(o + 16, c31, ModeStore, one, vb); o += 32;
        Put(o, c40, ModeStore, one, vb); Put(o + 16, c41, ModeStore, one, vb); o += 32;
        Put(o, c50, ModeStore, one, vb); Put(o + 16, c51, ModeStore, one, vb);
        PutEdge(tile, 32, c, ldc, rows, cols, mode, alpha, beta);
    }

    private static void Kernel6x16(int kc, float* a, float* b, float* c, int ldc, float alpha, float beta,
        int mode, int rows, int cols, float* tile)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector256<float> b0 = Vector256.Load(b), b1 = Vector256.Load(b + 8);
            Vector256<float> x;
            x = Vector256.Create(a[0]); c00 = Vector256.FusedMultiplyAdd(x, b0, c00); c01 = Vector256.FusedMultiplyAdd(x, b1, c01);
            x = Vector256.Create(a[1]); c10 = Vector256.FusedMultiplyAdd(x, b0, c10); c11 = Vector256.FusedMultiplyAdd(x, b1, c11);
            x = Vector256.Create(a[2]); c20 = Vector256.FusedMultiplyAdd(x, b0, c20); c21 = Vector256.FusedMultiplyAdd(x, b1, c21);
            x = Vector256.Create(a[3]); c30 = Vector256.FusedMultiplyAdd(x, b0, c30); c31 = Vector256.FusedMultiplyAdd(x, b1, c31);
            x = Vector256.Create(a[4]); c40 = Vector256.FusedMultiplyAdd(x, b0, c40); c41 = Vector256.FusedMultiplyAdd(x, b1, c41);
            x = Vector256.Create(a[5]); c50 = Vector256.FusedMultiplyAdd(x, b0, c50); c51 = Vector256.FusedMultiplyAdd(x, b1, c51);
            a += 6;
            b += 16;
        }

        bool full = rows == 6 && cols == 16;
        float* o = full ? c : tile;
        int ld = full ? ldc : 16;
        int m = full ? mode : ModeStore;
        var va = Vector256.Create(full ? alpha : 1f);
        var vb = Vector256.Create(beta);
        Put(o, c00, m, va, vb); Put(o + 8, c01, m, va, vb); o += ld;
        Put(o, c10, m, va, vb); Put(o + 8, c11, m, va, vb); o += ld;
        Put(o, c20, m, va, vb); Put(o + 8, c21, m, va, vb); o += ld;
        Put(o, c30, m, va, vb); Put(o + 8, c31, m, va, vb); o += ld;
        Put(o, c40, m, va, vb); Put(o + 8, c41, m, va, vb); o += ld;
        Put(o, c50, m, va, vb); Put(o + 8, c51, m, va, vb);
        if (!full) PutEdge(tile, 16, c, ldc, rows, cols, mode, alpha, beta);
    }

    private static void Kernel4x8(int kc, float* a, float* b, float* c, int ldc, float alpha, float beta,
        int mode, int rows, int cols, float* tile)
    {
        Vector128<float> c00 = default, c01 = default, c10 = default, c11 = default;
        Vector128<float> c20 = default, c21 = default, c30 = default, c31 = default;
        for (int p = 0; p < kc; p++)
        {
            Vector128<float> b0 = Vector128.Load(b), b1 = Vector128.Load(b + 4);
            Vector128<float> x;
            x = Vector128.Create(a[0]); c00 = Vector128.FusedMultiplyAdd(x, b0, c00); c01 = Vector128.FusedMultiplyAdd(x, b1, c01);
            x = Vector128.Create(a[1]); c10 = Vector128.FusedMultiplyAdd(x, b0, c10); c11 = Vector128.FusedMultiplyAdd(x, b1, c11);
            x = Vector128.Create(a[2]); c20 = Vector128.FusedMultiplyAdd(x, b0, c20); c21 = Vector128.FusedMultiplyAdd(x, b1, c21);
            x = Vector128.Create(a[3]); c30 = Vector128.FusedMultiplyAdd(x, b0, c30); c31 = Vector128.FusedMultiplyAdd(x, b1, c31);
            a += 4;
            b += 8;
        }

        bool full = rows == 4 && cols == 8;
        float* o = full ? c : tile;
        int ld = full ? ldc : 8;
        int m = full ? mode : ModeStore;
        var va = Vector128.Create(full ? alpha : 1f);
        var vb = Vector128.Create(beta);
        Put(o, c00, m, va, vb); Put(o + 4, c01, m, va, vb); o += ld;
        Put(o, c10, m, va, vb); Put(o + 4, c11, m, va, vb); o += ld;
        Put(o, c20, m, va, vb); Put(o + 4, c21, m, va, vb); o += ld;
        Put(o, c30, m, va, vb); Put(o + 4, c31, m, va, vb);
        if (!full) PutEdge(tile, 8, c, ldc, rows, cols, mode, alpha, beta);
    }

    // ---- per-thread packing buffers -----------------------------------------------------------------

    /// <summary>
    /// Packing buffers of one thread: pinned (POH) arrays, so they are reclaimed with the thread and never
    /// move; grown on demand, never shrunk, so steady-state calls allocate nothing.
    /// </summary>
    private sealed class Buffers
    {
        [ThreadStatic] private static Buffers? t_current;

        private float[]? _aArray, _bArray;
        public float* A, B;
        private long _aCap, _bCap;

        public static Buffers ForCurrentThread(long aFloats, long bFloats)
        {
            Buffers buf = t_current ??= new Buffers();
            if (aFloats > buf._aCap) buf.A = Grow(ref buf._aArray, ref buf._aCap, aFloats);
            if (bFloats > buf._bCap) buf.B = Grow(ref buf._bArray, ref buf._bCap, bFloats);
            return buf;
        }

        private static float* Grow(ref float[]? array, ref long cap, long floats)
        {
            array = null;
            array = GC.AllocateUninitializedArray<float>(checked((int)(floats + 16)), pinned: true);
            cap = floats;
            fixed (float* p = array) return (float*)(((nint)p + 63) & ~(nint)63);
        }
    }

    // ---- the pool of standalone calls ---------------------------------------------------------------

    /// <summary>
    /// The <see cref="WorkerPool"/> of calls that bring none (created on first use, grown when a call asks for more
    /// threads, never torn down); calls are serialized, since a pool runs one loop at a time.
    /// </summary>
    internal static class SharedPool
    {
        public const int MaxThreads = 256;
        private static readonly object s_lock = new();
        private static WorkerPool? s_pool;
        private static long s_retiredAllocatedBytes;

        /// <summary>Bytes the shared pool's workers allocated while running GEMM parts (a zero-allocation test reads it).</summary>
        public static long WorkerAllocatedBytes
        {
            get { lock (s_lock) return s_retiredAllocatedBytes + (s_pool?.WorkerAllocatedBytes ?? 0); }
        }

        public static void Run(ref Job job)
        {
            lock (s_lock)
            {
                if (s_pool is null || s_pool.Threads < job.Parts)
                {
                    if (s_pool is not null)
                    {
                        s_pool.Dispose();
                        s_retiredAllocatedBytes += s_pool.WorkerAllocatedBytes;
                    }
                    s_pool = new WorkerPool(job.Parts);
                }
                RunParts(s_pool, ref job);
            }
        }
    }
}

using System.Runtime.Intrinsics;

namespace WhereToEdit.Engine.Backends.Cpu;

// One or two rows of A against a whole weight: the [CLS] row of an edit's last block, the classifier head and the
// hypernetwork's heads at batch 1. The packed path would pack all of B (or keep a prepack as large as B: fresh
// memory, slow to touch on our VMs) to fill a 12-row tile with one real row; here B is read once where it lies (a
// transposed weight through a 64-column panel on the stack) and the columns of C are split over the pool. Results
// are bit-identical to the packed path's, so which path a call takes never changes a number. From 3 rows on, the
// packed kernels were as fast or faster in a cold-cache microbenchmark (ViT-B shapes, 2 threads).
public static unsafe partial class ManagedGemm
{
    /// <summary>Calls with at most this many rows of C (and A not transposed) take the small-m path.</summary>
    internal const int SmallM = 2;

    /// <summary>Whether <see cref="Sgemm(bool, bool, int, int, int, float, float*, int, float*, int, float, float*, int, int)"/> takes the small-m path for this call.</summary>
    internal static bool IsSmallM(bool transA, int m) => !transA && m <= SmallM && Vector256.IsHardwareAccelerated;

    /// <summary>Columns of C per pool chunk.</summary>
    private const int SmallMChunk = 64;

    private struct SmallMArgs
    {
        public bool TransB;
        public int M, N, K, Lda, Ldb, Ldc;
        public float Alpha, Beta;
        public float* A, B, C;
    }

    private static void SgemmSmallM(bool transB, int m, int n, int k, float alpha, float* a, int lda, float* b, int ldb,
                                    float beta, float* c, int ldc, int threads, WorkerPool? pool)
    {
        var args = new SmallMArgs { TransB = transB, M = m, N = n, K = k, Lda = lda, Ldb = ldb, Ldc = ldc, Alpha = alpha, Beta = beta, A = a, B = b, C = c };
        int chunks = (n + SmallMChunk - 1) / SmallMChunk;
        if (pool is not null && threads > 1 && (long)m * n * k >= ParallelThreshold) pool.For(chunks, 1, &args, &SmallMColumns);
        else SmallMColumns(&args, 0, chunks);
    }

    /// <summary>
    /// Columns [start·64, end·64) of C. Bit-identical to the packed kernels: each element is one FMA chain over each
    /// k-block (the same balanced blocks), written back with the same formulas. 64 columns (8 independent sums per row)
    /// at a time: op(B)'s 64×kc block is read in place when B is stored k×n and whole, else first transposed (or padded)
    /// into a 64-wide panel on the stack.
    /// </summary>
    private static void SmallMColumns(void* p, int start, int end)
    {
        ref var g = ref *(SmallMArgs*)p;
        int k = g.K;
        int kBlocks = (k + KC - 1) / KC;
        int kcMax = (k + kBlocks - 1) / kBlocks;   // as Compute: a function of k only
        float* panel = stackalloc float[SmallMChunk * kcMax];
        float* tile = stackalloc float[SmallMChunk];
        for (int chunk = start; chunk < end; chunk++)
        {
            int j = chunk * SmallMChunk, cols = Math.Min(SmallMChunk, g.N - j);
            for (int pc = 0; pc < k; pc += kcMax)
            {
                int kc = Math.Min(kcMax, k - pc);
                int mode = pc > 0 || g.Beta == 1f ? ModeAccumulate : g.Beta == 0f ? ModeStore : ModeScale;
                float* src;
                long stride;
                if (!g.TransB && cols == SmallMChunk) { src = g.B + (long)pc * g.Ldb + j; stride = g.Ldb; }
                else { PanelOfB(ref g, panel, pc, kc, j, cols); src = panel; stride = SmallMChunk; }
                int i = 0;
                for (; i + 2 <= g.M; i += 2)
                {
                    // Two rows of A share each load of B (16 independent sums).
                    float* a0 = g.A + (long)i * g.Lda + pc, a1 = a0 + g.Lda;
                    Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
                    Vector256<float> d0 = default, d1 = default, d2 = default, d3 = default, d4 = default, d5 = default, d6 = default, d7 = default;
                    float* bq = src;
                    for (int q = 0; q < kc; q++, bq += stride)
                    {
                        var x = Vector256.Create(a0[q]);
                        var y = Vector256.Create(a1[q]);
                        var b0 = Vector256.Load(bq); var b1 = Vector256.Load(bq + 8); var b2 = Vector256.Load(bq + 16); var b3 = Vector256.Load(bq + 24);
                        c0 = Vector256.FusedMultiplyAdd(x, b0, c0); d0 = Vector256.FusedMultiplyAdd(y, b0, d0);
                        c1 = Vector256.FusedMultiplyAdd(x, b1, c1); d1 = Vector256.FusedMultiplyAdd(y, b1, d1);
                        c2 = Vector256.FusedMultiplyAdd(x, b2, c2); d2 = Vector256.FusedMultiplyAdd(y, b2, d2);
                        c3 = Vector256.FusedMultiplyAdd(x, b3, c3); d3 = Vector256.FusedMultiplyAdd(y, b3, d3);
                        b0 = Vector256.Load(bq + 32); b1 = Vector256.Load(bq + 40); b2 = Vector256.Load(bq + 48); b3 = Vector256.Load(bq + 56);
                        c4 = Vector256.FusedMultiplyAdd(x, b0, c4); d4 = Vector256.FusedMultiplyAdd(y, b0, d4);
                        c5 = Vector256.FusedMultiplyAdd(x, b1, c5); d5 = Vector256.FusedMultiplyAdd(y, b1, d5);
                        c6 = Vector256.FusedMultiplyAdd(x, b2, c6); d6 = Vector256.FusedMultiplyAdd(y, b2, d6);
                        c7 = Vector256.FusedMultiplyAdd(x, b3, c7); d7 = Vector256.FusedMultiplyAdd(y, b3, d7);
                    }
                    PutRow(ref g, i, j, cols, mode, tile, c0, c1, c2, c3, c4, c5, c6, c7);
                    PutRow(ref g, i + 1, j, cols, mode, tile, d0, d1, d2, d3, d4, d5, d6, d7);
                }
                if (i < g.M)
                {
                    float* a0 = g.A + (long)i * g.Lda + pc;
                    Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
                    float* bq = src;
                    for (int q = 0; q < kc; q++, bq += stride)
                    {
                        var x = Vector256.Create(a0[q]);
                        c0 = Vector256.FusedMultiplyAdd(x, Vector256.Load(bq), c0);
                        c1 = Vector256.FusedMultiplyAdd(x, Vector256.Load(bq + 8), c1);
                        c2 = Vector256.FusedMultiplyAdd(x, Vector256.Load(bq + 16), c2);
                        c3 = Vector256.FusedMultiplyAdd(x, Vector256.Load(bq + 24), c3);
                        c4 = Vector256.FusedMultiplyAdd(x, Vector256.Load(bq + 32), c4);
                        c5 = Vector256.FusedMultiplyAdd(x, Vector256.Load(bq + 40), c5);
                        c6 = Vector256.FusedMultiplyAdd(x, Vector256.Load(bq + 48), c6);
                        c7 = Vector256.FusedMultiplyAdd(x, Vector256.Load(bq + 56), c7);
                    }
                    PutRow(ref g, i, j, cols, mode, tile, c0, c1, c2, c3, c4, c5, c6, c7);
                }
            }
        }
    }

    /// <summary>Writes one row's 64 sums into C[i, j..j+cols) with the kernels' write-back formulas.</summary>
    private static void PutRow(ref SmallMArgs g, int i, int j, int cols, int mode, float* tile,
        Vector256<float> c0, Vector256<float> c1, Vector256<float> c2, Vector256<float> c3,
        Vector256<float> c4, Vector256<float> c5, Vector256<float> c6, Vector256<float> c7)
    {
        float* ci = g.C + (long)i * g.Ldc + j;
        bool full = cols == SmallMChunk;
        float* o = full ? ci : tile;
        int m = full ? mode : ModeStore;
        var va = Vector256.Create(full ? g.Alpha : 1f);
        var vb = Vector256.Create(g.Beta);
        Put(o, c0, m, va, vb); Put(o + 8, c1, m, va, vb); Put(o + 16, c2, m, va, vb); Put(o + 24, c3, m, va, vb);
        Put(o + 32, c4, m, va, vb); Put(o + 40, c5, m, va, vb); Put(o + 48, c6, m, va, vb); Put(o + 56, c7, m, va, vb);
        if (!full) PutEdge(tile, SmallMChunk, ci, g.Ldc, 1, cols, mode, g.Alpha, g.Beta);
    }

    /// <summary>panel[q·64 + c] = op(B)[pc + q, j + c] for c &lt; cols, zero for the rest of the 64.</summary>
    private static void PanelOfB(ref SmallMArgs g, float* panel, int pc, int kc, int j, int cols)
    {
        if (!g.TransB)
        {
            for (int q = 0; q < kc; q++)
            {
                float* s = g.B + (long)(pc + q) * g.Ldb + j;
                float* d = panel + q * SmallMChunk;
                int c = 0;
                for (; c < cols; c++) d[c] = s[c];
                for (; c < SmallMChunk; c++) d[c] = 0f;
            }
            return;
        }
        float* src = g.B + (long)j * g.Ldb + pc;
        int r = 0;
        for (; r + 8 <= cols; r += 8) Transpose8Rows(src + (long)r * g.Ldb, g.Ldb, panel + r, SmallMChunk, kc);
        for (; r < cols; r++)
            for (int q = 0; q < kc; q++) panel[q * SmallMChunk + r] = src[(long)r * g.Ldb + q];
        for (; r < SmallMChunk; r++)
            for (int q = 0; q < kc; q++) panel[q * SmallMChunk + r] = 0f;
    }
}

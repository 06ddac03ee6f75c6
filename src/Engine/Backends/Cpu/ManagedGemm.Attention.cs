namespace WhereToEdit.Engine.Backends.Cpu;

// One attention head's forward, fused: S = scale·Q·Kᵀ, P = softmax(S), O = P·V, a 12-query-row tile at a time, so a
// tile's scores stay in L1 between the two products. The unfused path (two GEMM calls and a softmax over the whole
// n×n score matrix) packed all of P again for P·V, an n×n transpose per head that cost as much as the product itself
// at n = 197. Same packing, kernels and k-blocking as the two GEMM calls (one k-block each), so every element of P
// and O is computed by the same operations: bit-identical to the unfused path.
public static unsafe partial class ManagedGemm
{
    /// <summary>
    /// Whether <see cref="AttentionHeadForward"/> takes this shape: the 12×32 AVX-512 kernel, and both products
    /// within one k-block (head dim and tokens ≤ KC), so that the FMA chains match the unfused GEMMs'.
    /// </summary>
    internal static bool CanFuseAttention(int tokens, int headDim)
        => DefaultKernel == KernelKind.V512 && tokens >= 1 && tokens <= KC && headDim >= 1 && headDim <= KC;

    [ThreadStatic] private static float[]? t_attention;

    /// <summary>
    /// O[i, :] (row stride <paramref name="ldo"/>) and P[i, :] (row stride n, into <paramref name="probs"/>) for one
    /// head: q, k, v are the head's columns of the qkv rows (row stride <paramref name="ld"/>). Single-threaded.
    /// </summary>
    internal static void AttentionHeadForward(float* q, float* k, float* v, int ld, int n, int hd, float scale,
        float* probs, float* o, int ldo)
    {
        const int mr = 12, nr = 32;
        int keyPanels = (n + nr - 1) / nr, valuePanels = (hd + nr - 1) / nr;
        int nPad = keyPanels * nr;
        long kFloats = (long)keyPanels * nr * hd, vFloats = (long)valuePanels * nr * n;
        long qFloats = (long)mr * hd, sFloats = (long)mr * nPad, aFloats = (long)mr * n;
        long total = kFloats + vFloats + qFloats + sFloats + aFloats + 5 * 16 + 16;
        if (t_attention is null || t_attention.Length < total)
            t_attention = GC.AllocateUninitializedArray<float>(checked((int)total), pinned: true);
        fixed (float* scratch = t_attention)
        {
            static float* Align(float* p) => (float*)(((nint)p + 63) & ~(nint)63);
            float* bK = Align(scratch);
            float* bV = Align(bK + kFloats);
            float* aQ = Align(bV + vFloats);
            float* sTile = Align(aQ + qFloats);
            float* aS = Align(sTile + sFloats);
            float* tmp = stackalloc float[12 * 32 + 16];
            float* tile = (float*)(((nint)tmp + 63) & ~(nint)63);

            // Kᵀ as the B of S = Q·Kᵀ (op(B)[p, j] = K[j, p]) and V as the B of O = P·V, packed once per head.
            var kJob = new Job { Kind = KernelKind.V512, TransB = true, N = n, K = hd, B = k, Ldb = ld };
            PackB(ref kJob, bK, 0, hd, 0, n, nr);
            var vJob = new Job { Kind = KernelKind.V512, TransB = false, N = hd, K = n, B = v, Ldb = ld };
            PackB(ref vJob, bV, 0, n, 0, hd, nr);
            var qJob = new Job { Kind = KernelKind.V512, TransA = false, M = n, K = hd, A = q, Lda = ld };
            var sJob = new Job { Kind = KernelKind.V512, TransA = false, M = mr, K = n, A = sTile, Lda = nPad };

            for (int ir = 0; ir < n; ir += mr)
            {
                int rows = Math.Min(mr, n - ir);
                PackA(ref qJob, aQ, ir, rows, 0, hd, mr);
                for (int jp = 0; jp < keyPanels; jp++)
                {
                    int cols = Math.Min(nr, n - jp * nr);
                    float* c = sTile + jp * nr;
                    if (rows <= 6) Kernel12x32Half(hd, aQ, bK + (long)jp * hd * nr, c, nPad, scale, 0f, ModeStore, rows, cols, tile);
                    else Kernel12x32(hd, aQ, bK + (long)jp * hd * nr, c, nPad, scale, 0f, ModeStore, rows, cols, tile);
                }
                for (int r = 0; r < rows; r++)
                {
                    var row = new Span<float>(sTile + (long)r * nPad, n);
                    CpuBackend.SoftmaxRow(row, row, 1f);
                    row.CopyTo(new Span<float>(probs + (long)(ir + r) * n, n));
                }
                sJob.M = rows;
                PackA(ref sJob, aS, 0, rows, 0, n, mr);
                for (int jp = 0; jp < valuePanels; jp++)
                {
                    int cols = Math.Min(nr, hd - jp * nr);
                    float* c = o + (long)ir * ldo + jp * nr;
                    if (rows <= 6) Kernel12x32Half(n, aS, bV + (long)jp * n * nr, c, ldo, 1f, 0f, ModeStore, rows, cols, tile);
                    else Kernel12x32(n, aS, bV + (long)jp * n * nr, c, ldo, 1f, 0f, ModeStore, rows, cols, tile);
                }
            }
        }
    }
}

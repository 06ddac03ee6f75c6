using WhereToEdit.Engine.Backends.Cpu;
using Xunit;

namespace WhereToEdit.Tests;

/// <summary>The allocation test measures process-wide allocations, so it runs with no other test class in parallel.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ManagedGemmSerialCollection
{
    public const string Name = "ManagedGemm serial";
}

public sealed unsafe class ManagedGemmTests
{
    private static readonly ManagedGemm.KernelKind[] Kinds =
        Enum.GetValues<ManagedGemm.KernelKind>().Where(k => k <= ManagedGemm.DefaultKernel).ToArray();

    /// <summary>A GEMM problem with its operands stored as the call sees them (padded leading dimensions).</summary>
    private sealed class Problem
    {
        public bool TransA, TransB;
        public int M, N, K, Lda, Ldb, Ldc;
        public float Alpha, Beta;
        public float[] A = [], B = [], C0 = [];

        public static Problem Random(Random rng, int m, int n, int k, bool transA, bool transB, int padA, int padB, int padC,
            float alpha, float beta, bool nanInC = false)
        {
            var p = new Problem
            {
                TransA = transA, TransB = transB, M = m, N = n, K = k, Alpha = alpha, Beta = beta,
                Lda = (transA ? m : k) + padA, Ldb = (transB ? k : n) + padB, Ldc = n + padC,
            };
            p.A = Fill(rng, (transA ? k : m) * p.Lda + 1);
            p.B = Fill(rng, (transB ? n : k) * p.Ldb + 1);
            p.C0 = Fill(rng, m * p.Ldc + 1);
            if (nanInC) Array.Fill(p.C0, float.NaN);
            return p;
        }

        private static float[] Fill(Random rng, int length)
        {
            var x = new float[length];
            for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
            return x;
        }

        public float OpA(int i, int p) => TransA ? A[p * Lda + i] : A[i * Lda + p];
        public float OpB(int p, int j) => TransB ? B[j * Ldb + p] : B[p * Ldb + j];

        public float[] Run(ManagedGemm.KernelKind kind, int threads)
        {
            var c = (float[])C0.Clone();
            fixed (float* pa = A, pb = B, pc = c)
            {
                ManagedGemm.Sgemm(kind, TransA, TransB, M, N, K, Alpha, pa, Lda, pb, Ldb, Beta, pc, Ldc, threads);
            }
            return c;
        }

        /// <summary>Checks c against a double-accumulated reference; padding of C must be untouched.</summary>
        public void Check(float[] c, string label)
        {
            double tol = 1e-5 * Math.Sqrt(Math.Max(K, 1)) + 1e-6;
            for (int i = 0; i < M; i++)
            {
                for (int j = 0; j < N; j++)
                {
                    double dot = 0, mag = 0;
                    for (int p = 0; p < K; p++)
                    {
                        double t = (double)OpA(i, p) * OpB(p, j);
                        dot += t;
                        mag += Math.Abs(t);
                    }
                    double old = C0[i * Ldc + j];
                    double expected = Alpha * dot + (Beta == 0 ? 0 : Beta * old);
                    double scale = Math.Abs(Alpha) * mag + (Beta == 0 ? 0 : Math.Abs(Beta * old)) + 1e-30;
                    double got = c[i * Ldc + j];
                    if (!(Math.Abs(got - expected) <= tol * scale))
                        Assert.Fail($"{label}: C[{i},{j}] = {got}, expected {expected} (scale {scale})");
                }
                for (int j = N; j < Ldc && i * Ldc + j < c.Length; j++)
                    if (BitConverter.SingleToInt32Bits(c[i * Ldc + j]) != BitConverter.SingleToInt32Bits(C0[i * Ldc + j]))
                        Assert.Fail($"{label}: padding C[{i},{j}] was written");
            }
            Assert.Equal(BitConverter.SingleToInt32Bits(C0[^1]), BitConverter.SingleToInt32Bits(c[^1]));
        }

        public override string ToString() =>
            $"m={M} n={N} k={K} tA={TransA} tB={TransB} lda={Lda} ldb={Ldb} ldc={Ldc} alpha={Alpha} beta={Beta}";
    }

    private static void AssertBitIdentical(float[] expected, float[] actual, string label)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{label}: element {i} differs: {expected[i]} vs {actual[i]}");
    }

    public static IEnumerable<object[]> Shapes()
    {
        int[][] shapes =
        [
            [1, 1, 1], [1, 1, 7], [2, 3, 1], [1, 37, 5], [37, 1, 5], [5, 7, 0],
            [12, 32, 16], [13, 33, 17], [11, 31, 255], [24, 64, 256], [25, 65, 257], [6, 16, 8],
            [7, 17, 9], [4, 8, 3], [3, 5, 513], [200, 3, 40], [3, 200, 40], [1, 300, 64],
            [197, 70, 64], [100, 130, 300], [50, 2100, 20], [193, 45, 31], [64, 64, 600],
            // last row tile of exactly 6 rows at full width: every row of the 6-row kernel variant is checked
            [6, 32, 8], [18, 40, 33], [30, 64, 20],
        ];
        foreach (var s in shapes) yield return [s[0], s[1], s[2]];
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void MatchesReference_AllTransposes_AllKernels(int m, int n, int k)
    {
        var rng = new Random(m * 1_000_003 + n * 1009 + k);
        foreach (bool transA in new[] { false, true })
        foreach (bool transB in new[] { false, true })
        {
            int pad = rng.Next(0, 2) * rng.Next(1, 5);
            float alpha = rng.Next(3) switch { 0 => 1f, 1 => -0.75f, _ => 2.5f };
            float beta = rng.Next(4) switch { 0 => 0f, 1 => 1f, 2 => -0.5f, _ => 1.25f };
            var prob = Problem.Random(rng, m, n, k, transA, transB, pad, rng.Next(0, 3), rng.Next(0, 3), alpha, beta);
            float[]? first = null;
            foreach (var kind in Kinds)
            {
                foreach (int threads in new[] { 1, 2 })
                {
                    var c = prob.Run(kind, threads);
                    string label = $"{prob} kernel={kind} threads={threads}";
                    if (first == null)
                    {
                        prob.Check(c, label);
                        first = c;
                    }
                    else
                    {
                        // Same FMA chains whatever the kernel width or thread count.
                        AssertBitIdentical(first, c, label);
                    }
                }
            }
        }
    }

    [Theory]
    [InlineData(300, 260, 700, false, true)]
    [InlineData(257, 2200, 130, false, false)]
    [InlineData(500, 97, 290, true, false)]
    [InlineData(130, 140, 150, true, true)]
    public void MatchesReference_Multithreaded_LargerShapes(int m, int n, int k, bool transA, bool transB)
    {
        var rng = new Random(m + n + k);
        var prob = Problem.Random(rng, m, n, k, transA, transB, 3, 5, 7, 0.5f, -1.5f);
        var c1 = prob.Run(ManagedGemm.DefaultKernel, 1);
        prob.Check(c1, prob + " threads=1");
        foreach (int threads in new[] { 2, 3, 4 })
            AssertBitIdentical(c1, prob.Run(ManagedGemm.DefaultKernel, threads), $"{prob} threads={threads}");
    }

    /// <summary>
    /// One or two rows take the small-m path (no packing of B); each row must equal, bit for bit, the same row of a
    /// taller call that runs the packed kernels: which path a call takes never changes a number. Shapes cover
    /// partial 64-column chunks, k across the 256 block boundary, padded leading dimensions and every write-back mode.
    /// </summary>
    [Theory]
    [InlineData(1, 1000, 768)]
    [InlineData(1, 3072, 257)]
    [InlineData(2, 65, 600)]
    [InlineData(2, 7, 5)]
    [InlineData(1, 64, 256)]
    [InlineData(2, 130, 1)]
    public void SmallM_RowsAreBitIdenticalToThePackedPath(int m, int n, int k)
    {
        Assert.True(ManagedGemm.IsSmallM(false, m) || !System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated);
        const int tall = 15;   // ≥ 3 rows: the packed kernels
        Assert.False(ManagedGemm.IsSmallM(false, tall));
        var rng = new Random(m * 7919 + n * 31 + k);
        foreach (bool transB in new[] { false, true })
        foreach (float beta in new[] { 0f, 1f, -0.5f })
        {
            float alpha = beta == 1f ? -0.75f : 1.5f;
            var big = Problem.Random(rng, tall, n, k, false, transB, 3, 2, 1, alpha, beta, nanInC: beta == 0f);
            var expected = big.Run(ManagedGemm.DefaultKernel, 2);
            foreach (int threads in new[] { 1, 2 })
            {
                // The first m rows of A and C are the small call's operands (row-major, same strides).
                var small = new Problem
                {
                    TransA = false, TransB = transB, M = m, N = n, K = k, Lda = big.Lda, Ldb = big.Ldb, Ldc = big.Ldc,
                    Alpha = alpha, Beta = beta, A = big.A, B = big.B, C0 = big.C0[..(m * big.Ldc)],
                };
                var c = small.Run(ManagedGemm.DefaultKernel, threads);
                AssertBitIdentical(expected[..(m * big.Ldc)], c, $"{small} threads={threads}");
            }
        }
    }

    /// <summary>The backend's pool runs the small-m path's column chunks in parallel: same bits as one thread.</summary>
    [Fact]
    public void SmallM_OnTheBackendPool_MatchesOneThread()
    {
        var rng = new Random(5);
        var prob = Problem.Random(rng, 1, 3072, 768, false, true, 0, 0, 0, 1f, 0f);
        var expected = prob.Run(ManagedGemm.DefaultKernel, 1);
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2, Gemm = GemmKind.Managed });
        using var a = be.FromHost("a", prob.A, prob.A.Length);
        using var b = be.FromHost("b", prob.B, prob.B.Length);
        using var c = be.FromHost("c", prob.C0, prob.C0.Length);
        for (int call = 0; call < 3; call++)   // the second sighting of a weight would be packed on the packed path
            be.Gemm(false, true, 1, 3072, 768, 1f, a, 0, prob.Lda, b, 0, prob.Ldb, 0f, c, 0, prob.Ldc);
        AssertBitIdentical(expected, c.ToArray(), "backend, 2 threads");
        Assert.Equal(0, be.PackedWeightBytes);   // one row: nothing packed ahead
    }

    [Theory]
    [InlineData(1f)]
    [InlineData(-2f)]
    public void BetaZero_IgnoresNaNInC(float alpha)
    {
        var rng = new Random(7);
        foreach (var (m, n, k) in new[] { (13, 35, 20), (120, 140, 100) })
        {
            var prob = Problem.Random(rng, m, n, k, false, true, 1, 1, 2, alpha, 0f, nanInC: true);
            foreach (var kind in Kinds)
                foreach (int threads in new[] { 1, 2 })
                {
                    var c = prob.Run(kind, threads);
                    prob.Check(c, $"{prob} kernel={kind} threads={threads}");
                }
        }
    }

    [Fact]
    public void DegenerateCases()
    {
        var rng = new Random(3);
        // k == 0: C = beta·C (beta == 0 → zeros even over NaN).
        var p = Problem.Random(rng, 5, 6, 0, false, false, 0, 0, 1, 1f, 0f, nanInC: true);
        var c = p.Run(ManagedGemm.DefaultKernel, 2);
        for (int i = 0; i < 5; i++) for (int j = 0; j < 6; j++) Assert.Equal(0f, c[i * p.Ldc + j]);
        Assert.True(float.IsNaN(c[6]));   // padding (ldc = 7) untouched
        p = Problem.Random(rng, 5, 6, 0, false, false, 0, 0, 0, 1f, 0.5f);
        c = p.Run(ManagedGemm.DefaultKernel, 1);
        for (int i = 0; i < 30; i++) Assert.Equal(p.C0[i] * 0.5f, c[i]);

        // alpha == 0: A and B are not read (NaN there must not leak), C = beta·C.
        p = Problem.Random(rng, 20, 40, 30, true, false, 0, 0, 0, 0f, 2f);
        Array.Fill(p.A, float.NaN);
        c = p.Run(ManagedGemm.DefaultKernel, 2);
        for (int i = 0; i < 800; i++) Assert.Equal(p.C0[i] * 2f, c[i]);

        // m == 0 or n == 0: no-op, even with null pointers.
        ManagedGemm.Sgemm(false, false, 0, 5, 5, 1f, null, 5, null, 5, 0f, null, 5, 2);
        ManagedGemm.Sgemm(false, false, 5, 0, 5, 1f, null, 5, null, 0, 0f, null, 0, 2);

        Assert.Throws<ArgumentOutOfRangeException>(() => ManagedGemm.Sgemm(false, false, 2, 2, 2, 1f, null, 1, null, 2, 0f, null, 2, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => ManagedGemm.Sgemm(false, false, 2, 2, -1, 1f, null, 1, null, 2, 0f, null, 2, 1));
    }

    [Fact]
    public void Deterministic_SameInputTwice_BitIdentical()
    {
        var rng = new Random(11);
        var prob = Problem.Random(rng, 301, 517, 600, false, true, 0, 0, 0, 1f, 0.75f);
        foreach (int threads in new[] { 1, 2 })
        {
            var c1 = prob.Run(ManagedGemm.DefaultKernel, threads);
            var c2 = prob.Run(ManagedGemm.DefaultKernel, threads);
            AssertBitIdentical(c1, c2, $"threads={threads}");
        }
        AssertBitIdentical(prob.Run(ManagedGemm.DefaultKernel, 1), prob.Run(ManagedGemm.DefaultKernel, 2), "threads 1 vs 2");
    }

    [Fact]
    public void ConcurrentSingleThreadedCallers_AreSafe()
    {
        var rng = new Random(5);
        var probs = Enumerable.Range(0, 4)
            .Select(i => Problem.Random(rng, 90 + 7 * i, 110 - 5 * i, 150 + 11 * i, i % 2 == 0, i / 2 == 0, 1, 2, 3, 1f, 0f))
            .ToArray();
        var expected = probs.Select(p => p.Run(ManagedGemm.DefaultKernel, 1)).ToArray();
        Exception? failure = null;
        var threads = Enumerable.Range(0, 4).Select(t => new Thread(() =>
        {
            try
            {
                for (int rep = 0; rep < 20; rep++)
                {
                    int i = (t + rep) % probs.Length;
                    // threads == 1 on most calls, 2 on some: the worker pool serializes the latter.
                    var c = probs[i].Run(ManagedGemm.DefaultKernel, rep % 3 == 0 ? 2 : 1);
                    AssertBitIdentical(expected[i], c, $"caller {t} rep {rep}");
                }
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref failure, e, null);
            }
        })).ToArray();
        foreach (var th in threads) th.Start();
        foreach (var th in threads) th.Join();
        Assert.Null(failure);
    }
}

[Collection(ManagedGemmSerialCollection.Name)]
public sealed unsafe class ManagedGemmAllocationTests
{
    [Fact]
    public void SteadyStateCalls_AllocateNothing()
    {
        const int m = 300, n = 700, k = 520;   // above the parallel threshold, several k-blocks and edge tiles
        var a = new float[m * k];
        var b = new float[k * n];
        var c = new float[m * n];
        for (int i = 0; i < a.Length; i++) a[i] = i % 7 - 3;
        for (int i = 0; i < b.Length; i++) b[i] = i % 5 - 2;

        fixed (float* pa = a, pb = b, pc = c)
        {
            float* ap = pa, bp = pb, cp = pc;
            void Call(bool tA, bool tB, int mm, int nn, int kk, int threads) =>
                ManagedGemm.Sgemm(tA, tB, mm, nn, kk, 1f, ap, tA ? mm : kk, bp, tB ? kk : nn, 0.5f, cp, nn, threads);

            // First calls may grow buffers and start workers.
            Call(false, true, m, n, k, 1);
            Call(false, true, m, n, k, 2);
            Call(true, false, m, n, k, 2);

            // Measured per thread (the caller, and inside each worker), so background allocations of the test
            // host cannot make this flaky.
            // Other tests running in parallel may replace the process-wide pool between two of these calls (a call
            // that wants more threads grows it), and a new pool allocates once: a steady state must show up in one
            // of three rounds; an implementation that allocates per call fails all three.
            var rounds = new List<(long Caller, long Workers)>();
            for (int round = 0; round < 3; round++)
            {
                long thread0 = GC.GetAllocatedBytesForCurrentThread();
                long workers0 = ManagedGemm.SharedPool.WorkerAllocatedBytes;
                Call(false, true, m, n, k, 1);
                Call(false, true, m, n, k, 2);
                Call(true, false, m, n, k, 2);
                Call(true, true, m / 2, n - 33, k / 3, 2);   // smaller sizes: buffers are reused
                Call(false, false, 17, 19, 23, 2);            // small: caller-only path
                rounds.Add((GC.GetAllocatedBytesForCurrentThread() - thread0, ManagedGemm.SharedPool.WorkerAllocatedBytes - workers0));
                if (rounds[^1] == (0, 0)) break;
            }
            Assert.True(rounds[^1] == (0, 0), $"bytes allocated (caller, workers) per round: {string.Join(", ", rounds)}");
        }
    }
}

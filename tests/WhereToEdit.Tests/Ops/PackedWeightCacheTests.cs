using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Tensors;
using Xunit;

namespace WhereToEdit.Tests.Ops;

/// <summary>
/// Prepacked GEMM weights (<see cref="PackedWeightCache"/>): a packed call is bit-identical to packing per call, a
/// weight is packed only once it is seen unchanged, and any write to it (copy-in, fill, an op's output, an optimizer
/// step) retires its pack.
/// </summary>
public sealed class PackedWeightCacheTests
{
    // x·Wᵀ with an fc1-like shape big enough to be packed (n·k ≥ PackedWeightCache.MinFloats), edge panels included.
    private const int M = 37, N = 300, K = 260;

    private static float[] Random(int length, int seed)
    {
        var rng = new Random(seed);
        var x = new float[length];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }

    /// <summary>x·op(W) on a backend that never packs: the reference for bit-equality.</summary>
    private static float[] Unpacked(float[] x, float[] w, bool transB, long wOffset = 0)
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2, Gemm = GemmKind.Managed, PackedWeightBytes = 0 });
        using var tx = be.FromHost("x", x, x.Length);
        using var tw = be.FromHost("w", w, w.Length);
        using var ty = be.Allocate("y", M * N);
        be.Gemm(false, transB, M, N, K, 1f, tx, 0, K, tw, wOffset, transB ? K : N, 0f, ty, 0, N);
        Assert.Equal(0, be.PackedWeightBytes);
        return ty.ToArray();
    }

    private static float[] Gemm(CpuBackend be, Tensor x, Tensor w, Tensor y, bool transB, long wOffset = 0)
    {
        be.Gemm(false, transB, M, N, K, 1f, x, 0, K, w, wOffset, transB ? K : N, 0f, y, 0, N);
        return y.ToArray();
    }

    [Theory]
    [InlineData(true, 0)]
    [InlineData(false, 0)]
    [InlineData(true, 5)]
    public void PackedCallsAreBitIdenticalAndPackOnTheSecondSighting(bool transB, int wOffset)
    {
        var x = Random(M * K, 1);
        var w = Random(N * K + wOffset, 2);
        var expected = Unpacked(x, w, transB, wOffset);

        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2, Gemm = GemmKind.Managed });
        using var tx = be.FromHost("x", x, x.Length);
        using var tw = be.FromHost("w", w, w.Length);
        using var ty = be.Allocate("y", M * N);
        Assert.Equal(expected, Gemm(be, tx, tw, ty, transB, wOffset));
        Assert.Equal(0, be.PackedWeightBytes);                 // first sighting: packed per call
        Assert.Equal(expected, Gemm(be, tx, tw, ty, transB, wOffset));
        Assert.True(be.PackedWeightBytes >= (long)N * K * sizeof(float), "the second sighting packs the weight");
        for (int i = 0; i < 3; i++) Assert.Equal(expected, Gemm(be, tx, tw, ty, transB, wOffset));
    }

    public static TheoryData<string> Writers => new() { "CopyFrom", "Fill", "Copy", "GemmOutput", "RmsProp" };

    [Theory]
    [MemberData(nameof(Writers))]
    public void AnyWriteToTheWeightRetiresItsPack(string writer)
    {
        var x = Random(M * K, 3);
        var w = Random(N * K, 4);
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2, Gemm = GemmKind.Managed });
        using var tx = be.FromHost("x", x, x.Length);
        using var tw = be.FromHost("w", w, w.Length);
        using var ty = be.Allocate("y", M * N);
        for (int i = 0; i < 3; i++) Gemm(be, tx, tw, ty, transB: true);
        Assert.True(be.PackedWeightBytes > 0);

        var other = Random(N * K, 5);
        switch (writer)
        {
            case "CopyFrom":
                tw.CopyFrom(other);
                break;
            case "Fill":
                be.Fill(tw, 0.25f);
                Array.Fill(other, 0.25f);
                break;
            case "Copy":
                using (var src = be.FromHost("src", other, other.Length)) be.Copy(src, 0, tw, 0, other.Length);
                break;
            case "GemmOutput":
            {
                // W (as an N×K matrix) = I·S: the weight written as a GEMM's C.
                var eye = new float[N * N];
                for (int i = 0; i < N; i++) eye[i * N + i] = 1f;
                using var ti = be.FromHost("eye", eye, eye.Length);
                using var ts = be.FromHost("s", other, other.Length);
                be.Gemm(false, false, N, K, N, 1f, ti, 0, N, ts, 0, K, 0f, tw, 0, K);
                break;
            }
            case "RmsProp":
            {
                using var grad = be.FromHost("g", Random(N * K, 6), N * K);
                using var state = be.Allocate("s", N * K);
                be.RmsPropStep(tw, grad, state, lr: 0.1f, alpha: 0.99f, eps: 1e-8f, weightDecay: 0f, UpdateMask.None(N * K));
                other = tw.ToArray();
                break;
            }
        }
        Assert.Equal(other, tw.ToArray());
        var expected = Unpacked(x, other, transB: true);
        for (int i = 0; i < 3; i++) Assert.Equal(expected, Gemm(be, tx, tw, ty, transB: true));
    }

    [Fact]
    public void ABudgetTooSmallOrZeroNeverPacksAndStaysExact()
    {
        var x = Random(M * K, 7);
        var w = Random(N * K, 8);
        var expected = Unpacked(x, w, transB: true);
        foreach (long budget in new[] { 0L, 1024L })
        {
            using var be = new CpuBackend(new CpuBackendOptions { Threads = 1, Gemm = GemmKind.Managed, PackedWeightBytes = budget });
            using var tx = be.FromHost("x", x, x.Length);
            using var tw = be.FromHost("w", w, w.Length);
            using var ty = be.Allocate("y", M * N);
            for (int i = 0; i < 3; i++) Assert.Equal(expected, Gemm(be, tx, tw, ty, transB: true));
            Assert.Equal(0, be.PackedWeightBytes);
        }
    }
}

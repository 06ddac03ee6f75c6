using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Tensors;
using Xunit;

namespace WhereToEdit.Tests.Ops;

/// <summary>
/// The CPU backend's linear forward, whose managed GEMM adds the bias to each tile as it finishes, gives the same bits
/// as the GEMM followed by the separate bias pass, on every path: per-call packing (first sighting of a weight), the
/// prepacked weight (later calls), several k-blocks and row blocks, partial tiles, one or two threads, OpenBLAS.
/// </summary>
public sealed class LinearForwardTests
{
    [SkippableTheory]
    [InlineData(GemmKind.Managed, 1)]
    [InlineData(GemmKind.Managed, 2)]
    [InlineData(GemmKind.OpenBlas, 2)]
    public void Linear_forward_is_bit_identical_to_gemm_then_bias(GemmKind gemm, int threads)
    {
        if (gemm == GemmKind.OpenBlas) Skip.IfNot(OpenBlas.IsAvailable, "OpenBLAS is not installed");
        using var be = new CpuBackend(new CpuBackendOptions { Threads = threads, Gemm = gemm });
        var rng = new Rng(7);
        float[] R(int n, float scale) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextNormal() * scale)).ToArray();
        foreach (var (rows, inF, outF) in new[] { (1, 16, 40), (3, 17, 45), (13, 300, 20), (197, 64, 768), (197, 600, 95), (300, 33, 70), (530, 257, 129) })
        {
            using var x = be.FromHost("x", R(rows * inF, 1f), rows, inF);
            using var w = be.FromHost("w", R(outF * inF, 0.3f), outF, inF);
            using var b = be.FromHost("b", R(outF, 1f), outF);
            using var fused = be.Allocate("fused", rows, outF);
            using var plain = be.Allocate("plain", rows, outF);
            for (int call = 0; call < 3; call++)   // the weight is packed per call, then prepacked (second sighting)
            {
                be.LinearForward(x, w, b, fused, rows, inF, outF);
                be.Gemm(false, true, rows, outF, inF, 1f, x, 0, inF, w, 0, inF, 0f, plain, 0, outF);
                be.AddBias(plain, b, rows, outF);
                AssertSameBits(plain.ToArray(), fused.ToArray(), $"{rows}×{inF}→{outF}, call {call}");
            }
            be.LinearForward(x, w, null, fused, rows, inF, outF);
            be.Gemm(false, true, rows, outF, inF, 1f, x, 0, inF, w, 0, inF, 0f, plain, 0, outF);
            AssertSameBits(plain.ToArray(), fused.ToArray(), $"{rows}×{inF}→{outF} without a bias");
        }
    }

    private static void AssertSameBits(float[] expected, float[] actual, string what)
    {
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]),
                $"{what}: element {i}: {actual[i]:R}, GEMM then bias {expected[i]:R}");
    }
}

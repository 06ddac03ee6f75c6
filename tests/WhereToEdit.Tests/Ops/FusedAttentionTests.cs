using WhereToEdit.Engine.Backends.Cpu;
using Xunit;

namespace WhereToEdit.Tests.Ops;

/// <summary>
/// The fused attention forward (<see cref="ManagedGemm.AttentionHeadForward"/>, a 12-row tile of scores at a time) is
/// bit-identical to the unfused S = scale·Q·Kᵀ, softmax, O = P·V through two GEMM calls, probabilities included.
/// </summary>
public sealed unsafe class FusedAttentionTests
{
    [Theory]
    [InlineData(2, 197, 12, 64)]   // ViT-B/16 at 224 px
    [InlineData(1, 50, 4, 16)]     // the Fashion-MNIST model's shape
    [InlineData(3, 13, 2, 40)]     // partial key and value panels, a ≤ 6-row last tile
    [InlineData(1, 300, 2, 32)]    // tokens > KC: the unfused path itself
    public void Fused_forward_matches_two_gemms_and_a_softmax_bit_for_bit(int batch, int tokens, int heads, int headDim)
    {
        int dim = heads * headDim, ld = 3 * dim;
        var rng = new Random(tokens * 31 + headDim);
        var qkv = new float[batch * tokens * ld];
        for (int i = 0; i < qkv.Length; i++) qkv[i] = (float)(rng.NextDouble() * 4 - 2);

        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2, Gemm = GemmKind.Managed });
        using var tq = be.FromHost("qkv", qkv, qkv.Length);
        using var to = be.Allocate("out", batch * tokens * dim);
        using var tp = be.Allocate("probs", batch * heads * tokens * tokens);
        be.AttentionForward(tq, to, tp, batch, tokens, heads, headDim);

        var expectedOut = new float[batch * tokens * dim];
        var expectedProbs = new float[batch * heads * tokens * tokens];
        float scale = 1f / MathF.Sqrt(headDim);
        fixed (float* pq = qkv, po = expectedOut, pp = expectedProbs)
        {
            for (int b = 0; b < batch; b++)
                for (int h = 0; h < heads; h++)
                {
                    float* q = pq + (long)b * tokens * ld + h * headDim, k = q + dim, v = q + 2 * dim;
                    float* s = pp + ((long)b * heads + h) * tokens * tokens;
                    ManagedGemm.Sgemm(false, true, tokens, tokens, headDim, scale, q, ld, k, ld, 0f, s, tokens, 1);
                    for (int r = 0; r < tokens; r++)
                    {
                        var row = new Span<float>(s + (long)r * tokens, tokens);
                        CpuBackend.SoftmaxRow(row, row, 1f);
                    }
                    ManagedGemm.Sgemm(false, false, tokens, headDim, tokens, 1f, s, tokens, v, ld, 0f, po + (long)b * tokens * dim + h * headDim, dim, 1);
                }
        }
        Assert.Equal(expectedProbs, tp.ToArray());
        Assert.Equal(expectedOut, to.ToArray());
        Assert.Equal(tokens <= 256, ManagedGemm.CanFuseAttention(tokens, headDim) || !System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated);
    }
}

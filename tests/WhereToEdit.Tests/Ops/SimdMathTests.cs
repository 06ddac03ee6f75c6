using System.Runtime.Intrinsics;
using WhereToEdit.Engine.Backends.Cpu;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Ops;

/// <summary>The single-precision SIMD exp behind the CPU backend's GELU, against exp in double precision.</summary>
public sealed class SimdMathTests(ITestOutputHelper output)
{
    [SkippableFact]
    public void Exp_is_within_two_ulp_of_exp_and_keeps_nan_zero_and_infinity()
    {
        Skip.IfNot(Vector512.IsHardwareAccelerated, "no 512-bit SIMD on this CPU: the CPU backend's GELU uses .NET's Vector256.Exp");
        // Every 97th float bit pattern over [-104, 89] (both signs), plus the edges.
        var xs = new List<float> { 0f, -0f, 1e-30f, -1e-30f, 88.7f, -87.3f, -103.9f, 0.5f * MathF.Log(2f), -0.5f * MathF.Log(2f) };
        for (int bits = 0; bits < 0x42D00000; bits += 97)   // |x| < 104
        {
            float v = BitConverter.Int32BitsToSingle(bits);
            if (v < 89f) xs.Add(v);
            xs.Add(-v);
        }
        double worstUlp = 0;
        float worstX = 0;
        var buf = new float[16];
        for (int i = 0; i < xs.Count; i += 16)
        {
            int n = Math.Min(16, xs.Count - i);
            Array.Clear(buf);
            xs.CopyTo(i, buf, 0, n);
            var e = SimdMath.Exp(Vector512.Create(buf));
            for (int j = 0; j < n; j++)
            {
                double exact = Math.Exp(buf[j]);
                if (exact < float.Epsilon) { Assert.True(e[j] == 0f || e[j] == float.Epsilon, $"exp({buf[j]:R}) = {e[j]:R}, expected 0"); continue; }
                double ulp = Ulp((float)exact);
                double err = Math.Abs(e[j] - exact) / ulp;
                if (err > worstUlp) (worstUlp, worstX) = (err, buf[j]);
            }
        }
        output.WriteLine($"{xs.Count} values: worst {worstUlp:F2} ulp at x = {worstX:R}");
        Assert.True(worstUlp <= 2.0, $"exp({worstX:R}) is {worstUlp:F2} ulp off");

        var special = SimdMath.Exp(Vector512.Create([float.NaN, float.NegativeInfinity, float.PositiveInfinity, -200f, 200f, 0f, 1f, -1f, 0, 0, 0, 0, 0, 0, 0, 0]));
        Assert.True(float.IsNaN(special[0]), "exp(NaN) must stay NaN");
        Assert.Equal(0f, special[1]);
        Assert.Equal(float.PositiveInfinity, special[2]);
        Assert.Equal(0f, special[3]);
        Assert.Equal(float.PositiveInfinity, special[4]);
        Assert.Equal(1f, special[5]);
    }

    private static double Ulp(float v)
    {
        int bits = BitConverter.SingleToInt32Bits(v);
        return Math.Abs((double)BitConverter.Int32BitsToSingle(bits + 1) - v);
    }
}

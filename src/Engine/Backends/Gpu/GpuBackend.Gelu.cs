using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// Exact (erf) GELU forward/backward without libdevice: Φ(x) = ½·erfc(−x/√2) with the same Numerical-Recipes
// erfc polynomial as the CPU backend (relative error < 1.2e-7), exp through XMath (PTX: ex2.approx on x·log2 e).
public sealed partial class GpuBackend
{
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, long> _geluForward = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, long> _geluBackward = null!;

    private void LoadGeluKernels()
    {
        _geluForward = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, long>(GeluForwardKernel);
        _geluBackward = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, long>(GeluBackwardKernel);
    }

    public void GeluForward(Tensor x, Tensor y, long n)
    {
        Need(x, n, "GELU input"); Need(y, n, "GELU output");
        var gx = Own(x, "x"); var gy = Own(y, "y");
        if (n > 0) _geluForward(Stream, Linear(n), gx.View, gy.View, n);
    }

    public void GeluBackward(Tensor x, Tensor dy, Tensor dx, long n)
    {
        Need(x, n, "GELU input"); Need(dy, n, "GELU output gradient"); Need(dx, n, "GELU input gradient");
        var gx = Own(x, "x"); var gdy = Own(dy, "dy"); var gdx = Own(dx, "dx");
        if (n > 0) _geluBackward(Stream, Linear(n), gx.View, gdy.View, gdx.View, n);
    }

    [GpuKernel]
    private static void GeluForwardKernel(ArrayView<float> x, ArrayView<float> y, long n)
    {
        for (long i = GlobalIndex(); i < n; i += GridStride())
        {
            float v = x[i];
            y[i] = v * NormalCdf(v);
        }
    }

    /// <summary>dx = dy·(Φ(x) + x·φ(x)); dy and dx may alias.</summary>
    [GpuKernel]
    private static void GeluBackwardKernel(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dx, long n)
    {
        for (long i = GlobalIndex(); i < n; i += GridStride())
        {
            float v = x[i];
            dx[i] = (NormalCdf(v) + v * NormalDensity(v)) * dy[i];
        }
    }

    // erfc(z) ≈ t·exp(−z² + P(t)), t = 1/(1 + z/2), z ≥ 0 (Numerical Recipes' erfcc coefficients, c0..c9).
    private const float ErfcC0 = -1.26551223f, ErfcC1 = 1.00002368f, ErfcC2 = 0.37409196f, ErfcC3 = 0.09678418f, ErfcC4 = -0.18628806f,
                        ErfcC5 = 0.27886807f, ErfcC6 = -1.13520398f, ErfcC7 = 1.48851587f, ErfcC8 = -0.82215223f, ErfcC9 = 0.17087277f;
    private const float InvSqrt2 = 0.70710678118654752f;
    private const float InvSqrt2Pi = 0.39894228040143268f;

    /// <summary>Φ(x), the standard normal CDF, with the CPU backend's arithmetic.</summary>
    private static float NormalCdf(float x)
    {
        float z = XMath.Abs(x) * InvSqrt2;
        float t = 1f / (1f + 0.5f * z);
        float poly = ErfcC0 + t * (ErfcC1 + t * (ErfcC2 + t * (ErfcC3 + t * (ErfcC4 + t * (ErfcC5 + t * (ErfcC6 + t * (ErfcC7 + t * (ErfcC8 + t * ErfcC9))))))));
        float erfcZ = t * XMath.Exp(-z * z + poly);
        return x >= 0f ? 1f - 0.5f * erfcZ : 0.5f * erfcZ;
    }

    /// <summary>φ(x), the standard normal density.</summary>
    private static float NormalDensity(float x) => InvSqrt2Pi * XMath.Exp(-0.5f * x * x);
}

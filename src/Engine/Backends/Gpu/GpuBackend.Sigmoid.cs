using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// The hypernetwork's clamped, scaled sigmoid forward/backward and the FT-L1 penalty gradient.
public sealed partial class GpuBackend
{
    internal struct SigmoidArgs
    {
        public long N;
        public float Scale, Lo, Hi;
    }

    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, SigmoidArgs> _sigmoidForward = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, SigmoidArgs> _sigmoidBackward = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, long, float> _l1Penalty = null!;

    private void LoadSigmoidKernels()
    {
        _sigmoidForward = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, SigmoidArgs>(SigmoidForwardKernel);
        _sigmoidBackward = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, SigmoidArgs>(SigmoidBackwardKernel);
        _l1Penalty = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, long, float>(L1PenaltyKernel);
    }

    public void SigmoidForward(Tensor x, Tensor y, long n, float scale, float lo, float hi)
    {
        Need(x, n, "sigmoid input"); Need(y, n, "sigmoid output");
        var gx = Own(x, "x"); var gy = Own(y, "y");
        if (n > 0) _sigmoidForward(Stream, Linear(n), gx.View, gy.View, new SigmoidArgs { N = n, Scale = scale, Lo = lo, Hi = hi });
    }

    public void SigmoidBackward(Tensor y, Tensor dy, Tensor dx, long n, float scale, float lo, float hi)
    {
        Need(y, n, "sigmoid output"); Need(dy, n, "sigmoid output gradient"); Need(dx, n, "sigmoid input gradient");
        var gy = Own(y, "y"); var gdy = Own(dy, "dy"); var gdx = Own(dx, "dx");
        if (n > 0) _sigmoidBackward(Stream, Linear(n), gy.View, gdy.View, gdx.View, new SigmoidArgs { N = n, Scale = scale, Lo = lo, Hi = hi });
    }

    public void L1PenaltyGradient(Tensor grad, Tensor w, Tensor w0, float c, long n)
    {
        Need(grad, n, "L1 penalty gradient"); Need(w, n, "L1 penalty weights"); Need(w0, n, "L1 penalty original weights");
        var gg = Own(grad, "grad"); var gw = Own(w, "w"); var g0 = Own(w0, "w0");
        if (n > 0) _l1Penalty(Stream, Linear(n), gg.View, gw.View, g0.View, n, c);
    }

    [GpuKernel]
    private static void SigmoidForwardKernel(ArrayView<float> x, ArrayView<float> y, SigmoidArgs a)
    {
        for (long i = GlobalIndex(); i < a.N; i += GridStride())
        {
            float s = 1f / (1f + XMath.Exp(-a.Scale * x[i]));
            y[i] = XMath.Clamp(s, a.Lo, a.Hi);
        }
    }

    /// <summary>The gradient passes only where the output lies strictly inside the clamp (see the CPU backend).</summary>
    [GpuKernel]
    private static void SigmoidBackwardKernel(ArrayView<float> y, ArrayView<float> dy, ArrayView<float> dx, SigmoidArgs a)
    {
        for (long i = GlobalIndex(); i < a.N; i += GridStride())
        {
            float s = y[i];
            dx[i] = s > a.Lo && s < a.Hi ? dy[i] * a.Scale * s * (1f - s) : 0f;
        }
    }

    [GpuKernel]
    private static void L1PenaltyKernel(ArrayView<float> grad, ArrayView<float> w, ArrayView<float> w0, long n, float c)
    {
        for (long i = GlobalIndex(); i < n; i += GridStride())
        {
            float d = w[i] - w0[i];
            if (d > 0f) grad[i] += c;
            else if (d < 0f) grad[i] -= c;
        }
    }
}

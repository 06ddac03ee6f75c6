using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// SGD, RMSprop and Adam/AdamW steps with torch.optim semantics, optionally restricted to a row or column mask
// (a device tensor). One thread per element (grid-strided); a thread whose row/column is masked out returns
// before reading or writing anything, so those parameters and their optimizer state stay bit-identical.
// On CUDA, masked SGD and RMSprop steps run the fused native kernels instead (GpuBackend.Native.cs): one thread per
// selected element, from the mask's cached index list.
public sealed partial class GpuBackend
{
    internal struct StepArgs
    {
        public long Count;
        public int Axis, Cols;              // Axis: 0 none, 1 rows (mask[i / Cols]), 2 columns (mask[i % Cols])
        public float Lr, WeightDecay, Alpha, Beta1, Beta2, Eps;
        public int Decoupled;
        public float StepSize, SqrtBias2;  // Adam: lr / (1 − β1^t), √(1 − β2^t)
    }

    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, StepArgs> _sgd = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, StepArgs> _rmsProp = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, StepArgs> _adam = null!;

    private void LoadOptimizerKernels()
    {
        _sgd = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, StepArgs>(SgdKernel);
        _rmsProp = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, StepArgs>(RmsPropKernel);
        _adam = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, StepArgs>(AdamKernel);
    }

    public void SgdStep(Tensor param, Tensor grad, float lr, float weightDecay, UpdateMask mask)
    {
        var (p, g, m, args) = Prepare(param, grad, null, null, mask);
        if (args.Count > 0 && UseNative(args, p, g, null))
        {
            NativeMaskedSgd(p, g, mask, lr, weightDecay);
            return;
        }
        args.Lr = lr;
        args.WeightDecay = weightDecay;
        if (args.Count > 0) _sgd(Stream, Linear(args.Count), p.View, g.View, m.View, args);
    }

    public void RmsPropStep(Tensor param, Tensor grad, Tensor squareAvg, float lr, float alpha, float eps, float weightDecay, UpdateMask mask)
    {
        var (p, g, m, args) = Prepare(param, grad, squareAvg, null, mask);
        if (args.Count > 0 && UseNative(args, p, g, (GpuTensor)squareAvg))
        {
            NativeMaskedRmsProp(p, g, (GpuTensor)squareAvg, mask, lr, alpha, eps, weightDecay);
            return;
        }
        args.Lr = lr;
        args.Alpha = alpha;
        args.Eps = eps;
        args.WeightDecay = weightDecay;
        if (args.Count > 0) _rmsProp(Stream, Linear(args.Count), p.View, g.View, Own(squareAvg, "optimizer state").View, m.View, args);
    }

    public void AdamStep(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
                         float weightDecay, bool decoupled, int step, UpdateMask mask)
    {
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), step, "Adam step count is 1-based");
        var (p, g, maskView, args) = Prepare(param, grad, m, v, mask);
        args.Lr = lr;
        args.Beta1 = beta1;
        args.Beta2 = beta2;
        args.Eps = eps;
        args.WeightDecay = weightDecay;
        args.Decoupled = decoupled ? 1 : 0;
        args.StepSize = (float)(lr / (1 - Math.Pow(beta1, step)));
        args.SqrtBias2 = (float)Math.Sqrt(1 - Math.Pow(beta2, step));
        if (args.Count > 0)
            _adam(Stream, Linear(args.Count), p.View, g.View, Own(m, "optimizer state").View, Own(v, "optimizer state").View, maskView.View, args);
    }

    /// <summary>
    /// A row/column-masked step goes to the fused native kernel when <see cref="NativeMaskedOptimizers"/> is on (CUDA by
    /// default) and parameter, gradient and state are distinct tensors (the native pointers are __restrict__).
    /// </summary>
    private bool UseNative(StepArgs args, GpuTensor p, GpuTensor g, GpuTensor? state)
        => args.Axis != 0 && _nativeMaskedOptimizers
           && !ReferenceEquals(p, g) && !ReferenceEquals(p, state) && !ReferenceEquals(g, state);

    /// <summary>Validates like the CPU backend; the mask view is a never-read stand-in when there is no mask.</summary>
    private (GpuTensor Param, GpuTensor Grad, GpuTensor Mask, StepArgs Args) Prepare(Tensor param, Tensor grad, Tensor? state1, Tensor? state2, UpdateMask mask)
    {
        ArgumentNullException.ThrowIfNull(param);
        ArgumentNullException.ThrowIfNull(grad);
        grad.ExpectShape(param.Shape);
        state1?.ExpectShape(param.Shape);
        state2?.ExpectShape(param.Shape);
        var p = Own(param, "parameter");
        var g = Own(grad, "gradient");
        if (state1 is not null) Own(state1, "optimizer state");
        if (state2 is not null) Own(state2, "optimizer state");
        var args = new StepArgs { Count = p.Length, Axis = 0, Cols = 1 };
        GpuTensor maskTensor = p;
        switch (mask.Axis)
        {
            case MaskAxis.None:
                break;
            case MaskAxis.Rows:
            case MaskAxis.Columns:
            {
                int length = mask.Axis == MaskAxis.Rows ? mask.Rows : mask.Cols;
                if ((long)mask.Rows * mask.Cols != param.Length)
                    throw new ArgumentException($"mask for '{param.Name}' {param.ShapeText}: given as {mask.Rows}×{mask.Cols}");
                if (mask.Mask is null) throw new ArgumentException($"mask for '{param.Name}': {mask.Axis} mask without a mask tensor");
                if (mask.Mask.Length != length)
                    throw new ArgumentException($"mask '{mask.Mask.Name}' for '{param.Name}' {param.ShapeText}: expected {length} {mask.Axis.ToString().ToLowerInvariant()} entries, got {mask.Mask.Length}");
                maskTensor = OwnReadOnly(mask.Mask, "mask");   // read only: its cached index list stays valid
                args.Axis = mask.Axis == MaskAxis.Rows ? 1 : 2;
                args.Cols = Math.Max(1, mask.Cols);
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(mask), mask.Axis, "unknown mask axis");
        }
        return (p, g, maskTensor, args);
    }

    // ---- kernels ----------------------------------------------------------------------------------

    private static bool Selected(ArrayView<float> mask, long i, StepArgs p)
        => p.Axis == 0 || mask[p.Axis == 1 ? i / p.Cols : i % p.Cols] != 0f;

    /// <summary>p −= lr·(g + wd·p).</summary>
    [GpuKernel]
    private static void SgdKernel(ArrayView<float> param, ArrayView<float> grad, ArrayView<float> mask, StepArgs p)
    {
        for (long i = GlobalIndex(); i < p.Count; i += GridStride())
        {
            if (!Selected(mask, i, p)) continue;
            float pv = param[i];
            float gv = grad[i] + pv * p.WeightDecay;
            param[i] = pv - gv * p.Lr;
        }
    }

    /// <summary>v = α·v + (1−α)·g², p −= lr·g/(√v + eps), g = grad + wd·p.</summary>
    [GpuKernel]
    private static void RmsPropKernel(ArrayView<float> param, ArrayView<float> grad, ArrayView<float> squareAvg, ArrayView<float> mask, StepArgs p)
    {
        for (long i = GlobalIndex(); i < p.Count; i += GridStride())
        {
            if (!Selected(mask, i, p)) continue;
            float pv = param[i];
            float gv = grad[i] + pv * p.WeightDecay;
            float v = squareAvg[i] * p.Alpha + gv * gv * (1f - p.Alpha);
            squareAvg[i] = v;
            param[i] = pv - gv * p.Lr / (XMath.Sqrt(v) + p.Eps);
        }
    }

    /// <summary>Adam (g += wd·p) or AdamW (p ·= 1 − lr·wd), bias-corrected as torch.optim.Adam.</summary>
    [GpuKernel]
    private static void AdamKernel(ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v,
        ArrayView<float> mask, StepArgs p)
    {
        for (long i = GlobalIndex(); i < p.Count; i += GridStride())
        {
            if (!Selected(mask, i, p)) continue;
            float pv = param[i];
            float gv = grad[i];
            if (p.Decoupled != 0) pv *= 1f - p.Lr * p.WeightDecay;
            else gv += pv * p.WeightDecay;
            float mv = m[i] * p.Beta1 + gv * (1f - p.Beta1);
            float vv = v[i] * p.Beta2 + gv * gv * (1f - p.Beta2);
            m[i] = mv;
            v[i] = vv;
            param[i] = pv - mv * p.StepSize / (XMath.Sqrt(vv) / p.SqrtBias2 + p.Eps);
        }
    }
}

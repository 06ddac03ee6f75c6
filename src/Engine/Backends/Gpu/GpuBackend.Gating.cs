using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// Meta-training's per-sample gated weights W'_b = W + g_b ⊙ Δ_b, the gate gradient Σ ∇W'_b ⊙ Δ_b over a row or
// column, and torch's binary cross-entropy (stage B). Same semantics as CpuBackend.Gating.cs / .Losses.cs.
public sealed partial class GpuBackend
{
    internal struct GateArgs
    {
        public long GatesOffset, GatesStride, Count;
        public int Batch, Rows, Cols, AlongRows;
        public float Addend;
    }

    internal struct BceArgs
    {
        public long N, Blocks;
        public double GradFactor;
        public int WantGradient;
    }

    private const int BceBlock = 1024;

    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GateArgs> _gatedCombine = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, GateArgs> _gateGradient = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<double>, BceArgs> _bcePartials = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<double>, ArrayView<float>, BceArgs, double> _bceSum = null!;
    private MemoryBuffer1D<double, Stride1D.Dense>? _bceScratch;

    private void LoadGatingKernels()
    {
        _gatedCombine = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GateArgs>(GatedCombineKernel);
        _gateGradient = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GateArgs>(GateGradientKernel);
        _bcePartials = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<double>, BceArgs>(BcePartialsKernel);
        _bceSum = Accelerator.LoadKernel<ArrayView<double>, ArrayView<float>, BceArgs, double>(BceSumKernel);
    }

    public void GatedCombine(Tensor weight, Tensor gates, long gatesOffset, long gatesStride, Tensor delta, Tensor output,
                             int batch, int rows, int cols, MaskAxis axis)
    {
        int length = OpChecks.GateLength(axis, rows, cols, "gated combine");
        if (batch <= 0 || rows <= 0 || cols <= 0) throw new ArgumentException($"gated combine: batch {batch}, rows {rows}, cols {cols} must be positive");
        long matrix = (long)rows * cols;
        Need(weight, matrix, "gated-combine weight"); Need(delta, batch * matrix, "gated-combine delta"); Need(output, batch * matrix, "gated-combine output");
        OpChecks.Gates(gates, gatesOffset, gatesStride, batch, length, "gated-combine gates");
        var args = new GateArgs { GatesOffset = gatesOffset, GatesStride = gatesStride, Count = batch * matrix, Batch = batch, Rows = rows, Cols = cols, AlongRows = axis == MaskAxis.Rows ? 1 : 0 };
        _gatedCombine(Stream, Linear(args.Count), Own(weight, "weight").View, Own(gates, "gates").View, Own(delta, "delta").View, Own(output, "output").View, args);
    }

    public void GateGradient(Tensor dweights, Tensor delta, Tensor output, long outputOffset, long outputStride,
                             int batch, int rows, int cols, MaskAxis axis, float addend)
    {
        int length = OpChecks.GateLength(axis, rows, cols, "gate gradient");
        if (batch <= 0 || rows <= 0 || cols <= 0) throw new ArgumentException($"gate gradient: batch {batch}, rows {rows}, cols {cols} must be positive");
        long matrix = (long)rows * cols;
        Need(dweights, batch * matrix, "gate-gradient weight gradient"); Need(delta, batch * matrix, "gate-gradient delta");
        OpChecks.Gates(output, outputOffset, outputStride, batch, length, "gate-gradient output");
        var args = new GateArgs
        {
            GatesOffset = outputOffset, GatesStride = outputStride, Count = (long)batch * length, Batch = batch, Rows = rows, Cols = cols,
            AlongRows = axis == MaskAxis.Rows ? 1 : 0, Addend = addend,
        };
        _gateGradient(Stream, Linear(args.Count), Own(dweights, "dweights").View, Own(delta, "delta").View, Own(output, "output").View, args);
    }

    public void BinaryCrossEntropy(Tensor probs, Tensor targets, Tensor loss, Tensor? dprobs, long n, float scale)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n), n, "binary cross-entropy needs at least one element");
        Need(probs, n, "BCE probabilities"); Need(targets, n, "BCE targets"); Need(loss, 1, "BCE loss");
        if (dprobs is not null) Need(dprobs, n, "BCE gradient");
        long blocks = (n + BceBlock - 1) / BceBlock;
        if (_bceScratch is null || _bceScratch.Length < blocks)
        {
            Stream.Synchronize();
            _bceScratch?.Dispose();
            _bceScratch = Accelerator.Allocate1D<double>(blocks);
        }
        var args = new BceArgs { N = n, Blocks = blocks, GradFactor = scale / (double)n, WantGradient = dprobs is null ? 0 : 1 };
        var gradient = dprobs is null ? Own(probs, "probs").View : Own(dprobs, "dprobs").View;   // never written without a gradient
        _bcePartials(Stream, Linear(blocks), Own(probs, "probs").View, Own(targets, "targets").View, gradient, _bceScratch.View, args);
        _bceSum(Stream, new KernelConfig(new Index1D(1), new Index1D(1)), _bceScratch.View, Own(loss, "loss").View, args, scale);
    }

    [GpuKernel]
    private static void GatedCombineKernel(ArrayView<float> w, ArrayView<float> gates, ArrayView<float> delta, ArrayView<float> output, GateArgs a)
    {
        long matrix = (long)a.Rows * a.Cols;
        for (long i = GlobalIndex(); i < a.Count; i += GridStride())
        {
            long b = i / matrix, within = i - b * matrix;
            long r = within / a.Cols, c = within - r * a.Cols;
            float g = gates[a.GatesOffset + b * a.GatesStride + (a.AlongRows != 0 ? r : c)];
            output[i] = w[within] + g * delta[i];
        }
    }

    /// <summary>One thread per (sample, gate): its row or column dot, summed in index order (deterministic).</summary>
    [GpuKernel]
    private static void GateGradientKernel(ArrayView<float> dw, ArrayView<float> delta, ArrayView<float> output, GateArgs a)
    {
        long length = a.AlongRows != 0 ? a.Rows : a.Cols;
        long matrix = (long)a.Rows * a.Cols;
        for (long i = GlobalIndex(); i < a.Count; i += GridStride())
        {
            long b = i / length, j = i - b * length;
            long base0 = b * matrix;
            float sum = 0f;
            if (a.AlongRows != 0)
                for (long k = 0; k < a.Cols; k++) sum += dw[base0 + j * a.Cols + k] * delta[base0 + j * a.Cols + k];
            else
                for (long k = 0; k < a.Rows; k++) sum += dw[base0 + k * a.Cols + j] * delta[base0 + k * a.Cols + j];
            output[a.GatesOffset + b * a.GatesStride + j] = a.Addend + sum;
        }
    }

    /// <summary>One thread per block of <see cref="BceBlock"/> elements: the block's loss sum in double, and the gradient.</summary>
    [GpuKernel]
    private static void BcePartialsKernel(ArrayView<float> p, ArrayView<float> y, ArrayView<float> dp, ArrayView<double> partials, BceArgs a)
    {
        for (long block = GlobalIndex(); block < a.Blocks; block += GridStride())
        {
            long from = block * BceBlock, to = XMath.Min(a.N, from + BceBlock);
            double sum = 0;
            for (long i = from; i < to; i++)
            {
                float x = p[i], t = y[i];
                float logX = XMath.Max(XMath.Log(x), -100f), log1mX = XMath.Max(XMath.Log(1f - x), -100f);
                sum -= t * logX + (1f - t) * log1mX;
                if (a.WantGradient != 0) dp[i] = (float)a.GradFactor * (x - t) / XMath.Max(x * (1f - x), 1e-12f);
            }
            partials[block] = sum;
        }
    }

    /// <summary>One thread adds the block sums in order: loss = scale·Σ/n.</summary>
    [GpuKernel]
    private static void BceSumKernel(ArrayView<double> partials, ArrayView<float> loss, BceArgs a, double scale)
    {
        if (GlobalIndex() != 0) return;
        double sum = 0;
        for (long i = 0; i < a.Blocks; i++) sum += partials[i];
        loss[0] = (float)(scale * sum / a.N);
    }
}

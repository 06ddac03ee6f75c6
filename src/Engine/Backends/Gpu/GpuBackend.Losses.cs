using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// Cross-entropy and temperature-scaled KL distillation, loss and logit gradient in one kernel, one group per row.
// Labels live on the device, so they cannot be validated on the host without a round trip: a row whose label is
// not a class index gets a NaN loss (and NaN gradient) instead of the CPU backend's exception.
public sealed partial class GpuBackend
{
    internal struct LossArgs
    {
        public int Rows, Classes, HasGradient;
        public float GradScale, Temperature;
    }

    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, LossArgs> _crossEntropy = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, LossArgs> _klDivergence = null!;

    private void LoadLossKernels()
    {
        _crossEntropy = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, LossArgs>(CrossEntropyKernel);
        _klDivergence = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, LossArgs>(KlDivergenceKernel);
    }

    public void CrossEntropy(Tensor logits, Tensor labels, Tensor losses, Tensor? dlogits, int rows, int classes, float gradScale)
    {
        Need(logits, (long)rows * classes, "logits"); Need(labels, rows, "labels"); Need(losses, rows, "losses");
        if (dlogits is not null) Need(dlogits, (long)rows * classes, "logit gradient");
        var gz = Own(logits, "logits"); var gy = Own(labels, "labels"); var gl = Own(losses, "losses");
        var gdz = dlogits is null ? null : Own(dlogits, "dlogits");
        if (rows == 0) return;
        var args = new LossArgs { Rows = rows, Classes = classes, HasGradient = gdz is null ? 0 : 1, GradScale = gradScale };
        _crossEntropy(Stream, PerRow(rows), gz.View, gy.View, gl.View, (gdz ?? gz).View, args);
    }

    public void KlDivergence(Tensor logits, Tensor targetProbs, Tensor losses, Tensor? dlogits, int rows, int classes, float temperature, float gradScale)
    {
        if (!(temperature > 0) || float.IsInfinity(temperature))
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "KL temperature must be positive and finite");
        Need(logits, (long)rows * classes, "logits"); Need(targetProbs, (long)rows * classes, "target probabilities"); Need(losses, rows, "losses");
        if (dlogits is not null) Need(dlogits, (long)rows * classes, "logit gradient");
        var gz = Own(logits, "logits"); var gp = Own(targetProbs, "targets"); var gl = Own(losses, "losses");
        var gdz = dlogits is null ? null : Own(dlogits, "dlogits");
        if (rows == 0) return;
        var args = new LossArgs { Rows = rows, Classes = classes, HasGradient = gdz is null ? 0 : 1, GradScale = gradScale, Temperature = temperature };
        _klDivergence(Stream, PerRow(rows), gz.View, gp.View, gl.View, (gdz ?? gz).View, args);
    }

    // ---- kernels ----------------------------------------------------------------------------------

    /// <summary>losses[r] = logsumexp(z) − z[label]; dlogits = gradScale·(softmax − onehot). dlogits is a stand-in when HasGradient = 0.</summary>
    [GpuKernel]
    private static void CrossEntropyKernel(ArrayView<float> logits, ArrayView<float> labels, ArrayView<float> losses,
        ArrayView<float> dlogits, LossArgs p)
    {
        var scratch = SharedMemory.Allocate<float>(2 * MaxWarps);
        int step = 0;   // reductions so far: alternates the scratch slot
        for (int r = Grid.IdxX; r < p.Rows; r += Grid.DimX)
        {
            long row = (long)r * p.Classes;
            float label = labels[r];
            int target = (int)label;
            bool valid = target == label && target >= 0 && target < p.Classes;
            float max = float.NegativeInfinity;
            for (int c = Group.IdxX; c < p.Classes; c += Group.DimX) max = XMath.Max(max, logits[row + c]);
            max = GroupMax(max, scratch, step++ & 1);
            float sum = 0f;
            for (int c = Group.IdxX; c < p.Classes; c += Group.DimX) sum += XMath.Exp(logits[row + c] - max);
            float logSumExp = max + XMath.Log(GroupSum(sum, scratch, step++ & 1));
            if (Group.IdxX == 0) losses[r] = valid ? logSumExp - logits[row + target] : float.NaN;
            if (p.HasGradient != 0)
                for (int c = Group.IdxX; c < p.Classes; c += Group.DimX)
                {
                    float g = XMath.Exp(logits[row + c] - logSumExp) * p.GradScale;
                    if (c == target) g -= p.GradScale;
                    dlogits[row + c] = valid ? g : float.NaN;
                }
        }
    }

    /// <summary>
    /// losses[r] = T²·Σ p·(log p − log q), q = softmax(z/T), 0·log 0 = 0; dlogits = gradScale·T·(q − p).
    /// </summary>
    [GpuKernel]
    private static void KlDivergenceKernel(ArrayView<float> logits, ArrayView<float> targets, ArrayView<float> losses,
        ArrayView<float> dlogits, LossArgs p)
    {
        var scratch = SharedMemory.Allocate<float>(2 * MaxWarps);
        int step = 0;   // reductions so far: alternates the scratch slot
        float invT = 1f / p.Temperature;
        for (int r = Grid.IdxX; r < p.Rows; r += Grid.DimX)
        {
            long row = (long)r * p.Classes;
            float max = float.NegativeInfinity;
            for (int c = Group.IdxX; c < p.Classes; c += Group.DimX) max = XMath.Max(max, logits[row + c]);
            max = GroupMax(max, scratch, step++ & 1);
            float sum = 0f;
            for (int c = Group.IdxX; c < p.Classes; c += Group.DimX) sum += XMath.Exp((logits[row + c] - max) * invT);
            float logSumExp = XMath.Log(GroupSum(sum, scratch, step++ & 1));
            float kl = 0f;
            for (int c = Group.IdxX; c < p.Classes; c += Group.DimX)
            {
                float logQ = (logits[row + c] - max) * invT - logSumExp;
                float target = targets[row + c];
                if (target > 0f) kl += target * (XMath.Log(target) - logQ);
                if (p.HasGradient != 0) dlogits[row + c] = p.GradScale * p.Temperature * (XMath.Exp(logQ) - target);
            }
            kl = GroupSum(kl, scratch, step++ & 1);
            if (Group.IdxX == 0) losses[r] = p.Temperature * p.Temperature * kl;
        }
    }
}

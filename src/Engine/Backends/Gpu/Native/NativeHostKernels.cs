using System.Text;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// The host emulation of the native kernels (ILGPU's CPU accelerator, and the CPU reference of the GPU check).

/// <summary>A kernel's trap (out-of-range or unsorted index, wrong block shape) in the host emulation.</summary>
internal sealed class NativeKernelTrapException(string kernel, string message) : InvalidOperationException($"{kernel}: trap: {message}");

/// <summary>
/// The host emulation of the native kernels, for ILGPU's CPU accelerator, whose buffer addresses are host addresses.
/// A launch is marshalled exactly as for the driver, read back from the kernelParams array by the kernel's parameter
/// kinds, and run by <see cref="NativeHostKernels"/> (the same IEEE operations in the same order as the CUDA source).
/// </summary>
internal sealed unsafe class HostNativeKernels(AcceleratorStream stream) : INativeLauncher
{
    public void Launch(NativeLaunch launch)
    {
        ArgumentNullException.ThrowIfNull(launch);
        launch.Validate();
        stream.Synchronize();   // the emulator's ILGPU kernels before this launch have finished
        int n = launch.Args.Length;
        ulong* slots = stackalloc ulong[n];
        void** pointers = stackalloc void*[n];
        NativeArgMarshal.Marshal(launch.Args, slots, pointers);
        NativeHostKernels.Run(launch.Kernel, NativeArgMarshal.Unmarshal(pointers, NativeKernelTable.Parameters(launch.Kernel)));
    }
}

/// <summary>
/// The native kernels as host code over raw addresses (the emulation and the CPU reference of the GPU check), following
/// native/wte_kernels.cu operation for operation: fp32, FMA only where the kernel writes one, the same trap conditions.
/// </summary>
internal static unsafe class NativeHostKernels
{
    public static void Run(NativeKernel kernel, NativeArg[] a)
    {
        string name = NativeKernelTable.EntryName(kernel);
        switch (kernel)
        {
            case NativeKernel.MaskedRmsPropRows or NativeKernel.MaskedRmsPropCols or NativeKernel.MaskedRmsPropRowsCompact or NativeKernel.MaskedRmsPropColsCompact:
                MaskedStep(name, kernel is NativeKernel.MaskedRmsPropCols or NativeKernel.MaskedRmsPropColsCompact,
                    kernel is NativeKernel.MaskedRmsPropRowsCompact or NativeKernel.MaskedRmsPropColsCompact,
                    (float*)a[0].AsPointer, (float*)a[1].AsPointer, (float*)a[2].AsPointer, (int*)a[3].AsPointer, a[4].AsInt, a[5].AsInt, a[6].AsInt,
                    rmsProp: true, a[7].AsFloat, a[8].AsFloat, a[9].AsFloat, a[10].AsFloat, a[11].AsFloat);
                break;
            case NativeKernel.MaskedSgdRows or NativeKernel.MaskedSgdCols or NativeKernel.MaskedSgdRowsCompact or NativeKernel.MaskedSgdColsCompact:
                MaskedStep(name, kernel is NativeKernel.MaskedSgdCols or NativeKernel.MaskedSgdColsCompact,
                    kernel is NativeKernel.MaskedSgdRowsCompact or NativeKernel.MaskedSgdColsCompact,
                    (float*)a[0].AsPointer, null, (float*)a[1].AsPointer, (int*)a[2].AsPointer, a[3].AsInt, a[4].AsInt, a[5].AsInt,
                    rmsProp: false, a[6].AsFloat, 0, 0, 0, a[7].AsFloat);
                break;
            case NativeKernel.Dw1RowsGather:
                Dw1RowsGather(name, (float*)a[0].AsPointer, (float*)a[1].AsPointer, (float*)a[2].AsPointer, (int*)a[3].AsPointer,
                    a[4].AsInt, a[5].AsInt, a[6].AsInt, a[7].AsInt, a[8].AsInt != 0);
                break;
            case NativeKernel.Dw2ColsGather:
                Dw2ColsGather(name, (float*)a[0].AsPointer, (float*)a[1].AsPointer, (float*)a[2].AsPointer, (int*)a[3].AsPointer,
                    a[4].AsInt, a[5].AsInt, a[6].AsInt, a[7].AsInt, a[8].AsInt != 0);
                break;
            default:
                PerSampleDelta(kernel == NativeKernel.PerSampleDeltaCols, (float*)a[0].AsPointer, (float*)a[1].AsPointer, (float*)a[2].AsPointer,
                    (float*)a[3].AsPointer, (float*)a[4].AsPointer, (float*)a[5].AsPointer, a[6].AsInt, a[7].AsInt, a[8].AsInt, a[9].AsInt);
                break;
        }
    }

    /// <summary>Selected index k: in [0, limit) and strictly above the previous one, else the kernel traps.</summary>
    private static int Checked(string kernel, int* idx, int k, int limit)
    {
        int i = idx[k];
        if ((uint)i >= (uint)limit || (k > 0 && idx[k - 1] >= i))
            throw new NativeKernelTrapException(kernel, $"index list entry {k} = {i} out of range [0, {limit}) or not strictly increasing");
        return i;
    }

    private static void MaskedStep(string kernel, bool columns, bool compact, float* p, float* v, float* grad, int* idx, int k, int rows, int cols,
                                   bool rmsProp, float lr, float alpha, float oneMinusAlpha, float eps, float weightDecay)
    {
        for (int kk = 0; kk < k; kk++)
        {
            int sel = Checked(kernel, idx, kk, columns ? cols : rows);
            for (long other = 0; other < (columns ? rows : cols); other++)
            {
                long r = columns ? other : sel, c = columns ? sel : other;
                long e = r * cols + c;
                float g = compact ? grad[columns ? r * k + kk : (long)kk * cols + c] : grad[e];
                float pv = p[e];
                if (weightDecay != 0f) g = g + weightDecay * pv;
                if (rmsProp)
                {
                    float va = alpha * v[e];
                    float vn = va + (oneMinusAlpha * g) * g;
                    v[e] = vn;
                    float denom = MathF.Sqrt(vn) + eps;
                    p[e] = pv - (lr * g) / denom;
                }
                else
                    p[e] = pv - lr * g;
            }
        }
    }

    private static int Gathered(string kernel, int* idx, int k, int limit)
    {
        int i = idx[k];
        if ((uint)i >= (uint)limit) throw new NativeKernelTrapException(kernel, $"gather index {k} = {i} out of range [0, {limit})");
        return i;
    }

    private static void Dw1RowsGather(string kernel, float* dW1c, float* dH, float* x, int* idx, int t, int d, int h, int k, bool accumulate)
    {
        for (int kk = 0; kk < k; kk++)
        {
            int hi = Gathered(kernel, idx, kk, h);
            for (int dd = 0; dd < d; dd++)
            {
                float acc = 0f;
                for (int tt = 0; tt < t; tt++) acc = MathF.FusedMultiplyAdd(dH[(long)tt * h + hi], x[(long)tt * d + dd], acc);
                float* o = dW1c + ((long)kk * d + dd);
                *o = accumulate ? *o + acc : acc;
            }
        }
    }

    private static void Dw2ColsGather(string kernel, float* dW2c, float* dY, float* a, int* idx, int t, int d, int h, int k, bool accumulate)
    {
        for (int kk = 0; kk < k; kk++)
        {
            int hi = Gathered(kernel, idx, kk, h);
            for (int dd = 0; dd < d; dd++)
            {
                float acc = 0f;
                for (int tt = 0; tt < t; tt++) acc = MathF.FusedMultiplyAdd(dY[(long)tt * d + dd], a[(long)tt * h + hi], acc);
                float* o = dW2c + ((long)dd * k + kk);
                *o = accumulate ? *o + acc : acc;
            }
        }
    }

    private static void PerSampleDelta(bool columns, float* output, float* x, float* w, float* delta, float* mask, float* bias, int s, int t, int inputs, int outputs)
    {
        for (long ss = 0; ss < s; ss++)
        {
            float* xs = x + ss * t * inputs, ds = delta + ss * outputs * inputs, os = output + ss * t * outputs;
            float* ms = mask == null ? null : mask + ss * (columns ? inputs : outputs);
            for (int tt = 0; tt < t; tt++)
                for (int o = 0; o < outputs; o++)
                {
                    float acc = 0f;
                    for (int i = 0; i < inputs; i++)
                    {
                        long e = (long)o * inputs + i;
                        float wv = w[e];
                        float m = ms == null ? 1f : ms[columns ? i : o];
                        float weff = m != 0f ? MathF.FusedMultiplyAdd(m, ds[e], wv) : wv;
                        acc = MathF.FusedMultiplyAdd(xs[(long)tt * inputs + i], weff, acc);
                    }
                    os[(long)tt * outputs + o] = bias == null ? acc : acc + bias[o];
                }
        }
    }
}

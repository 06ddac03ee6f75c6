using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// The native CUDA kernels (Native/*.cs) inside the backend:
//  * SgdStep / RmsPropStep with a row or column mask run the fused native masked kernel on CUDA (the index list of the
//    mask is built once per mask content, see MaskIndexList); on the CPU emulator they keep the ILGPU kernels.
//  * Internal ops for the editor and the meta-trainer, not part of IBackend: gather-GEMM weight gradients of the
//    selected hidden units only, compact masked optimizer steps, and the per-sample delta apply. They run the native
//    kernels on CUDA and their host emulation on the CPU emulator (the tests' path).
public sealed partial class GpuBackend
{
    private static readonly Lazy<(int Major, int Minor)> PtxTarget = new(() =>
        NativePtx.Target(NativePtx.ModuleText(NativePtx.ReadResource())) ?? throw new InvalidDataException($"{NativePtx.ResourceName} has no .target"));

    private INativeLauncher? _nativeLauncher;
    private string? _nativeUnavailable;
    private bool _nativeMaskedOptimizers;

    private void InitNative(bool enabled)
    {
        if (CudaAccelerator is not { } cuda) return;   // the emulator: host emulation for the internal ops, ILGPU kernels for IBackend
        if (!enabled)
        {
            _nativeUnavailable = "native kernels disabled (GpuBackendOptions.NativeKernels = false)";
            return;
        }
        var (major, minor) = PtxTarget.Value;
        var arch = cuda.Architecture;
        if (arch.Major * 10 + arch.Minor < major * 10 + minor)
        {
            _nativeUnavailable = $"the native PTX targets sm_{major}{minor}; {cuda.Name} is {arch} (rebuild native/ with -DWTE_CUDA_ARCH for it)";
            return;
        }
        _nativeMaskedOptimizers = true;
    }

    /// <summary>Whether the native kernels run here: on a CUDA device at least as new as the PTX target, or emulated on the host (CPU accelerator).</summary>
    internal bool NativeKernelsAvailable => _nativeUnavailable is null;

    /// <summary>One line for reports: what runs the native kernels, or why nothing does.</summary>
    internal string NativeKernelsStatus => _nativeUnavailable
        ?? (CudaAccelerator is null ? "host emulation (CPU accelerator)" : $"PTX sm_{PtxTarget.Value.Major}{PtxTarget.Value.Minor} on {Accelerator.Name}");

    /// <summary>
    /// Whether <see cref="SgdStep"/> / <see cref="RmsPropStep"/> with a row or column mask use the fused native kernels.
    /// True by default on CUDA (when available), false on the emulator. Settable for comparisons and tests: on the emulator,
    /// true routes the masked steps through the host emulation of the native kernels.
    /// </summary>
    internal bool NativeMaskedOptimizers
    {
        get => _nativeMaskedOptimizers;
        set
        {
            if (value && !NativeKernelsAvailable) throw new NotSupportedException(_nativeUnavailable);
            _nativeMaskedOptimizers = value;
        }
    }

    /// <summary>The launcher: the PTX module on CUDA (loaded on first use), the host emulation on the CPU accelerator.</summary>
    internal INativeLauncher NativeLauncher
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_nativeLauncher is not null) return _nativeLauncher;
            if (!NativeKernelsAvailable) throw new NotSupportedException(_nativeUnavailable);
            _nativeLauncher = CudaAccelerator is { } cuda ? new CudaNativeKernels(cuda, CudaStream!) : new HostNativeKernels(Stream);
            return _nativeLauncher;
        }
    }

    private void DisposeNative()
    {
        (_nativeLauncher as IDisposable)?.Dispose();
        _nativeLauncher = null;
    }

    private void Launch(NativeLaunch? launch)
    {
        if (launch is not null) NativeLauncher.Launch(launch);
    }

    // ---- index lists --------------------------------------------------------------------------------------

    /// <summary>A validated (sorted, distinct, in [0, limit)) index list on this backend; the caller disposes it.</summary>
    internal NativeIndexList CreateIndexList(ReadOnlySpan<int> indices, int limit)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new NativeIndexList(this, indices.ToArray(), limit, version: 0);
    }

    /// <summary>
    /// The indices of the non-zero entries of a mask tensor (limit = its length), cached on the tensor: rebuilt — one
    /// read of the mask to the host, which waits for the stream — only when the mask's <see cref="GpuTensor.Version"/>
    /// moved, i.e. after a host copy into it or an op that took it. The list belongs to the mask tensor (disposed with
    /// it, or replaced when the mask changes).
    /// </summary>
    internal NativeIndexList MaskIndexList(Tensor mask)
    {
        var m = OwnReadOnly(mask, "mask");
        if (m.MaskIndexCache is { } cached && cached.Version == m.Version) return cached;
        if (m.Length > int.MaxValue) throw new ArgumentException($"mask '{m.Name}' has {m.Length} entries; at most {int.MaxValue}");
        var values = new float[m.Length];
        m.CopyTo(values);   // waits for the stream: nothing queued still reads the previous list
        var list = new NativeIndexList(this, NativeIndexList.FromMask(values), (int)m.Length, m.Version);
        m.MaskIndexCache?.Dispose();
        m.MaskIndexCache = list;
        return list;
    }

    private NativeIndexList OwnList(NativeIndexList idx, int limit, string role)
    {
        ArgumentNullException.ThrowIfNull(idx, role);
        if (!ReferenceEquals(idx.Backend, this)) throw new ArgumentException($"{role} belongs to another GPU backend instance");
        if (idx.Count > 0 && idx.Indices[^1] >= limit)
            throw new ArgumentOutOfRangeException(role, idx.Indices[^1], $"{role}: index {idx.Indices[^1]} is outside [0, {limit})");
        return idx;
    }

    // ---- IBackend masked steps on the native kernels -------------------------------------------------------

    private void NativeMaskedSgd(GpuTensor p, GpuTensor g, UpdateMask mask, float lr, float weightDecay)
    {
        var idx = MaskIndexList(mask.Mask!);
        Launch(NativeLaunches.MaskedSgd(mask.Axis, compact: false, p.DevicePointer, g.DevicePointer, idx.DevicePointer, idx.Count,
            mask.Rows, mask.Cols, lr, weightDecay));
    }

    private void NativeMaskedRmsProp(GpuTensor p, GpuTensor g, GpuTensor v, UpdateMask mask, float lr, float alpha, float eps, float weightDecay)
    {
        var idx = MaskIndexList(mask.Mask!);
        // 1 − α rounded in float, as the CPU backend and the ILGPU kernel compute it.
        Launch(NativeLaunches.MaskedRmsProp(mask.Axis, compact: false, p.DevicePointer, v.DevicePointer, g.DevicePointer, idx.DevicePointer, idx.Count,
            mask.Rows, mask.Cols, lr, alpha, 1f - alpha, eps, weightDecay));
    }

    // ---- internal ops for the editor / meta-trainer ----------------------------------------------------------

    /// <summary>
    /// fc1 weight gradient of the selected hidden units only: dW1c[k, d] (+)= Σ_t dH[t, idx[k]]·X[t, d], with dH the
    /// gradient of fc1's output [tokens, hidden], X fc1's input [tokens, dim], dW1c [K, dim] (the compact gradient
    /// <see cref="MaskedRmsPropCompact"/> takes with <see cref="MaskAxis.Rows"/>). accumulate: add instead of overwrite.
    /// </summary>
    internal void GatherWeightGradientRows(Tensor dH, Tensor x, NativeIndexList idx, Tensor dW1c, int tokens, int dim, int hidden, bool accumulate)
    {
        CheckSizes(tokens, dim, hidden);
        OwnList(idx, hidden, "hidden-unit index list");
        Need(dH, (long)tokens * hidden, "gather gradient dH"); Need(x, (long)tokens * dim, "gather input X"); Need(dW1c, (long)idx.Count * dim, "compact fc1 gradient");
        NotAliased("gather fc1 gradient", dW1c, dH, x);
        var gdh = Own(dH, "dH"); var gx = Own(x, "X"); var gout = Own(dW1c, "dW1c");
        Launch(NativeLaunches.Dw1RowsGather(gout.DevicePointer, gdh.DevicePointer, gx.DevicePointer, idx.DevicePointer, tokens, dim, hidden, idx.Count, accumulate));
    }

    /// <summary>
    /// fc2 weight gradient of the selected hidden units only: dW2c[d, k] (+)= Σ_t dY[t, d]·A[t, idx[k]], with dY the
    /// gradient of fc2's output [tokens, dim], A fc2's input (the GELU output) [tokens, hidden], dW2c [dim, K] (the compact
    /// gradient <see cref="MaskedRmsPropCompact"/> takes with <see cref="MaskAxis.Columns"/>).
    /// </summary>
    internal void GatherWeightGradientColumns(Tensor dY, Tensor a, NativeIndexList idx, Tensor dW2c, int tokens, int dim, int hidden, bool accumulate)
    {
        CheckSizes(tokens, dim, hidden);
        OwnList(idx, hidden, "hidden-unit index list");
        Need(dY, (long)tokens * dim, "gather gradient dY"); Need(a, (long)tokens * hidden, "gather input A"); Need(dW2c, (long)dim * idx.Count, "compact fc2 gradient");
        NotAliased("gather fc2 gradient", dW2c, dY, a);
        var gdy = Own(dY, "dY"); var ga = Own(a, "A"); var gout = Own(dW2c, "dW2c");
        Launch(NativeLaunches.Dw2ColsGather(gout.DevicePointer, gdy.DevicePointer, ga.DevicePointer, idx.DevicePointer, tokens, dim, hidden, idx.Count, accumulate));
    }

    /// <summary>
    /// RMSprop on the selected rows (fc1, grad [K, cols]) or columns (fc2, grad [rows, K]) of param [rows, cols] from a
    /// compact gradient; everything else, and its state, is never touched. Same rule as <see cref="RmsPropStep"/>.
    /// </summary>
    internal void MaskedRmsPropCompact(MaskAxis axis, Tensor param, Tensor compactGrad, Tensor squareAvg, NativeIndexList idx, int rows, int cols,
                                       float lr, float alpha, float eps, float weightDecay)
    {
        var (p, g) = PrepareCompact(axis, param, compactGrad, squareAvg, idx, rows, cols);
        var v = Own(squareAvg, "optimizer state");
        Launch(NativeLaunches.MaskedRmsProp(axis, compact: true, p.DevicePointer, v.DevicePointer, g.DevicePointer, idx.DevicePointer, idx.Count,
            rows, cols, lr, alpha, 1f - alpha, eps, weightDecay));
    }

    /// <summary>SGD on the selected rows or columns from a compact gradient (see <see cref="MaskedRmsPropCompact"/>).</summary>
    internal void MaskedSgdCompact(MaskAxis axis, Tensor param, Tensor compactGrad, NativeIndexList idx, int rows, int cols, float lr, float weightDecay)
    {
        var (p, g) = PrepareCompact(axis, param, compactGrad, null, idx, rows, cols);
        Launch(NativeLaunches.MaskedSgd(axis, compact: true, p.DevicePointer, g.DevicePointer, idx.DevicePointer, idx.Count, rows, cols, lr, weightDecay));
    }

    private (GpuTensor Param, GpuTensor Grad) PrepareCompact(MaskAxis axis, Tensor param, Tensor compactGrad, Tensor? state, NativeIndexList idx, int rows, int cols)
    {
        ArgumentNullException.ThrowIfNull(param);
        ArgumentNullException.ThrowIfNull(compactGrad);
        if (axis is not (MaskAxis.Rows or MaskAxis.Columns)) throw new ArgumentOutOfRangeException(nameof(axis), axis, "a compact step selects rows or columns");
        if (rows < 0 || cols < 0 || (long)rows * cols != param.Length)
            throw new ArgumentException($"parameter '{param.Name}' {param.ShapeText} given as {rows}×{cols}");
        state?.ExpectShape(param.Shape);
        OwnList(idx, axis == MaskAxis.Rows ? rows : cols, "index list");
        Need(compactGrad, axis == MaskAxis.Rows ? (long)idx.Count * cols : (long)rows * idx.Count, "compact gradient");
        NotAliased("compact masked step", param, compactGrad, state);
        if (state is not null) NotAliased("compact masked step", state, compactGrad);
        return (Own(param, "parameter"), Own(compactGrad, "compact gradient"));
    }

    /// <summary>
    /// Batched meta-training's per-sample linear layer: out[s,t,o] = Σ_i X[s,t,i]·(W[o,i] + m·delta[s,o,i]) (+ bias[o]), with
    /// X [samples, tokens, in], W [out, in] shared, delta [samples, out, in], out [samples, tokens, out] (overwritten);
    /// m = mask[s, o] for <see cref="MaskAxis.Rows"/> (fc1: mask [samples, out]) or mask[s, i] for
    /// <see cref="MaskAxis.Columns"/> (fc2: mask [samples, in]); a null mask means all ones, a null bias none. Where m = 0
    /// the delta is not read and W is used exactly.
    /// </summary>
    internal void PerSampleDeltaLinear(MaskAxis axis, Tensor output, Tensor x, Tensor w, Tensor delta, Tensor? mask, Tensor? bias,
                                       int samples, int tokens, int inFeatures, int outFeatures)
    {
        if (samples < 0 || tokens < 0 || inFeatures < 0 || outFeatures < 0)
            throw new ArgumentOutOfRangeException(nameof(samples), $"negative size (samples {samples}, tokens {tokens}, in {inFeatures}, out {outFeatures})");
        if (axis is not (MaskAxis.Rows or MaskAxis.Columns)) throw new ArgumentOutOfRangeException(nameof(axis), axis, "per-sample deltas gate rows or columns");
        Need(output, (long)samples * tokens * outFeatures, "per-sample output");
        Need(x, (long)samples * tokens * inFeatures, "per-sample input");
        Need(w, (long)outFeatures * inFeatures, "shared weight");
        Need(delta, (long)samples * outFeatures * inFeatures, "per-sample delta");
        if (mask is not null) Need(mask, (long)samples * (axis == MaskAxis.Rows ? outFeatures : inFeatures), "per-sample mask");
        if (bias is not null) Need(bias, outFeatures, "bias");
        NotAliased("per-sample delta", output, x, w, delta, mask, bias);
        var go = Own(output, "output"); var gx = Own(x, "X"); var gw = Own(w, "W"); var gd = Own(delta, "delta");
        IntPtr maskPtr = mask is null ? IntPtr.Zero : Own(mask, "mask").DevicePointer;
        IntPtr biasPtr = bias is null ? IntPtr.Zero : Own(bias, "bias").DevicePointer;
        Launch(NativeLaunches.PerSampleDelta(axis, go.DevicePointer, gx.DevicePointer, gw.DevicePointer, gd.DevicePointer, maskPtr, biasPtr,
            samples, tokens, inFeatures, outFeatures));
    }

    /// <summary>The native kernels' pointers are __restrict__: an output may not be one of the inputs.</summary>
    private static void NotAliased(string op, Tensor output, params Tensor?[] inputs)
    {
        foreach (var input in inputs)
            if (ReferenceEquals(output, input)) throw new ArgumentException($"{op}: output '{output.Name}' is also an input");
    }

    private static void CheckSizes(int tokens, int dim, int hidden)
    {
        if (tokens < 0 || dim < 0 || hidden < 0)
            throw new ArgumentOutOfRangeException(nameof(tokens), $"negative size (tokens {tokens}, dim {dim}, hidden {hidden})");
    }
}

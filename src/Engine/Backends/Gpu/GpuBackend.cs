using System.Reflection;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

public sealed record GpuBackendOptions
{
    /// <summary>Index among the CUDA devices ILGPU reports.</summary>
    public int DeviceIndex { get; init; }

    /// <summary>ILGPU's IR optimisation level for kernels compiled to PTX.</summary>
    public OptimizationLevel Optimization { get; init; } = OptimizationLevel.O2;

    /// <summary>Compile Debug.Assert and out-of-range checks into device kernels (slow; for debugging).</summary>
    public bool DeviceAssertions { get; init; }

    /// <summary>
    /// Use the native PTX kernels (native/) for row/column-masked SGD and RMSprop on CUDA devices at least as new as the
    /// PTX target (sm_90). Off: every op runs ILGPU kernels.
    /// </summary>
    public bool NativeKernels { get; init; } = true;
}

/// <summary>Marks a static method as an ILGPU kernel of <see cref="GpuBackend"/> (all explicitly grouped).</summary>
[AttributeUsage(AttributeTargets.Method)]
internal sealed class GpuKernelAttribute : Attribute;

/// <summary>
/// The ILGPU backend: every <see cref="IBackend"/> op as explicitly grouped ILGPU kernels, all issued on one
/// accelerator stream with no host round trip inside an op (only sizes are validated on the host). Runs on a
/// CUDA device (<see cref="Create"/>, <see cref="TryCreateCuda(out GpuBackend?, out string)"/>) or, for tests, on
/// ILGPU's CPU accelerator, which emulates groups, barriers, shared memory and warp shuffles with host threads.
/// Organised like the CPU backend, one file per op family, each with its backward: GpuBackend.Gemm.cs,
/// GpuBackend.LayerNorm.cs, GpuBackend.Gelu.cs, GpuBackend.Attention.cs, GpuBackend.Patches.cs,
/// GpuBackend.Losses.cs, GpuBackend.Optimizers.cs. Kernels are compiled once, at construction.
/// </summary>
public sealed partial class GpuBackend : IBackend
{
    /// <summary>Threads per group of the elementwise and column kernels, and of the row kernels on CUDA; a multiple of every warp size used.</summary>
    private const int BlockThreads = 256;

    /// <summary>Most warps a group can have (shared scratch of the group reductions).</summary>
    private const int MaxWarps = 64;

    private readonly Context? _ownedContext;
    private readonly bool _ownsAccelerator;
    private readonly int _maxGroups, _maxRowGroups, _rowThreads;
    private bool _disposed;

    /// <summary>
    /// Launch shapes that may differ by accelerator. Kernels take any shape of these; the GEMM's 16×16 groups and the
    /// 256-thread elementwise/column groups are fixed.
    /// </summary>
    /// <param name="RowThreads">Threads per group of the one-group-per-row kernels (a multiple of the warp size, ≤ 256).</param>
    /// <param name="MaxRowGroups">Most groups of a row kernel (rows beyond are grid-strided).</param>
    /// <param name="MaxGroups">Most groups of an elementwise or column kernel (grid-strided beyond).</param>
    internal sealed record LaunchShape(int RowThreads, int MaxRowGroups, int MaxGroups)
    {
        /// <summary>
        /// On ILGPU's CPU accelerator every barrier and warp shuffle is a rendezvous of host threads, so the emulator
        /// runs the row kernels with small groups and few of them (same code, fewer simulated threads).
        /// </summary>
        public static readonly LaunchShape Emulator = new(RowThreads: 32, MaxRowGroups: 8, MaxGroups: 4);

        public static LaunchShape For(Accelerator accelerator)
            => accelerator.AcceleratorType == AcceleratorType.CPU
                ? Emulator
                : new(BlockThreads, 65535,
                      Math.Max(1, accelerator.NumMultiprocessors) * Math.Max(1, accelerator.MaxNumThreadsPerMultiprocessor / BlockThreads) * 4);
    }

    /// <summary>Runs every op on the given accelerator (typically ILGPU's CPU accelerator in tests); the caller keeps ownership of it.</summary>
    public GpuBackend(CPUAccelerator accelerator)
        : this(accelerator ?? throw new ArgumentNullException(nameof(accelerator)), null, ownsAccelerator: false, LaunchShape.For(accelerator)) { }

    private GpuBackend(Accelerator accelerator, Context? ownedContext, bool ownsAccelerator, LaunchShape shape, bool nativeKernels = true)
    {
        Accelerator = accelerator;
        _ownedContext = ownedContext;
        _ownsAccelerator = ownsAccelerator;
        if (accelerator.MaxNumThreadsPerGroup < BlockThreads || BlockThreads % accelerator.WarpSize != 0 || BlockThreads / accelerator.WarpSize > MaxWarps)
            throw new NotSupportedException(
                $"accelerator '{accelerator.Name}': groups of {BlockThreads} threads in warps of {accelerator.WarpSize} are needed (max group {accelerator.MaxNumThreadsPerGroup})");
        if (shape.RowThreads <= 0 || shape.RowThreads > BlockThreads || shape.RowThreads % accelerator.WarpSize != 0 || shape.MaxRowGroups <= 0 || shape.MaxGroups <= 0)
            throw new ArgumentException($"launch shape {shape} does not fit warps of {accelerator.WarpSize}", nameof(shape));
        Shape = shape;
        _maxGroups = shape.MaxGroups;
        _maxRowGroups = shape.MaxRowGroups;
        _rowThreads = shape.RowThreads;
        Stream = accelerator.CreateStream();
        LoadMemoryKernels();
        LoadGemmKernels();
        LoadGeluKernels();
        LoadSigmoidKernels();
        LoadGatingKernels();
        LoadLayerNormKernels();
        LoadAttentionKernels();
        LoadPatchKernels();
        LoadLossKernels();
        LoadOptimizerKernels();
        InitNative(nativeKernels);
    }

    // ---- construction -----------------------------------------------------------------------------

    /// <summary>A backend on a CUDA device; throws with the reason when there is none.</summary>
    public static GpuBackend Create(GpuBackendOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!TryCreateCuda(options, out var backend, out string reason)) throw new InvalidOperationException(reason);
        return backend!;
    }

    /// <summary>A backend on CUDA device 0, or false and why not (never throws for a missing driver or device).</summary>
    public static bool TryCreateCuda(out GpuBackend? backend, out string reason) => TryCreateCuda(new GpuBackendOptions(), out backend, out reason);

    public static bool TryCreateCuda(GpuBackendOptions options, out GpuBackend? backend, out string reason)
    {
        ArgumentNullException.ThrowIfNull(options);
        backend = null;
        if (!CudaDriver.TryLocate(out reason)) return false;
        Context? context = null;
        Accelerator? accelerator = null;
        try
        {
            context = Context.Create(builder =>
            {
                builder.Cuda().EnableAlgorithms().Optimize(options.Optimization);
                if (options.DeviceAssertions) builder.Assertions();
            });
            var devices = context.GetCudaDevices();
            if (devices.Count == 0)
            {
                reason = $"no CUDA device: the driver ({CudaDriver.LoadedFrom}) loaded but ILGPU found no usable device (cuInit failed, no GPU visible, or an unsupported architecture/driver)";
                context.Dispose();
                return false;
            }
            if (options.DeviceIndex < 0 || options.DeviceIndex >= devices.Count)
            {
                reason = $"CUDA device index {options.DeviceIndex} out of range: {devices.Count} device(s) found";
                context.Dispose();
                return false;
            }
            accelerator = devices[options.DeviceIndex].CreateCudaAccelerator(context);
            backend = new GpuBackend(accelerator, context, ownsAccelerator: true, LaunchShape.For(accelerator), options.NativeKernels);
            reason = $"CUDA device {options.DeviceIndex}: {accelerator.Name}";
            return true;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            accelerator?.Dispose();
            context?.Dispose();
            reason = $"no CUDA device: {e.GetType().Name}: {e.Message}";
            return false;
        }
    }

    /// <summary>
    /// A backend on ILGPU's CPU accelerator configured as a small GPU (one multiprocessor, groups of up to 256
    /// threads, warps of 4): every kernel runs with real groups, barriers, shared memory and warp shuffles, emulated
    /// by host threads. For tests: slow (each barrier or shuffle is a rendezvous of host threads), so keep shapes tiny.
    /// </summary>
    public static GpuBackend CreateCpuEmulator() => CreateCpuEmulator(warpSize: 4, LaunchShape.Emulator);

    /// <summary>The emulator with a chosen warp size and launch shape (e.g. the GPU's 256-thread row groups).</summary>
    internal static GpuBackend CreateCpuEmulator(int warpSize, LaunchShape shape)
    {
        var device = new CPUDevice(numThreadsPerWarp: warpSize, numWarpsPerMultiprocessor: BlockThreads / warpSize, numMultiprocessors: 1);
        var context = Context.Create(builder => builder.CPU(device).EnableAlgorithms());
        try
        {
            var accelerator = context.CreateCPUAccelerator(0, CPUAcceleratorMode.Parallel);
            return new GpuBackend(accelerator, context, ownsAccelerator: true, shape);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    // ---- properties ---------------------------------------------------------------------------------

    public string Name => $"gpu (ILGPU {Accelerator.AcceleratorType}: {Accelerator.Name})";

    /// <summary>One stream.</summary>
    public int Threads => 1;

    internal Accelerator Accelerator { get; }

    internal LaunchShape Shape { get; }

    /// <summary>The one stream every op and host copy of this backend is issued on.</summary>
    internal AcceleratorStream Stream { get; }

    /// <summary>The CUDA accelerator (for native PTX kernels loaded through ILGPU's CudaAPI), or null on the CPU emulator.</summary>
    internal CudaAccelerator? CudaAccelerator => Accelerator as CudaAccelerator;

    /// <summary>The CUDA stream behind <see cref="Stream"/> (CUstream: <c>CudaStream.StreamPtr</c>), or null on the CPU emulator.</summary>
    internal CudaStream? CudaStream => Stream as CudaStream;

    /// <summary>The device address of a tensor's element 0 (a CUdeviceptr on CUDA).</summary>
    internal static IntPtr DevicePointer(Tensor t) => Gpu(t, "native kernel argument").DevicePointer;

    /// <summary>Every kernel method of the backend (for PTX compilation checks).</summary>
    internal static IReadOnlyList<MethodInfo> KernelMethods { get; } = typeof(GpuBackend)
        .GetMethods(BindingFlags.Static | BindingFlags.NonPublic | BindingFlags.Public)
        .Where(m => m.GetCustomAttribute<GpuKernelAttribute>() is not null)
        .OrderBy(m => m.Name, StringComparer.Ordinal)
        .ToArray();

    public void Dispose()
    {
        if (_disposed) return;
        DisposeNative();   // unloads the PTX module while the context is alive
        _disposed = true;
        _attentionScratch?.Dispose();
        _bceScratch?.Dispose();
        Stream.Dispose();
        if (_ownsAccelerator) Accelerator.Dispose();
        _ownedContext?.Dispose();
    }

    // ---- helpers --------------------------------------------------------------------------------------

    internal static GpuTensor Gpu(Tensor t, string role)
    {
        ArgumentNullException.ThrowIfNull(t, role);
        return t as GpuTensor ?? throw new ArgumentException($"tensor '{t.Name}' ({role}) belongs to backend '{t.Backend.Name}', not a GPU backend");
    }

    /// <summary>A tensor of this backend given to an op; counts as written (its <see cref="GpuTensor.Version"/> moves).</summary>
    private GpuTensor Own(Tensor t, string role)
    {
        var g = OwnReadOnly(t, role);
        g.MarkWritten();
        return g;
    }

    /// <summary>A tensor of this backend that the op only reads and whose version must not move (an optimizer step's mask).</summary>
    private GpuTensor OwnReadOnly(Tensor t, string role)
    {
        var g = Gpu(t, role);
        if (!ReferenceEquals(g.Backend, this))
            throw new ArgumentException($"tensor '{t.Name}' ({role}) belongs to another GPU backend instance");
        return g;
    }

    private static void Need(Tensor t, long count, string role) => t.ExpectRange(0, count, role);

    private static int CheckedInt(long value, string what)
        => value is >= 0 and <= int.MaxValue ? (int)value : throw new ArgumentOutOfRangeException(what, value, $"{what} must fit in 32 bits");

    /// <summary>Launch shape of a grid-stride 1-D kernel over <paramref name="n"/> items.</summary>
    private KernelConfig Linear(long n)
        => new(new Index1D((int)Math.Clamp((n + BlockThreads - 1) / BlockThreads, 1, _maxGroups)), new Index1D(BlockThreads));

    /// <summary>Launch shape of a one-group-per-row kernel (the rows are grid-strided).</summary>
    private KernelConfig PerRow(int rows)
        => new(new Index1D(Math.Clamp(rows, 1, _maxRowGroups)), new Index1D(_rowThreads));

    // ---- shared device code -----------------------------------------------------------------------------

    /// <summary>First global thread index and the grid stride of a grid-stride loop.</summary>
    private static long GlobalIndex() => (long)Grid.IdxX * Group.DimX + Group.IdxX;

    private static long GridStride() => (long)Grid.DimX * Group.DimX;

    /// <summary>
    /// Sum over the group (1-D, a multiple of the warp size), returned to every thread: warp shuffles, then the
    /// per-warp partials through shared memory, added in warp order, so the result is deterministic. Must be reached
    /// by every thread of the group. <paramref name="scratch"/> holds two slots of <see cref="MaxWarps"/> partials;
    /// consecutive reductions must alternate slots (pass <c>step++ &amp; 1</c>): a slot is then rewritten only after
    /// the other reduction's barrier, which every thread reaches after reading it, so one barrier per reduction suffices.
    /// </summary>
    private static float GroupSum(float value, ArrayView<float> scratch, int slot)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1)
            value += Warp.ShuffleXor(value, offset);
        int at = slot * MaxWarps;
        if (Warp.LaneIdx == 0) scratch[at + Group.IdxX / Warp.WarpSize] = value;
        Group.Barrier();
        int end = at + Group.DimX / Warp.WarpSize;
        float total = 0f;
        for (int w = at; w < end; w++) total += scratch[w];
        return total;
    }

    /// <summary>Maximum over the group, returned to every thread (see <see cref="GroupSum"/> for the slots).</summary>
    private static float GroupMax(float value, ArrayView<float> scratch, int slot)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1)
            value = XMath.Max(value, Warp.ShuffleXor(value, offset));
        int at = slot * MaxWarps;
        if (Warp.LaneIdx == 0) scratch[at + Group.IdxX / Warp.WarpSize] = value;
        Group.Barrier();
        int end = at + Group.DimX / Warp.WarpSize;
        float total = scratch[at];
        for (int w = at + 1; w < end; w++) total = XMath.Max(total, scratch[w]);
        return total;
    }

    // ---- memory ---------------------------------------------------------------------------------------------

    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, long, float> _fill = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, RowCopyArgs> _copyRows = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, long> _add = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, long, float> _axpy = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ColumnSumArgs> _columnSum = null!;

    private void LoadMemoryKernels()
    {
        _fill = Accelerator.LoadKernel<ArrayView<float>, long, float>(FillKernel);
        _copyRows = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, RowCopyArgs>(CopyRowsKernel);
        _add = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, long>(AddKernel);
        _axpy = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, long, float>(AxpyKernel);
        _columnSum = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ColumnSumArgs>(ColumnSumKernel);
    }

    public Tensor Allocate(string name, params int[] shape)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var t = new GpuTensor(this, name, shape);
        if (t.Length > 0) _fill(Stream, Linear(t.Length), t.View, t.Length, 0f);
        return t;
    }

    public Tensor FromHost(string name, ReadOnlySpan<float> data, params int[] shape)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var t = new GpuTensor(this, name, shape);
        if (data.Length != t.Length)
        {
            t.Dispose();
            throw new ArgumentException($"tensor '{name}': {data.Length} values given for shape {t.ShapeText} ({t.Length} elements)");
        }
        t.CopyFrom(data);
        return t;
    }

    public void Fill(Tensor t, float value)
    {
        var g = Own(t, "fill target");
        if (g.Length > 0) _fill(Stream, Linear(g.Length), g.View, g.Length, value);
    }

    public void Copy(Tensor src, long srcOffset, Tensor dst, long dstOffset, long count)
    {
        src.ExpectRange(srcOffset, count, "copy source");
        dst.ExpectRange(dstOffset, count, "copy destination");
        var s = Own(src, "copy source");
        var d = Own(dst, "copy destination");
        if (count == 0 || (ReferenceEquals(s, d) && srcOffset == dstOffset)) return;
        bool overlapping = ReferenceEquals(s, d) && srcOffset < dstOffset + count && dstOffset < srcOffset + count;
        if (!overlapping)
        {
            CopyRows(s, srcOffset, 0, d, dstOffset, 0, 1, checked((int)count), accumulate: false);
            return;
        }
        // Overlapping ranges of one tensor (memmove semantics, like the CPU backend): through a temporary.
        using var temp = new GpuTensor(this, "copy.temp", [checked((int)count)]);
        CopyRows(s, srcOffset, 0, temp, 0, 0, 1, (int)count, accumulate: false);
        CopyRows(temp, 0, 0, d, dstOffset, 0, 1, (int)count, accumulate: false);
        Stream.Synchronize();   // the temporary is freed on return
    }

    public void CopyRows(Tensor src, long srcOffset, int srcStride, Tensor dst, long dstOffset, int dstStride, int rows, int cols, bool accumulate)
    {
        if (rows == 0 || cols == 0) return;
        src.ExpectRange(srcOffset, (long)(rows - 1) * srcStride + cols, "row-copy source");
        dst.ExpectRange(dstOffset, (long)(rows - 1) * dstStride + cols, "row-copy destination");
        var s = Own(src, "row-copy source");
        var d = Own(dst, "row-copy destination");
        var args = new RowCopyArgs
        {
            SrcOffset = srcOffset, SrcStride = srcStride, DstOffset = dstOffset, DstStride = dstStride,
            Rows = rows, Cols = cols, Accumulate = accumulate ? 1 : 0,
        };
        _copyRows(Stream, Linear(cols), s.View, d.View, args);
    }

    public void Synchronize()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Stream.Synchronize();
    }

    // ---- elementwise ----------------------------------------------------------------------------------------

    public void Add(Tensor a, Tensor b, Tensor y, long n)
    {
        Need(a, n, "add input a"); Need(b, n, "add input b"); Need(y, n, "add output");
        var ga = Own(a, "a"); var gb = Own(b, "b"); var gy = Own(y, "y");
        if (n > 0) _add(Stream, Linear(n), ga.View, gb.View, gy.View, n);
    }

    public void Axpy(float alpha, Tensor x, Tensor y, long n)
    {
        Need(x, n, "axpy input"); Need(y, n, "axpy output");
        var gx = Own(x, "x"); var gy = Own(y, "y");
        if (n > 0) _axpy(Stream, Linear(n), gx.View, gy.View, n, alpha);
    }

    /// <summary>output[outOffset + c] += Σ_r input[inOffset + r·rowStride + c] for c in [0, cols), rows summed in order.</summary>
    private void ColumnSum(GpuTensor input, long inOffset, long rowStride, int rows, int cols, GpuTensor output, long outOffset)
    {
        if (rows == 0 || cols == 0) return;
        var args = new ColumnSumArgs { InOffset = inOffset, RowStride = rowStride, Rows = rows, Cols = cols, OutOffset = outOffset };
        _columnSum(Stream, ColumnTiles(cols), input.View, output.View, args);
    }

    /// <summary>Column-reduction launch: groups of <see cref="ColumnTile"/> columns × <see cref="RowLanes"/> row lanes.</summary>
    private KernelConfig ColumnTiles(int cols)
        => new(new Index2D((int)Math.Clamp((cols + ColumnTile - 1L) / ColumnTile, 1, _maxGroups * 8L), 1), new Index2D(ColumnTile, RowLanes));

    private const int ColumnTile = 32, RowLanes = BlockThreads / ColumnTile;

    // ---- kernels ----------------------------------------------------------------------------------------------

    internal struct RowCopyArgs
    {
        public long SrcOffset, DstOffset;
        public int SrcStride, DstStride, Rows, Cols, Accumulate;
    }

    internal struct ColumnSumArgs
    {
        public long InOffset, RowStride, OutOffset;
        public int Rows, Cols;
    }

    [GpuKernel]
    private static void FillKernel(ArrayView<float> y, long n, float value)
    {
        for (long i = GlobalIndex(); i < n; i += GridStride()) y[i] = value;
    }

    [GpuKernel]
    private static void CopyRowsKernel(ArrayView<float> src, ArrayView<float> dst, RowCopyArgs p)
    {
        // One thread per column walking the rows in order: a destination stride of 0 with accumulate (summing
        // strided rows, e.g. a bias gradient) then has no races and a fixed summation order.
        for (long c = GlobalIndex(); c < p.Cols; c += GridStride())
            for (long r = 0; r < p.Rows; r++)
            {
                float v = src[p.SrcOffset + r * p.SrcStride + c];
                long at = p.DstOffset + r * p.DstStride + c;
                if (p.Accumulate != 0) dst[at] += v;
                else dst[at] = v;
            }
    }

    [GpuKernel]
    private static void AddKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, long n)
    {
        for (long i = GlobalIndex(); i < n; i += GridStride()) y[i] = a[i] + b[i];
    }

    [GpuKernel]
    private static void AxpyKernel(ArrayView<float> x, ArrayView<float> y, long n, float alpha)
    {
        for (long i = GlobalIndex(); i < n; i += GridStride()) y[i] += alpha * x[i];
    }

    /// <summary>
    /// Column sums: a group is <see cref="ColumnTile"/> columns × <see cref="RowLanes"/> row lanes; lane l sums rows
    /// l, l + lanes, ... in order, then lane 0 adds the lanes' partials in lane order (deterministic).
    /// </summary>
    [GpuKernel]
    private static void ColumnSumKernel(ArrayView<float> input, ArrayView<float> output, ColumnSumArgs p)
    {
        var partial = SharedMemory.Allocate<float>(BlockThreads);
        int tx = Group.IdxX, lane = Group.IdxY;
        for (long c0 = (long)Grid.IdxX * ColumnTile; c0 < p.Cols; c0 += (long)Grid.DimX * ColumnTile)
        {
            long c = c0 + tx;
            float sum = 0f;
            if (c < p.Cols)
                for (int r = lane; r < p.Rows; r += RowLanes) sum += input[p.InOffset + r * p.RowStride + c];
            partial[lane * ColumnTile + tx] = sum;
            Group.Barrier();
            if (lane == 0 && c < p.Cols)
            {
                float total = partial[tx];
                for (int l = 1; l < RowLanes; l++) total += partial[l * ColumnTile + tx];
                output[p.OutOffset + c] += total;
            }
            Group.Barrier();
        }
    }
}

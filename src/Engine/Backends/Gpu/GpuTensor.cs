using ILGPU;
using ILGPU.Runtime;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

/// <summary>
/// A tensor in accelerator memory (device memory on CUDA, host memory on ILGPU's CPU accelerator).
/// Host copies go through the owning backend's stream and wait for it, so they see every op issued before them.
/// </summary>
internal sealed class GpuTensor : Tensor
{
    private readonly GpuBackend _backend;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> _buffer;
    private bool _disposed;

    internal GpuTensor(GpuBackend backend, string name, int[] shape) : base(name, shape)
    {
        _backend = backend;
        // ILGPU cannot allocate zero elements; an empty tensor keeps a one-element buffer it never exposes.
        _buffer = backend.Accelerator.Allocate1D<float>(Math.Max(1, Length));
        View = _buffer.View.SubView(0, Length);
    }

    public override IBackend Backend => _backend;

    /// <summary>The ILGPU buffer behind this tensor (at least one element, even for an empty tensor).</summary>
    /// <remarks>
    /// Handing out the buffer counts as a write (<see cref="Version"/> moves): whoever holds it may change the data
    /// behind the backend's back.
    /// </remarks>
    public MemoryBuffer1D<float, Stride1D.Dense> Buffer
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            MarkWritten();
            return _buffer;
        }
    }

    /// <summary>
    /// Moves whenever the contents may have changed: a host copy into the tensor, any backend op that takes it (the
    /// backend calls <see cref="MarkWritten"/> for every tensor it is given, except a mask an optimizer step only reads),
    /// and every hand-out of <see cref="Buffer"/> or <see cref="DevicePointer"/>. Caches derived from the contents (the
    /// mask's index list of the native optimizer kernels) are valid while it stays the same.
    /// </summary>
    internal long Version { get; private set; }

    internal void MarkWritten() => Version++;

    /// <summary>The index list of the selected entries when this tensor was last used as a mask (see <see cref="GpuBackend.MaskIndexList"/>).</summary>
    internal NativeIndexList? MaskIndexCache { get; set; }

    /// <summary>The tensor's <see cref="Tensor.Length"/> elements as a kernel argument.</summary>
    internal ArrayView<float> View { get; }

    /// <summary>The device address of element 0 (CUDA: a CUdeviceptr), for native kernels launched outside ILGPU.</summary>
    internal IntPtr DevicePointer => Buffer.NativePtr;

    public override unsafe void CopyFrom(ReadOnlySpan<float> source, long offset = 0)
    {
        ExpectRange(offset, source.Length, "copy destination");
        MarkWritten();
        if (source.IsEmpty) return;
        fixed (float* p = source)
            View.SubView(offset, source.Length).CopyFromCPU(_backend.Stream, ref *p, source.Length);
    }

    public override unsafe void CopyTo(Span<float> destination, long offset = 0)
    {
        ExpectRange(offset, destination.Length, "copy source");
        if (destination.IsEmpty) return;
        fixed (float* p = destination)
            View.SubView(offset, destination.Length).CopyToCPU(_backend.Stream, ref *p, destination.Length);
    }

    public override void Dispose()
    {
        if (!_disposed)
        {
            _disposed = true;
            MaskIndexCache?.Dispose();
            MaskIndexCache = null;
            _buffer.Dispose();
        }
        base.Dispose();
    }
}

using ILGPU;
using ILGPU.Runtime;

namespace WhereToEdit.Engine.Backends.Gpu;

/// <summary>
/// A sorted list of distinct row or column indices in [0, <see cref="Limit"/>) — the selected hidden units of an edit —
/// validated on the host and uploaded once as an int32 device array for the native kernels (which trap on an unsorted,
/// repeated or out-of-range index, poisoning the CUDA context). Made by <see cref="GpuBackend.CreateIndexList"/> (caller
/// owned) or <see cref="GpuBackend.MaskIndexList"/> (cached on, and owned by, the mask tensor).
/// </summary>
internal sealed class NativeIndexList : IDisposable
{
    private readonly int[] _host;
    private readonly MemoryBuffer1D<int, Stride1D.Dense> _device;
    private bool _disposed;

    internal NativeIndexList(GpuBackend backend, int[] indices, int limit, long version)
    {
        Validate(indices, limit, "index list");
        Backend = backend;
        _host = indices;
        Limit = limit;
        Version = version;
        _device = backend.Accelerator.Allocate1D<int>(Math.Max(1, indices.Length));
        if (indices.Length > 0)
            _device.View.SubView(0, indices.Length).CopyFromCPU(backend.Stream, ref indices[0], indices.Length);
    }

    public GpuBackend Backend { get; }

    /// <summary>Number of selected indices (K of the native kernels).</summary>
    public int Count => _host.Length;

    /// <summary>Indices lie in [0, Limit).</summary>
    public int Limit { get; }

    public ReadOnlySpan<int> Indices => _host;

    /// <summary>The mask tensor's version this list was built from (<see cref="GpuTensor.Version"/>); 0 for caller-made lists.</summary>
    internal long Version { get; }

    /// <summary>Device address of the int32 array (at least one element is allocated, so it is never null).</summary>
    public IntPtr DevicePointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _device.NativePtr;
        }
    }

    /// <summary>The indices i with mask[i] != 0 (as the masked optimizers read a mask: NaN and 2 count as selected).</summary>
    public static int[] FromMask(ReadOnlySpan<float> mask)
    {
        int count = 0;
        foreach (float m in mask)
            if (m != 0f) count++;
        var indices = new int[count];
        for (int i = 0, k = 0; i < mask.Length; i++)
            if (mask[i] != 0f) indices[k++] = i;
        return indices;
    }

    /// <summary>Throws unless the indices are strictly increasing and in [0, <paramref name="limit"/>).</summary>
    public static void Validate(ReadOnlySpan<int> indices, int limit, string what)
    {
        if (limit < 0) throw new ArgumentOutOfRangeException(nameof(limit), limit, "index limit must be non-negative");
        for (int k = 0; k < indices.Length; k++)
        {
            int i = indices[k];
            if (i < 0 || i >= limit) throw new ArgumentOutOfRangeException(nameof(indices), i, $"{what}: entry {k} = {i} is outside [0, {limit})");
            if (k > 0 && indices[k - 1] >= i)
                throw new ArgumentException($"{what}: entry {k} = {i} follows {indices[k - 1]}; indices must be sorted and distinct", nameof(indices));
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _device.Dispose();
    }
}

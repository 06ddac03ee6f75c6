using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Cpu;

/// <summary>A tensor in managed host memory. Large arrays live on the LOH and are not moved by the GC.</summary>
internal sealed class CpuTensor : Tensor
{
    private readonly CpuBackend _backend;

    private float[]? _data;

    internal CpuTensor(CpuBackend backend, string name, int[] shape) : base(name, shape)
    {
        _backend = backend;
        _data = backend.RentBuffer(checked((int)Length));
    }

    /// <summary>The elements; a disposed tensor's array belongs to the backend's pool again, so reading it throws.</summary>
    public float[] Data => _data ?? throw new ObjectDisposedException($"tensor '{Name}'", $"tensor '{Name}' was disposed and its memory reused");

    /// <summary>Gives the array back to the backend's <see cref="CpuBufferPool"/> (once, however often it is called).</summary>
    public override void Dispose()
    {
        if (Interlocked.Exchange(ref _data, null) is { } data) _backend.ReturnBuffer(data);
        base.Dispose();
    }

    /// <summary>
    /// Write version: bumped by <see cref="CopyFrom"/> and by every backend op that may write the tensor
    /// (<see cref="CpuBackend.Cpu"/>); prepacked copies (<see cref="PackedWeightCache"/>) are valid only at the
    /// version they were made at.
    /// </summary>
    internal long Version;

    public Span<float> Span => Data;

    public override IBackend Backend => _backend;

    public override void CopyFrom(ReadOnlySpan<float> source, long offset = 0)
    {
        ExpectRange(offset, source.Length, "copy destination");
        Version++;
        source.CopyTo(Data.AsSpan((int)offset));
    }

    public override void CopyTo(Span<float> destination, long offset = 0)
    {
        ExpectRange(offset, destination.Length, "copy source");
        Data.AsSpan((int)offset, destination.Length).CopyTo(destination);
    }
}

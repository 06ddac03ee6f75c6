using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Cpu;

/// <summary>A tensor in managed host memory. Large arrays live on the LOH and are not moved by the GC.</summary>
internal sealed class CpuTensor : Tensor
{
    private readonly CpuBackend _backend;

    internal CpuTensor(CpuBackend backend, string name, int[] shape) : base(name, shape)
    {
        _backend = backend;
        Data = Length == 0 ? [] : GC.AllocateArray<float>(checked((int)Length), pinned: Length >= 4096);
    }

    public float[] Data { get; }

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

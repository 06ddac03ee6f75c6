using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Reference;

/// <summary>A tensor of the reference backend: a plain managed float array.</summary>
internal sealed class ReferenceTensor : Tensor
{
    private readonly ReferenceBackend _backend;

    internal ReferenceTensor(ReferenceBackend backend, string name, int[] shape) : base(name, shape)
    {
        _backend = backend;
        Data = new float[checked((int)Length)];
    }

    public float[] Data { get; }

    public override IBackend Backend => _backend;

    public override void CopyFrom(ReadOnlySpan<float> source, long offset = 0)
    {
        ExpectRange(offset, source.Length, "copy destination");
        source.CopyTo(Data.AsSpan((int)offset));
    }

    public override void CopyTo(Span<float> destination, long offset = 0)
    {
        ExpectRange(offset, destination.Length, "copy source");
        Data.AsSpan((int)offset, destination.Length).CopyTo(destination);
    }
}

namespace WhereToEdit.Engine.Tensors;

/// <summary>A named trainable tensor (timm naming) and its gradient (same shape, accumulated by backward passes).</summary>
public sealed class Parameter : IDisposable
{
    public Parameter(IBackend backend, string name, params int[] shape)
    {
        Name = name;
        Value = backend.Allocate(name, shape);
        Grad = backend.Allocate(name + ".grad", shape);
    }

    public string Name { get; }
    public Tensor Value { get; }
    public Tensor Grad { get; }
    public int[] Shape => Value.Shape;
    public long Length => Value.Length;

    public void Dispose()
    {
        Value.Dispose();
        Grad.Dispose();
    }

    public override string ToString() => $"{Name} {Value.ShapeText}";
}

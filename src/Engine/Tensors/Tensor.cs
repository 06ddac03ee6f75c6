namespace WhereToEdit.Engine.Tensors;

/// <summary>
/// A dense, row-major fp32 tensor owned by one backend (host memory for the CPU backend, device
/// memory for the GPU backend). Ops never see anything but tensors plus explicit offsets/sizes,
/// so the same model code runs on every backend.
/// </summary>
public abstract class Tensor : IDisposable
{
    protected Tensor(string name, int[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long length = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"tensor '{name}': negative dimension in shape {ShapeString(shape)}");
            length *= d;
        }
        Name = name;
        Shape = (int[])shape.Clone();
        Length = length;
    }

    public string Name { get; }
    public int[] Shape { get; }
    public long Length { get; }
    public int Rank => Shape.Length;

    /// <summary>The backend that owns this tensor's memory.</summary>
    public abstract IBackend Backend { get; }

    /// <summary>Copies host data into this tensor (whole tensor, or from <paramref name="offset"/>).</summary>
    public abstract void CopyFrom(ReadOnlySpan<float> source, long offset = 0);

    /// <summary>Copies this tensor (from <paramref name="offset"/>) to host memory.</summary>
    public abstract void CopyTo(Span<float> destination, long offset = 0);

    public float[] ToArray()
    {
        var result = new float[Length];
        CopyTo(result);
        return result;
    }

    public virtual void Dispose() => GC.SuppressFinalize(this);

    public string ShapeText => ShapeString(Shape);

    public static string ShapeString(IReadOnlyList<int> shape) => "[" + string.Join(",", shape) + "]";

    /// <summary>Throws unless this tensor has exactly <paramref name="expected"/> as its shape.</summary>
    public void ExpectShape(params int[] expected)
    {
        if (!Shape.AsSpan().SequenceEqual(expected))
            throw new ShapeMismatchException(Name, expected, Shape);
    }

    /// <summary>Throws unless this tensor holds at least <paramref name="count"/> elements past <paramref name="offset"/>.</summary>
    public void ExpectRange(long offset, long count, string role)
    {
        if (offset < 0 || count < 0 || offset + count > Length)
            throw new ArgumentException(
                $"tensor '{Name}' {ShapeText} used as {role}: needs elements [{offset}, {offset + count}) but holds {Length}");
    }
}

internal sealed class ShapeMismatchException(string tensor, IReadOnlyList<int> expected, IReadOnlyList<int> actual)
    : ArgumentException($"tensor '{tensor}': expected shape {Tensor.ShapeString(expected)}, got {Tensor.ShapeString(actual)}")
{
    public string TensorName { get; } = tensor;
}

/// <summary>Raised when a tensor that must be finite (weights, inputs, a loss) holds NaN or ±Inf.</summary>
internal sealed class NonFiniteException(string tensor, long index, float value)
    : ArithmeticException($"tensor '{tensor}': non-finite value {value} at flat index {index}")
{
    public string TensorName { get; } = tensor;
}

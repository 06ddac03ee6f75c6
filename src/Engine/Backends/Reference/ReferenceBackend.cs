using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Reference;

/// <summary>
/// The reference backend: every <see cref="IBackend"/> op as plain scalar loops on one thread, written to be read
/// and checked against the maths, not to be fast (the llm.c idea: a readable reference beside the fast kernels).
/// Sums run in double; elementwise maths runs in float like PyTorch's kernels, unless double makes the formula
/// clearer. The conformance suite (<c>Backends/Conformance</c>) runs the CPU and GPU backends against it.
/// One file per op family: ReferenceBackend.Linear.cs, .Elementwise.cs, .Normalization.cs, .Attention.cs,
/// .Patches.cs, .Losses.cs, .Optimizers.cs.
/// </summary>
internal sealed partial class ReferenceBackend : IBackend
{
    public string Name => "reference (scalar C#, 1 thread)";

    public int Threads => 1;

    public void Dispose() { }

    /// <summary>The float array behind a tensor of this backend.</summary>
    private static float[] D(Tensor t, string role)
    {
        ArgumentNullException.ThrowIfNull(t, role);
        return (t as ReferenceTensor)?.Data
               ?? throw new ArgumentException($"tensor '{t.Name}' ({role}) belongs to backend '{t.Backend.Name}', not the reference backend");
    }

    /// <summary>The float array behind a tensor that must hold at least <paramref name="count"/> elements.</summary>
    private static float[] D(Tensor t, long count, string role)
    {
        var data = D(t, role);
        t.ExpectRange(0, count, role);
        return data;
    }

    // ---- memory -------------------------------------------------------------------------------

    public Tensor Allocate(string name, params int[] shape) => new ReferenceTensor(this, name, shape);

    public Tensor FromHost(string name, ReadOnlySpan<float> data, params int[] shape)
    {
        var t = new ReferenceTensor(this, name, shape);
        if (data.Length != t.Length)
            throw new ArgumentException($"tensor '{name}': {data.Length} values given for shape {t.ShapeText} ({t.Length} elements)");
        for (int i = 0; i < data.Length; i++) t.Data[i] = data[i];
        return t;
    }

    public void Fill(Tensor t, float value)
    {
        var data = D(t, "fill target");
        for (int i = 0; i < data.Length; i++) data[i] = value;
    }

    public void Copy(Tensor src, long srcOffset, Tensor dst, long dstOffset, long count)
    {
        src.ExpectRange(srcOffset, count, "copy source");
        dst.ExpectRange(dstOffset, count, "copy destination");
        float[] s = D(src, "copy source"), d = D(dst, "copy destination");
        // memmove: when the ranges overlap in the same tensor with the destination after the source, copy from the end.
        if (ReferenceEquals(s, d) && dstOffset > srcOffset)
            for (long i = count - 1; i >= 0; i--) d[dstOffset + i] = s[srcOffset + i];
        else
            for (long i = 0; i < count; i++) d[dstOffset + i] = s[srcOffset + i];
    }

    public void CopyRows(Tensor src, long srcOffset, int srcStride, Tensor dst, long dstOffset, int dstStride, int rows, int cols, bool accumulate)
    {
        if (rows == 0 || cols == 0) return;
        src.ExpectRange(srcOffset, (long)(rows - 1) * srcStride + cols, "row-copy source");
        dst.ExpectRange(dstOffset, (long)(rows - 1) * dstStride + cols, "row-copy destination");
        float[] s = D(src, "row-copy source"), d = D(dst, "row-copy destination");
        // Rows in order, so a destination stride of 0 sums the rows into one in a fixed order.
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                long from = srcOffset + (long)r * srcStride + c, to = dstOffset + (long)r * dstStride + c;
                d[to] = accumulate ? d[to] + s[from] : s[from];
            }
    }

    public void Synchronize() { }
}

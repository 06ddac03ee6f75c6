using System.Collections.ObjectModel;

namespace WhereToEdit.Engine.IO;

/// <summary>Element type a tensor had in its source file. Every tensor is held as float32 in memory.</summary>
public enum TensorDType
{
    F32,
    F16,
    BF16,
    /// <summary>float64 (.npy '&lt;f8' only; safetensors F64 is rejected).</summary>
    F64,
}

/// <summary>Container a <see cref="TensorFile"/> was read from.</summary>
public enum CheckpointFormat
{
    /// <summary>Built in memory (converted or created by code).</summary>
    InMemory,
    SafeTensors,
    Npz,
    /// <summary>torch.save zip archive (.pth / .pt / .bin), read by <see cref="PyTorchCheckpoint"/>.</summary>
    PyTorch,
}

/// <summary>One tensor: name, row-major shape (outermost first), float32 data and the dtype it was stored as.</summary>
public sealed class NamedTensor
{
    public NamedTensor(string name, int[] shape, float[] data, TensorDType sourceDType = TensorDType.F32)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(data);
        long count = ElementCountOf(shape);
        if (count != data.LongLength)
            throw new ArgumentException($"tensor '{name}': shape {FormatShape(shape)} holds {count} elements but {data.Length} were given");
        Name = name;
        Shape = shape;
        Data = data;
        SourceDType = sourceDType;
    }

    public string Name { get; }

    public int[] Shape { get; }

    public float[] Data { get; }

    public TensorDType SourceDType { get; }

    public int Rank => Shape.Length;

    public long ElementCount => Data.LongLength;

    /// <summary>The same data under another name (no copy).</summary>
    public NamedTensor Rename(string name) => new(name, Shape, Data, SourceDType);

    public override string ToString() => $"{Name} {FormatShape(Shape)} ({SourceDType})";

    /// <summary>Product of the dimensions (1 for a scalar); throws on a negative dimension.</summary>
    public static long ElementCountOf(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension {d}");
            n = checked(n * d);
        }
        return n;
    }

    /// <summary>"[768, 3, 16, 16]".</summary>
    public static string FormatShape(ReadOnlySpan<int> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";

    public static bool ShapeEquals(ReadOnlySpan<int> a, ReadOnlySpan<int> b) => a.SequenceEqual(b);
}

/// <summary>
/// The common in-memory result of reading any checkpoint container: tensors in file order (order of their
/// data in the file), string metadata, and where they came from. Names are unique.
/// </summary>
public sealed class TensorFile
{
    private readonly Dictionary<string, NamedTensor> _byName;

    public TensorFile(IEnumerable<NamedTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null,
                      string? sourcePath = null, CheckpointFormat sourceFormat = CheckpointFormat.InMemory)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var list = new List<NamedTensor>();
        _byName = new Dictionary<string, NamedTensor>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            if (!_byName.TryAdd(t.Name, t))
                throw new ArgumentException($"duplicate tensor name '{t.Name}'");
            list.Add(t);
        }
        Tensors = new ReadOnlyCollection<NamedTensor>(list);
        Metadata = new ReadOnlyDictionary<string, string>(
            metadata is null ? new Dictionary<string, string>() : new Dictionary<string, string>(metadata, StringComparer.Ordinal));
        SourcePath = sourcePath;
        SourceFormat = sourceFormat;
    }

    public IReadOnlyList<NamedTensor> Tensors { get; }

    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>File the tensors were read from; null when built in memory.</summary>
    public string? SourcePath { get; }

    public CheckpointFormat SourceFormat { get; }

    public int Count => Tensors.Count;

    public IEnumerable<string> Names => Tensors.Select(t => t.Name);

    public long ParameterCount => Tensors.Sum(t => t.ElementCount);

    /// <summary>Tensors holding NaN or ±Inf, with how many such values each (a damaged checkpoint predicts NaN).</summary>
    public IReadOnlyList<(string Name, long Count)> NonFinite() =>
        Tensors.Select(t => (t.Name, Count: (long)t.Data.Count(v => !float.IsFinite(v)))).Where(x => x.Count > 0).ToList();

    /// <summary>A one-line warning about non-finite weights, or null when every weight is finite.</summary>
    public string? NonFiniteWarning()
    {
        var bad = NonFinite();
        if (bad.Count == 0) return null;
        return $"{bad.Sum(b => b.Count):N0} non-finite weights (NaN/Inf) in {bad.Count} tensor(s): " +
               string.Join(", ", bad.Take(5).Select(b => $"{b.Name} ({b.Count:N0})")) + (bad.Count > 5 ? ", …" : "") + "; predictions from this model will be NaN";
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public bool TryGet(string name, out NamedTensor tensor) => _byName.TryGetValue(name, out tensor!);

    public NamedTensor this[string name] =>
        _byName.TryGetValue(name, out var t) ? t
        : throw new KeyNotFoundException($"{CheckpointFormatException.Describe(SourcePath ?? "")}: no tensor named '{name}'");

    /// <summary>Same tensors, other metadata / origin.</summary>
    public TensorFile With(IReadOnlyDictionary<string, string>? metadata = null, string? sourcePath = null,
                           CheckpointFormat? sourceFormat = null) =>
        new(Tensors, metadata ?? Metadata, sourcePath ?? SourcePath, sourceFormat ?? SourceFormat);
}

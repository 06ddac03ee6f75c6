using System.Collections;
using Razorvine.Pickle;

namespace WhereToEdit.Engine.IO.PyTorch;

/// <summary>A storage a checkpoint refers to: its key in the archive (data/KEY), element type and element count.</summary>
internal sealed record TorchStorage(string Key, string TypeName, TensorDType? DType, int ElementSize, long ElementCount);

/// <summary>What torch._utils._rebuild_tensor_v2 would build: a strided view of a storage. Sequence = order in the pickle.</summary>
internal sealed record TorchTensorRef(TorchStorage Storage, long Offset, long[] Size, long[] Stride, int Sequence);

/// <summary>collections.OrderedDict: a Hashtable (what the unpickler's SETITEM(S) expect) that accepts its __dict__ state (state_dict's _metadata).</summary>
internal sealed class PickledOrderedDict : Hashtable
{
    public Hashtable? State { get; private set; }

    // Called by the unpickler's BUILD opcode (by name, through reflection).
    public void __setstate__(Hashtable state) => State = state;
}

/// <summary>torch.device("cpu") and friends: only the text is kept.</summary>
internal sealed record TorchDevice(string Text);

/// <summary>
/// Razorvine's unpickler with constructors for exactly the globals <see cref="PickleGuard"/> allows, and PyTorch's
/// persistent ids ('storage', type, key, location, numel) resolved to <see cref="TorchStorage"/> descriptors.
/// Constructing anything reads no tensor data: storages are only described here and read later, on demand.
/// Must only be given pickles that passed <see cref="PickleGuard.Check"/>.
/// </summary>
internal sealed class TorchUnpickler : Unpickler
{
    private static readonly Dictionary<string, (TensorDType? DType, int Size)> StorageTypes = new(StringComparer.Ordinal)
    {
        ["FloatStorage"] = (TensorDType.F32, 4), ["HalfStorage"] = (TensorDType.F16, 2), ["BFloat16Storage"] = (TensorDType.BF16, 2),
        ["DoubleStorage"] = (TensorDType.F64, 8), ["LongStorage"] = (null, 8), ["IntStorage"] = (null, 4), ["ShortStorage"] = (null, 2),
        ["CharStorage"] = (null, 1), ["ByteStorage"] = (null, 1), ["BoolStorage"] = (null, 1),
    };

    static TorchUnpickler()
    {
        // Razorvine keeps one process-wide registry; these registrations are idempotent and only ever add the allow-list.
        registerConstructor("collections", "OrderedDict", new Ctor(_ => new PickledOrderedDict()));
        registerConstructor("torch._utils", "_rebuild_tensor_v2", new Ctor(a => Current!.RebuildTensor(a)));
        registerConstructor("torch._utils", "_rebuild_parameter", new Ctor(a => a.Length >= 1 && a[0] is TorchTensorRef t ? t
            : throw new PickleException("_rebuild_parameter expects a tensor as its first argument")));
        registerConstructor("torch", "Size", new Ctor(a => a.Length == 1 && a[0] is object[] dims ? dims : throw new PickleException("torch.Size expects one tuple")));
        registerConstructor("torch", "device", new Ctor(a => new TorchDevice(string.Join(":", a.Select(x => x?.ToString())))));
        foreach (var name in StorageTypes.Keys)
            registerConstructor("torch", name, new StorageType(name));
    }

    // The constructors are process-wide; the storages they refer to belong to one load on one thread.
    [ThreadStatic] private static TorchUnpickler? Current;

    private readonly Dictionary<string, TorchStorage> _storages = new(StringComparer.Ordinal);
    private readonly long _maxElements;
    private int _tensors;

    /// <param name="maxElements">No storage may claim more elements than this (its bytes must fit the file).</param>
    private TorchUnpickler(long maxElements) => _maxElements = maxElements;

    public IReadOnlyDictionary<string, TorchStorage> Storages => _storages;

    /// <summary>Unpickles a checked pickle; returns the root object and the storages it refers to.</summary>
    public static (object? Root, IReadOnlyDictionary<string, TorchStorage> Storages) Load(byte[] pickle, long maxStorageBytes)
    {
        var u = new TorchUnpickler(maxStorageBytes);
        var previous = Current;
        Current = u;
        try
        {
            return (u.loads(pickle), u.Storages);
        }
        finally
        {
            Current = previous;
            u.close();
        }
    }

    protected override object persistentLoad(object pid)
    {
        // Zip format: ('storage', type, key, location, numel); legacy format adds view_metadata (None unless a storage view).
        if (pid is not object[] { Length: 5 or 6 } t || t[0] is not "storage" || t[1] is not StorageType type || t[2] is not string key || t[3] is not string)
            throw new PickleException("persistent id is not ('storage', torch.<Type>Storage, key, location, numel)");
        if (t.Length == 6 && t[5] is not null)
            throw new PickleException($"storage '{key}' is a legacy storage view, which is not supported; re-save the checkpoint with PyTorch ≥ 1.6");
        long numel = ToLong(t[4], "storage element count");
        if (numel < 0 || numel > _maxElements)
            throw new PickleException($"storage '{key}' claims {numel} elements, more than the file can hold");
        var info = StorageTypes[type.Name];
        var s = new TorchStorage(key, type.Name, info.DType, info.Size, numel);
        if (_storages.TryGetValue(key, out var seen))
        {
            if (seen != s) throw new PickleException($"storage '{key}' is described twice differently ({seen.TypeName}×{seen.ElementCount} vs {s.TypeName}×{s.ElementCount})");
            return seen;
        }
        _storages.Add(key, s);
        return s;
    }

    private TorchTensorRef RebuildTensor(object[] a)
    {
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        if (a.Length is < 4 or > 7 || a[0] is not TorchStorage storage)
            throw new PickleException("_rebuild_tensor_v2 expects (storage, offset, size, stride, ...)");
        long offset = ToLong(a[1], "storage offset");
        long[] size = Dims(a[2], "size"), stride = Dims(a[3], "stride");
        if (size.Length != stride.Length) throw new PickleException($"tensor has {size.Length} sizes but {stride.Length} strides");
        return new TorchTensorRef(storage, offset, size, stride, _tensors++);
    }

    private static long[] Dims(object? o, string what) =>
        o is object[] items ? items.Select(x => ToLong(x, what)).ToArray() : throw new PickleException($"tensor {what} is not a tuple");

    private static long ToLong(object? o, string what) => o switch
    {
        int i => i,
        long l => l,
        _ => throw new PickleException($"{what} is not an integer ({o?.GetType().Name ?? "None"})"),
    };

    private sealed class Ctor(Func<object[], object> build) : IObjectConstructor
    {
        public object construct(object[] args) => build(args);
    }

    /// <summary>torch.FloatStorage etc.: only ever used as a type tag inside a persistent id.</summary>
    private sealed class StorageType(string name) : IObjectConstructor
    {
        public string Name { get; } = name;
        public object construct(object[] args) => throw new PickleException($"torch.{Name} may only appear in a storage's persistent id");
    }
}

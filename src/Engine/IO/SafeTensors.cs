using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace WhereToEdit.Engine.IO;

/// <summary>One tensor's header entry in a safetensors file. Offsets are relative to the start of the data section.</summary>
internal sealed record SafeTensorsEntry(string Name, string DTypeName, int[] Shape, long Begin, long End)
{
    /// <summary>The dtype as a float type this engine reads; null for a known but unsupported dtype (I64, U8, F64 …).</summary>
    public TensorDType? DType => SafeTensors.ParseSupportedDType(DTypeName);

    public long ElementCount => NamedTensor.ElementCountOf(Shape);

    public long ByteLength => End - Begin;
}

/// <summary>
/// A safetensors file opened read-only and memory-mapped. The header is fully validated by <see cref="Open"/>;
/// tensor data is converted to float32 only when read. Not thread-safe for concurrent <see cref="Dispose"/>.
/// </summary>
internal sealed unsafe class SafeTensorsReader : IDisposable
{
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _data; // start of the data section
    private readonly Dictionary<string, SafeTensorsEntry> _byName;
    private bool _disposed;

    private SafeTensorsReader(string path, SafeTensorsHeader header, MemoryMappedFile? map, MemoryMappedViewAccessor? view, byte* data)
    {
        Path = path;
        Entries = header.Entries;
        Metadata = header.Metadata;
        _map = map;
        _view = view;
        _data = data;
        _byName = Entries.ToDictionary(e => e.Name, StringComparer.Ordinal);
    }

    public string Path { get; }

    /// <summary>Entries in file order (ascending data offset).</summary>
    public IReadOnlyList<SafeTensorsEntry> Entries { get; }

    /// <summary>The <c>__metadata__</c> map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public SafeTensorsEntry GetEntry(string name) =>
        _byName.TryGetValue(name, out var e) ? e : throw new CheckpointFormatException(Path, $"no tensor named '{name}'");

    /// <summary>Opens and validates <paramref name="path"/>; throws <see cref="CheckpointFormatException"/> on any problem.</summary>
    public static SafeTensorsReader Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        DTypeConversion.EnsureLittleEndian();
        // A FIFO, socket or device reports size 0: refuse it before opening (a FIFO would block).
        if (new FileInfo(path) is { Exists: true, Length: 0 })
            throw new CheckpointFormatException(path, "file is 0 bytes, shorter than the 8-byte header length of a safetensors file (or not a regular file: a FIFO, socket or device)");
        FileStream fs;
        try
        {
            fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.RandomAccess);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointFormatException(path, $"cannot open safetensors file: {e.Message}", e);
        }

        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        try
        {
            long length = fs.Length;
            if (length < 8)
                throw new CheckpointFormatException(path, $"file is {length} bytes, shorter than the 8-byte header length of a safetensors file");
            Span<byte> lenBytes = stackalloc byte[8];
            RandomAccess.Read(fs.SafeFileHandle, lenBytes, 0);
            ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
            if (headerLen > SafeTensors.MaxHeaderBytes)
                throw new CheckpointFormatException(path,
                    $"header length {headerLen} bytes is absurd (limit {SafeTensors.MaxHeaderBytes}); not a safetensors file or corrupt");
            if (8 + (long)headerLen > length)
                throw new CheckpointFormatException(path,
                    $"header length {headerLen} bytes runs past the end of the file ({length} bytes); the file is truncated or not a safetensors file");
            var header = new byte[headerLen];
            int got = RandomAccess.Read(fs.SafeFileHandle, header, 8);
            if (got != header.Length)
                throw new CheckpointFormatException(path, $"could read only {got} of {headerLen} header bytes");
            long dataLength = length - 8 - (long)headerLen;
            var parsed = SafeTensors.ParseHeader(header, dataLength, path);

            byte* data = null;
            map = MemoryMappedFile.CreateFromFile(fs, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* basePtr = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
            data = basePtr + view.PointerOffset + 8 + (long)headerLen;
            return new SafeTensorsReader(path, parsed, map, view, data);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            view?.Dispose();
            map?.Dispose();
            fs.Dispose();
            throw new CheckpointFormatException(path, $"cannot read safetensors file: {e.Message}", e);
        }
        catch
        {
            view?.Dispose();
            map?.Dispose();
            fs.Dispose();
            throw;
        }
    }

    /// <summary>The raw little-endian bytes of a tensor, valid until <see cref="Dispose"/>. Only for tensors under 2 GiB.</summary>
    public ReadOnlySpan<byte> GetRawBytes(string name)
    {
        var e = GetEntry(name);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (e.ByteLength > int.MaxValue)
            throw new CheckpointFormatException(Path, $"tensor '{name}': {e.ByteLength} bytes is too large for a span; use ReadTensor");
        return new ReadOnlySpan<byte>(_data + e.Begin, (int)e.ByteLength);
    }

    /// <summary>Reads one tensor converted to float32.</summary>
    public float[] ReadTensor(string name)
    {
        var e = GetEntry(name);
        long n = e.ElementCount;
        if (n > Array.MaxLength)
            throw new CheckpointFormatException(Path, $"tensor '{name}' has {n} elements, more than one float array can hold");
        var dst = new float[n];
        ReadTensor(name, dst);
        return dst;
    }

    /// <summary>Reads one tensor converted to float32 into <paramref name="destination"/> (exactly its element count).</summary>
    public void ReadTensor(string name, Span<float> destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var e = GetEntry(name);
        var dtype = e.DType ?? throw new CheckpointFormatException(Path,
            $"tensor '{name}' has dtype {e.DTypeName}, which is not supported (only F32, F16 and BF16 are read)");
        if (destination.Length != e.ElementCount)
            throw new ArgumentException($"tensor '{name}' has {e.ElementCount} elements, destination holds {destination.Length}");
        int size = DTypeConversion.SizeOf(dtype);
        const int chunk = 1 << 24;
        for (long i = 0; i < destination.Length; i += chunk)
        {
            int count = (int)Math.Min(chunk, destination.Length - i);
            var src = new ReadOnlySpan<byte>(_data + e.Begin + i * size, count * size);
            DTypeConversion.ToFloat32(src, dtype, destination.Slice((int)i, count));
        }
    }

    /// <summary>Reads every tensor (file order) into a <see cref="TensorFile"/>.</summary>
    public TensorFile ReadAll()
    {
        var unsupported = Entries.Where(e => e.DType is null).ToList();
        if (unsupported.Count > 0)
            throw new CheckpointFormatException(Path,
                $"{unsupported.Count} tensor(s) have dtypes this engine does not read (only F32, F16, BF16): " +
                string.Join(", ", unsupported.Take(10).Select(e => $"'{e.Name}' {e.DTypeName}")) + (unsupported.Count > 10 ? ", ..." : ""));
        long bytes = 0;
        foreach (var e in Entries) bytes = ResourceBudget.Add(bytes, ResourceBudget.Bytes(e.ElementCount, 4));
        ResourceBudget.Require(bytes, Path, $"{Entries.Count} tensors as float32");
        var tensors = new List<NamedTensor>(Entries.Count);
        foreach (var e in Entries)
            tensors.Add(new NamedTensor(e.Name, (int[])e.Shape.Clone(), ReadTensor(e.Name), e.DType!.Value));
        return new TensorFile(tensors, Metadata, Path, CheckpointFormat.SafeTensors);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map?.Dispose();
    }
}

/// <summary>A parsed and validated safetensors header.</summary>
internal sealed record SafeTensorsHeader(IReadOnlyList<SafeTensorsEntry> Entries, IReadOnlyDictionary<string, string> Metadata);

/// <summary>Reading and writing safetensors files (see the checkpoints spec).</summary>
internal static class SafeTensors
{
    /// <summary>Headers larger than this are refused as corrupt (100 MB).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    /// <summary>Reads a whole file (memory-mapped) into float32 tensors in file order.</summary>
    public static TensorFile Read(string path)
    {
        using var r = SafeTensorsReader.Open(path);
        return r.ReadAll();
    }

    /// <summary>Reads only the validated header (and metadata) of a file.</summary>
    public static SafeTensorsHeader ReadHeader(string path)
    {
        using var r = SafeTensorsReader.Open(path);
        return new SafeTensorsHeader(r.Entries, r.Metadata);
    }

    internal static TensorDType? ParseSupportedDType(string name) => name switch
    {
        "F32" => TensorDType.F32,
        "F16" => TensorDType.F16,
        "BF16" => TensorDType.BF16,
        _ => null,
    };

    /// <summary>Element size of every dtype the safetensors format defines; null for an unknown name.</summary>
    internal static int? DTypeSize(string name) => name switch
    {
        "BOOL" or "U8" or "I8" or "F8_E5M2" or "F8_E4M3" or "F8_E8M0" => 1,
        "I16" or "U16" or "F16" or "BF16" => 2,
        "I32" or "U32" or "F32" => 4,
        "I64" or "U64" or "F64" => 8,
        _ => null,
    };

    internal static string DTypeName(TensorDType t) => t switch
    {
        TensorDType.F32 => "F32",
        TensorDType.F16 => "F16",
        TensorDType.BF16 => "BF16",
        _ => throw new ArgumentException($"safetensors files are written as F32, F16 or BF16, not {t}"),
    };

    /// <summary>
    /// Parses and validates a header against a data section of <paramref name="dataLength"/> bytes: JSON object,
    /// no duplicate names, every entry with dtype/shape/data_offsets, known dtype, non-negative dims,
    /// 0 ≤ begin ≤ end ≤ dataLength, end − begin = product(shape)·size, no overlapping ranges.
    /// </summary>
    public static SafeTensorsHeader ParseHeader(ReadOnlyMemory<byte> json, long dataLength, string path)
    {
        JsonDocument doc;
        try
        {
            doc = StrictJson.Parse(json, path, "safetensors header");
        }
        catch (CheckpointFormatException e) when (e.Problem.Contains("duplicate key", StringComparison.Ordinal) && e.InnerException is null)
        {
            // Make the top-level case read as what it is.
            throw new CheckpointFormatException(path, e.Problem.Replace("in the top-level object", "(duplicate tensor name)", StringComparison.Ordinal));
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(path, $"safetensors header must be a JSON object, got {root.ValueKind}");

            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var entries = new List<SafeTensorsEntry>();
            foreach (var prop in root.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                        throw new CheckpointFormatException(path, $"__metadata__ must be an object of strings, got {prop.Value.ValueKind}");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String)
                            throw new CheckpointFormatException(path, $"__metadata__ value for \"{m.Name}\" must be a string, got {StrictJson.Show(m.Value)}");
                        metadata[m.Name] = m.Value.GetString()!;
                    }
                    continue;
                }
                entries.Add(ParseEntry(prop, dataLength, path));
            }

            // File order, overlap, gap and trailing-byte checks: the tensors tile the data section exactly (as the format requires).
            var ordered = entries.Select((e, i) => (e, i)).OrderBy(x => x.e.Begin).ThenBy(x => x.e.End).ThenBy(x => x.i).Select(x => x.e).ToList();
            SafeTensorsEntry? prev = null;
            long covered = 0;
            foreach (var e in ordered)
            {
                if (e.Begin == e.End) continue; // empty tensors occupy no bytes
                if (prev is not null && e.Begin < prev.End)
                    throw new CheckpointFormatException(path,
                        $"tensor '{e.Name}' data_offsets [{e.Begin}, {e.End}] overlap tensor '{prev.Name}' [{prev.Begin}, {prev.End}]");
                if (e.Begin != covered)
                    throw new CheckpointFormatException(path, $"tensor '{e.Name}' starts at data offset {e.Begin}, leaving a gap of {e.Begin - covered} bytes after offset {covered}");
                covered = e.End;
                prev = e;
            }
            if (covered != dataLength)
                throw new CheckpointFormatException(path, $"{dataLength - covered} bytes after the last tensor (offset {covered}); the data section must hold the tensors and nothing else");
            return new SafeTensorsHeader(ordered, metadata);
        }
    }

    private static SafeTensorsEntry ParseEntry(JsonProperty prop, long dataLength, string path)
    {
        string name = prop.Name;
        var v = prop.Value;
        if (name.Length == 0)
            throw new CheckpointFormatException(path, "tensor with an empty name");
        if (v.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, $"tensor '{name}': entry must be an object, got {StrictJson.Show(v)}");
        if (!v.TryGetProperty("dtype", out var dtypeEl))
            throw new CheckpointFormatException(path, $"tensor '{name}': entry has no \"dtype\"");
        if (!v.TryGetProperty("shape", out var shapeEl))
            throw new CheckpointFormatException(path, $"tensor '{name}': entry has no \"shape\"");
        if (!v.TryGetProperty("data_offsets", out var offEl))
            throw new CheckpointFormatException(path, $"tensor '{name}': entry has no \"data_offsets\"");

        if (dtypeEl.ValueKind != JsonValueKind.String)
            throw new CheckpointFormatException(path, $"tensor '{name}': \"dtype\" must be a string, got {StrictJson.Show(dtypeEl)}");
        string dtype = dtypeEl.GetString()!;
        int size = DTypeSize(dtype) ?? throw new CheckpointFormatException(path,
            $"tensor '{name}': unknown dtype \"{dtype}\" (this engine reads F32, F16, BF16)");

        if (shapeEl.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(path, $"tensor '{name}': \"shape\" must be an array, got {StrictJson.Show(shapeEl)}");
        var shape = new int[shapeEl.GetArrayLength()];
        int k = 0;
        foreach (var d in shapeEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim))
                throw new CheckpointFormatException(path, $"tensor '{name}': shape entry {StrictJson.Show(d)} is not an integer");
            if (dim < 0)
                throw new CheckpointFormatException(path, $"tensor '{name}': negative dimension {dim} in shape {StrictJson.Show(shapeEl)}");
            if (dim > int.MaxValue)
                throw new CheckpointFormatException(path, $"tensor '{name}': dimension {dim} is too large");
            shape[k++] = (int)dim;
        }

        if (offEl.ValueKind != JsonValueKind.Array || offEl.GetArrayLength() != 2)
            throw new CheckpointFormatException(path, $"tensor '{name}': \"data_offsets\" must be [begin, end], got {StrictJson.Show(offEl)}");
        var offs = new long[2];
        k = 0;
        foreach (var o in offEl.EnumerateArray())
        {
            if (o.ValueKind != JsonValueKind.Number || !o.TryGetInt64(out long x) || x < 0)
                throw new CheckpointFormatException(path, $"tensor '{name}': data offset {StrictJson.Show(o)} is not a non-negative integer");
            offs[k++] = x;
        }
        long begin = offs[0], end = offs[1];
        if (end < begin)
            throw new CheckpointFormatException(path, $"tensor '{name}': data_offsets end {end} is before begin {begin}");
        if (end > dataLength)
            throw new CheckpointFormatException(path,
                $"tensor '{name}': data_offsets [{begin}, {end}] run past the end of the data section ({dataLength} bytes); the file is truncated or corrupt");

        long count;
        try
        {
            count = NamedTensor.ElementCountOf(shape);
            long bytes = checked(count * size);
            if (bytes != end - begin)
                throw new CheckpointFormatException(path,
                    $"tensor '{name}': shape {NamedTensor.FormatShape(shape)} of {dtype} needs {bytes} bytes but data_offsets [{begin}, {end}] span {end - begin}");
        }
        catch (OverflowException)
        {
            throw new CheckpointFormatException(path, $"tensor '{name}': shape {NamedTensor.FormatShape(shape)} overflows");
        }
        return new SafeTensorsEntry(name, dtype, shape, begin, end);
    }

    // ---- writing -----------------------------------------------------------------------------------

    /// <summary>Writes <paramref name="file"/>'s tensors and metadata.</summary>
    public static void Write(string path, TensorFile file, TensorDType dtype = TensorDType.F32) =>
        Write(path, file.Tensors, file.Metadata, dtype);

    /// <summary>
    /// Writes tensors (in the given order) as <paramref name="dtype"/> (F32, F16 or BF16; rounding to nearest even)
    /// with an optional <c>__metadata__</c> map. The file is written to a temporary file in the same folder and
    /// renamed over <paramref name="path"/>, so readers never see a half-written file.
    /// </summary>
    public static void Write(string path, IEnumerable<NamedTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null,
                             TensorDType dtype = TensorDType.F32)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        DTypeConversion.EnsureLittleEndian();
        string dtypeName = DTypeName(dtype);
        int size = DTypeConversion.SizeOf(dtype);
        var list = tensors.ToList();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in list)
        {
            if (t.Name == "__metadata__") throw new ArgumentException("a tensor cannot be named __metadata__");
            if (!seen.Add(t.Name)) throw new ArgumentException($"duplicate tensor name '{t.Name}'");
        }

        byte[] header = BuildHeader(list, metadata, dtypeName, size);
        using var w = new AtomicWrite(path, 1 << 20);
        var fs = w.Stream;
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
        fs.Write(len);
        fs.Write(header);
        const int chunk = 1 << 20;
        var buffer = new byte[chunk * size];
        foreach (var t in list)
        {
            for (long i = 0; i < t.Data.LongLength; i += chunk)
            {
                int count = (int)Math.Min(chunk, t.Data.LongLength - i);
                var dst = buffer.AsSpan(0, count * size);
                DTypeConversion.FromFloat32(t.Data.AsSpan((int)i, count), dtype, dst);
                fs.Write(dst);
            }
        }
        w.Commit();
    }

    private static byte[] BuildHeader(List<NamedTensor> list, IReadOnlyDictionary<string, string>? metadata, string dtypeName, int size)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var kv in metadata) w.WriteString(kv.Key, kv.Value);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in list)
            {
                long bytes = checked(t.Data.LongLength * size);
                w.WriteStartObject(t.Name);
                w.WriteString("dtype", dtypeName);
                w.WriteStartArray("shape");
                foreach (int d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + bytes);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += bytes;
            }
            w.WriteEndObject();
        }
        // Pad with spaces so the data section starts 8-byte aligned.
        int pad = (int)((8 - (8 + ms.Length) % 8) % 8);
        for (int i = 0; i < pad; i++) ms.WriteByte((byte)' ');
        return ms.ToArray();
    }
}

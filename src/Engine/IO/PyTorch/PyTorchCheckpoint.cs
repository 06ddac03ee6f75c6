using System.Buffers.Binary;
using System.Collections;
using System.IO.MemoryMappedFiles;
using System.Text;
using Razorvine.Pickle;
using WhereToEdit.Engine.IO.PyTorch;

namespace WhereToEdit.Engine.IO;

/// <summary>
/// Reads <c>torch.save</c> checkpoints (.pth / .pt / .bin) in the zip format of PyTorch ≥ 1.6: <c>ARCHIVE/data.pkl</c>
/// (the pickled object), <c>ARCHIVE/data/KEY</c> (raw storages) and optionally <c>ARCHIVE/byteorder</c>.
/// Safe by construction: the pickle is checked opcode by opcode against a fixed allow-list of globals
/// (<see cref="PickleGuard.AllowedGlobals"/>) before it is unpickled, and unpickling only builds descriptors.
/// Storages are memory-mapped and only the bytes of the tensors that are kept are read; strides, storage offsets,
/// shared storages and F32/F16/BF16/F64 are handled. The state dict is found under the root or a wrapper key
/// (<see cref="WrapperKeys"/>, nested), and a <c>module.</c> prefix on every name (DataParallel) is removed.
/// Tensors of integer or bool type (buffers such as position_ids) are skipped and counted in the metadata key
/// <c>pytorch.skipped_tensors</c>. The legacy (pre-1.6, non-zip) format is read the same way (same guard, same bounds).
/// </summary>
internal static class PyTorchCheckpoint
{
    /// <summary>Keys under which training scripts nest the state dict, tried in this order.</summary>
    public static readonly IReadOnlyList<string> WrapperKeys = ["state_dict", "model_state_dict", "model", "module", "net", "network", "params"];

    /// <summary>Metadata key listing tensors that were not read (integer/bool buffers).</summary>
    public const string SkippedKey = "pytorch.skipped_tensors";

    /// <summary>Metadata key naming the wrapper path the state dict was found under (e.g. "model"), when not the root.</summary>
    public const string WrapperKey = "pytorch.state_dict_path";

    private static readonly byte[] LegacyMagic = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

    /// <summary>True when the file is a torch.save zip archive (a ZIP whose members include */data.pkl) or a legacy torch.save pickle.</summary>
    public static bool IsPyTorchFile(string path)
    {
        if (PathSafety.InputFileProblem(path) is not null) return false;   // never open a FIFO or device to sniff it
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            Span<byte> head = stackalloc byte[LegacyMagic.Length];
            int n = fs.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
            if (n == head.Length && head.SequenceEqual(LegacyMagic)) return true;
            if (!StoredZip.LooksLikeZip(head[..n])) return false;
            return StoredZip.ReadDirectory(fs, path).Any(m => m.Name.EndsWith("/data.pkl", StringComparison.Ordinal) || m.Name == "data.pkl");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or CheckpointFormatException)
        {
            return false;
        }
    }

    public static TensorFile Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        DTypeConversion.EnsureLittleEndian();
        FileStream fs;
        try
        {
            fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 12);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointFormatException(path, $"cannot open PyTorch checkpoint: {e.Message}", e);
        }
        using (fs)
        {
            long length = fs.Length;
            if (length == 0) throw new CheckpointFormatException(path, "file is empty (0 bytes), not a PyTorch checkpoint");
            var head = new byte[Math.Min(length, LegacyMagic.Length)];
            StoredZip.ReadAt(fs, 0, head, path);
            if (head.AsSpan().SequenceEqual(LegacyMagic))
                return ReadLegacy(fs, path);
            if (!StoredZip.LooksLikeZip(head))
                throw new CheckpointFormatException(path, "not a PyTorch zip checkpoint (no ZIP signature)");
            var members = StoredZip.ReadDirectory(fs, path);
            return ReadArchive(fs, members, path);
        }
    }

    private static TensorFile ReadArchive(FileStream fs, List<ZipMember> members, string path)
    {
        var pkl = members.Where(m => m.Name.EndsWith("/data.pkl", StringComparison.Ordinal) && m.Name.IndexOf('/') == m.Name.Length - "/data.pkl".Length).ToList();
        if (pkl.Count != 1)
            throw new CheckpointFormatException(path, pkl.Count == 0
                ? "not a torch.save archive: no ARCHIVE/data.pkl member (truncated, or another ZIP format)"
                : $"ambiguous torch.save archive: {pkl.Count} data.pkl members");
        var main = pkl[0];
        string prefix = main.Name[..^"data.pkl".Length];
        var byName = new Dictionary<string, ZipMember>(StringComparer.Ordinal);
        foreach (var m in members)
            if (!byName.TryAdd(m.Name, m)) throw new CheckpointFormatException(path, $"duplicate ZIP member '{m.Name}'");

        if (byName.TryGetValue(prefix + "byteorder", out var order))
        {
            string bo = Encoding.ASCII.GetString(ReadMember(fs, order, path, 64)).Trim();
            if (bo != "little")
                throw new CheckpointFormatException(path, $"{order.Name}: byte order '{bo}' is not supported (only 'little'); re-save the checkpoint on a little-endian machine");
        }

        byte[] pickle = ReadMember(fs, main, path, fs.Length);
        PickleGuard.Check(pickle, path, main.Name);
        var root = Unpickle(pickle, fs.Length, path, main.Name);
        return Build(fs, root, main.Name, key =>
            byName.TryGetValue(prefix + "data/" + key, out var member) ? member
            : throw new CheckpointFormatException(path, $"storage '{key}' has no member {prefix}data/{key} (truncated archive?)"), path);
    }

    private static object? Unpickle(byte[] pickle, long fileLength, string path, string what)
    {
        try
        {
            return TorchUnpickler.Load(pickle, fileLength).Root;
        }
        catch (Exception e) when (e is not (OutOfMemoryException or CheckpointFormatException))   // any shape of hostile pickle → one clear error
        {
            throw new CheckpointFormatException(path, $"{what}: malformed pickle: {e.Message}", e);
        }
    }

    /// <summary>
    /// The legacy format (torch.save before 1.6, or _use_new_zipfile_serialization=False): five pickles in a row —
    /// magic number, protocol version, sys_info, the object (persistent ids with a sixth view_metadata field), the sorted
    /// storage keys — then per key an int64 element count and the storage's bytes.
    /// </summary>
    private static TensorFile ReadLegacy(FileStream fs, string path)
    {
        // The pickles sit at the front; the tensor data follows. 64 MiB of pickle is far beyond any state dict.
        int window = (int)Math.Min(fs.Length, 64L << 20);
        var buf = new byte[window];
        StoredZip.ReadAt(fs, 0, buf, path);
        int pos = 0;
        byte[] Next(string what)
        {
            int start = pos;
            pos = PickleGuard.CheckOne(buf, start, window, path, $"legacy {what} pickle");
            return buf.AsSpan(start, pos - start).ToArray();
        }
        Next("magic number");
        var protocol = Unpickle(Next("protocol version"), fs.Length, path, "legacy protocol version");
        if (protocol is not 1001)
            throw new CheckpointFormatException(path, $"legacy torch.save protocol version {protocol ?? "None"} is not supported (1001 is)");
        if (Unpickle(Next("sys_info"), fs.Length, path, "legacy sys_info") is Hashtable sys && sys["little_endian"] is false)
            throw new CheckpointFormatException(path, "legacy sys_info says big-endian: byte order 'big' is not supported (only 'little'); re-save the checkpoint on a little-endian machine");
        var main = Next("object");
        var keys = Unpickle(Next("storage keys"), fs.Length, path, "legacy storage keys") as IList
            ?? throw new CheckpointFormatException(path, "legacy storage keys are not a list");
        object? root;
        IReadOnlyDictionary<string, TorchStorage> storages;
        try
        {
            (root, storages) = TorchUnpickler.Load(main, fs.Length);
        }
        catch (Exception e) when (e is not (OutOfMemoryException or CheckpointFormatException))
        {
            throw new CheckpointFormatException(path, $"legacy object pickle: malformed pickle: {e.Message}", e);
        }
        // Storage records follow in key order: int64 element count, then the bytes.
        var members = new Dictionary<string, ZipMember>(StringComparer.Ordinal);
        long at = pos;
        var count = new byte[8];
        foreach (var k in keys)
        {
            if (k is not string key || !storages.TryGetValue(key, out var s))
                throw new CheckpointFormatException(path, $"legacy storage key {k ?? "None"} is not a storage of the object");
            if (at > fs.Length - 8) throw new CheckpointFormatException(path, $"truncated legacy checkpoint: storage '{key}' starts beyond the end of the file");
            StoredZip.ReadAt(fs, at, count, path);
            long n = BinaryPrimitives.ReadInt64LittleEndian(count);
            if (n != s.ElementCount)
                throw new CheckpointFormatException(path, $"legacy storage '{key}' holds {n} elements but the object says {s.ElementCount}");
            long bytes = n * s.ElementSize;
            members[key] = new ZipMember("storage " + key, 0, bytes, bytes, at + 8);
            at += 8 + bytes;
            if (at > fs.Length) throw new CheckpointFormatException(path, $"truncated legacy checkpoint: storage '{key}' runs past the end of the file");
        }
        return Build(fs, root, "legacy object pickle", key =>
            members.TryGetValue(key, out var m) ? m : throw new CheckpointFormatException(path, $"storage '{key}' is not among the legacy storage records"), path);
    }

    private static TensorFile Build(FileStream fs, object? root, string pickleName, Func<string, ZipMember> storageMember, string path)
    {

        var (dict, where) = FindStateDict(root, path, "", 0);
        var entries = new List<(string Name, TorchTensorRef Ref)>();
        var skipped = new List<string>();
        foreach (DictionaryEntry kv in dict)
        {
            if (kv.Value is not TorchTensorRef t) continue;   // non-tensor entries (versions, counters)
            if (kv.Key is not string name || name.Length == 0)
                throw new CheckpointFormatException(path, $"{pickleName}: state dict key {kv.Key ?? "None"} is not a non-empty string");
            if (t.Storage.DType is null) { skipped.Add($"{name} ({t.Storage.TypeName})"); continue; }
            entries.Add((name, t));
        }
        if (entries.Count == 0)
            throw new CheckpointFormatException(path, $"{pickleName}: the state dict{(where.Length > 0 ? $" under '{where}'" : "")} holds no floating-point tensors");
        entries.Sort((a, b) => a.Ref.Sequence.CompareTo(b.Ref.Sequence));
        // DataParallel / DistributedDataParallel save every name under "module.".
        if (entries.All(e => e.Name.StartsWith("module.", StringComparison.Ordinal) && e.Name.Length > 7))
            entries = entries.Select(e => (e.Name["module.".Length..], e.Ref)).ToList();

        var tensors = new List<NamedTensor>(entries.Count);
        using (var map = MemoryMappedFile.CreateFromFile(fs, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true))
        using (var view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read))
        {
            foreach (var (name, t) in entries)
            {
                ZipMember member;
                try
                {
                    member = storageMember(t.Storage.Key);
                }
                catch (CheckpointFormatException e)
                {
                    throw new CheckpointFormatException(path, $"tensor '{name}': {e.Problem}", e);
                }
                try
                {
                    tensors.Add(Materialize(view, member, name, t, path));
                }
                catch (OverflowException e)
                {
                    throw new CheckpointFormatException(path, $"tensor '{name}': sizes {string.Join("×", t.Size)} with strides {string.Join(",", t.Stride)} overflow", e);
                }
            }
        }
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        if (skipped.Count > 0) metadata[SkippedKey] = $"{skipped.Count} non-floating-point tensor(s) not read: {string.Join(", ", skipped.Take(8))}{(skipped.Count > 8 ? ", …" : "")}";
        if (where.Length > 0) metadata[WrapperKey] = where;
        try
        {
            return new TensorFile(tensors, metadata, path, CheckpointFormat.PyTorch);
        }
        catch (ArgumentException e)
        {
            throw new CheckpointFormatException(path, e.Message, e);
        }
    }

    private static (Hashtable Dict, string Where) FindStateDict(object? o, string path, string where, int depth)
    {
        if (o is not Hashtable h)
            throw new CheckpointFormatException(path, $"data.pkl{(where.Length > 0 ? $" under '{where}'" : "")} holds a {Describe(o)}, not a dict of tensors (save model.state_dict(), not the model object)");
        if (h.Values.OfType<TorchTensorRef>().Any()) return (h, where);
        if (depth < 4)
            foreach (var key in WrapperKeys)
                if (h[key] is Hashtable inner) return FindStateDict(inner, path, where.Length == 0 ? key : where + "." + key, depth + 1);
        var keys = h.Keys.Cast<object?>().Select(k => k?.ToString() ?? "None").Take(10);
        throw new CheckpointFormatException(path, $"no state dict found{(where.Length > 0 ? $" under '{where}'" : "")}: the dict holds no tensors and no {string.Join("/", WrapperKeys)} entry (keys: {string.Join(", ", keys)})");
    }

    private static string Describe(object? o) => o switch
    {
        null => "None",
        TorchTensorRef => "single tensor",
        IList => "list",
        _ => o.GetType().Name,
    };

    private static byte[] ReadMember(FileStream fs, ZipMember m, string path, long limit)
    {
        if (m.Method != 0)
            throw new CheckpointFormatException(path, $"member '{m.Name}' is compressed (method {m.Method}); torch.save stores members uncompressed");
        if (m.Size > limit || m.Size > Array.MaxLength)
            throw new CheckpointFormatException(path, $"member '{m.Name}' is too large ({m.Size} bytes)");
        var bytes = new byte[m.Size];
        StoredZip.ReadAt(fs, m.DataOffset, bytes, path);
        return bytes;
    }

    private static unsafe NamedTensor Materialize(MemoryMappedViewAccessor view, ZipMember member, string name, TorchTensorRef t, string path)
    {
        var s = t.Storage;
        var dtype = s.DType!.Value;
        if (member.Method != 0)
            throw new CheckpointFormatException(path, $"tensor '{name}': storage member '{member.Name}' is compressed (method {member.Method}); torch.save stores storages uncompressed");
        if (member.Size < s.ElementCount * s.ElementSize)
            throw new CheckpointFormatException(path, $"tensor '{name}': storage '{s.Key}' should hold {s.ElementCount} × {s.ElementSize} bytes but its member has {member.Size} (truncated?)");
        int rank = t.Size.Length;
        var shape = new int[rank];
        long count = 1, last = t.Offset;
        bool contiguous = true;
        long expected = 1;
        for (int d = rank - 1; d >= 0; d--)
        {
            long n = t.Size[d], st = t.Stride[d];
            if (n < 0 || n > int.MaxValue || st < 0)
                throw new CheckpointFormatException(path, $"tensor '{name}': invalid size {n} or stride {st} in dimension {d}");
            shape[d] = (int)n;
            if (n == 0) { count = 0; continue; }
            count = checked(count * n);
            last = checked(last + (n - 1) * st);
            if (n != 1 && st != expected) contiguous = false;
            expected = checked(expected * n);
        }
        if (t.Offset < 0) throw new CheckpointFormatException(path, $"tensor '{name}': negative storage offset {t.Offset}");
        if (count > 0 && last >= s.ElementCount)
            throw new CheckpointFormatException(path, $"tensor '{name}': reaches element {last} of storage '{s.Key}', which holds {s.ElementCount} (storage out of bounds)");
        if (count > s.ElementCount)
            throw new CheckpointFormatException(path, $"tensor '{name}': {count} elements from a storage of {s.ElementCount} (stride-0 expansion is not supported)");
        var data = new float[count];
        if (count == 0) return new NamedTensor(name, shape, data, dtype);
        int es = s.ElementSize;
        byte* basePtr = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
        try
        {
            byte* storage = basePtr + view.PointerOffset + member.DataOffset;
            if (contiguous)
            {
                DTypeConversion.ToFloat32(new ReadOnlySpan<byte>(storage + t.Offset * es, checked((int)(count * es))), dtype, data);
            }
            else
            {
                // Gather a strided view element by element in row-major order.
                var index = new long[rank];
                long pos = t.Offset;
                for (long k = 0; k < count; k++)
                {
                    DTypeConversion.ToFloat32(new ReadOnlySpan<byte>(storage + pos * es, es), dtype, data.AsSpan((int)k, 1));
                    for (int d = rank - 1; d >= 0; d--)
                    {
                        if (++index[d] < t.Size[d]) { pos += t.Stride[d]; break; }
                        pos -= (t.Size[d] - 1) * t.Stride[d];
                        index[d] = 0;
                    }
                }
            }
        }
        finally
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
        }
        return new NamedTensor(name, shape, data, dtype);
    }
}

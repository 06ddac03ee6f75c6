using System.Buffers.Binary;
using System.Text;
using WhereToEdit.Engine.IO.PyTorch;

namespace WhereToEdit.Engine.IO;

/// <summary>
/// Writes a state dict the way <c>torch.save</c> does (zip format, what <c>torch.load</c> of PyTorch ≥ 1.6 reads):
/// <c>ARCHIVE/data.pkl</c> (a protocol-2 pickle of an OrderedDict of <c>torch._utils._rebuild_tensor_v2</c> calls),
/// one uncompressed, 64-byte-aligned <c>ARCHIVE/data/N</c> storage per tensor, <c>ARCHIVE/version</c> and
/// <c>ARCHIVE/byteorder</c>. The pickle names only globals from <see cref="PickleGuard.AllowedGlobals"/>, so it also loads with
/// <c>torch.load(..., weights_only=True)</c>. Written to a temporary file in the target folder, flushed and renamed.
/// </summary>
internal static class PyTorchWriter
{
    public static void Write(string path, IReadOnlyList<NamedTensor> tensors, TensorDType dtype = TensorDType.F32)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);
        if (dtype is not (TensorDType.F32 or TensorDType.F16 or TensorDType.BF16))
            throw new ArgumentException($"PyTorch export supports F32, F16 and BF16, not {dtype}");
        string storageType = dtype switch { TensorDType.F16 => "HalfStorage", TensorDType.BF16 => "BFloat16Storage", _ => "FloatStorage" };
        string full = Path.GetFullPath(path);
        string dir = OutputPaths.CreateParentFolder(full);
        // The archive's folder name is the file's stem, as torch.save does (any name loads).
        string archive = new string(Path.GetFileNameWithoutExtension(full).Select(ch => char.IsAsciiLetterOrDigit(ch) || ch is '_' or '-' ? ch : '_').ToArray());
        if (archive.Length == 0) archive = "archive";
        string temp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                var zip = new StoredZipWriter(fs);
                zip.Add($"{archive}/data.pkl", Pickle(tensors, storageType));
                for (int i = 0; i < tensors.Count; i++)
                {
                    var t = tensors[i];
                    var bytes = new byte[t.Data.LongLength * DTypeConversion.SizeOf(dtype)];
                    DTypeConversion.FromFloat32(t.Data, dtype, bytes);
                    zip.Add($"{archive}/data/{i}", bytes);
                }
                zip.Add($"{archive}/version", "3\n"u8.ToArray());
                zip.Add($"{archive}/byteorder", "little"u8.ToArray());
                zip.Finish();
                fs.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>protocol 2: OrderedDict(name → _rebuild_tensor_v2(storage pid, 0, size, contiguous stride, False, OrderedDict())).</summary>
    private static byte[] Pickle(IReadOnlyList<NamedTensor> tensors, string storageType)
    {
        var p = new MemoryStream();
        void Op(byte b) => p.WriteByte(b);
        void Str(string s)
        {
            var b = Encoding.UTF8.GetBytes(s);
            Op((byte)'X');
            Span<byte> n = stackalloc byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(n, b.Length);
            p.Write(n);
            p.Write(b);
        }
        void Int(long v)
        {
            if (v < 0 || v > int.MaxValue) throw new ArgumentException($"value {v} does not fit a pickle BININT");
            Op((byte)'J');
            Span<byte> n = stackalloc byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(n, (int)v);
            p.Write(n);
        }
        void Global(string module, string name) => p.Write(Encoding.ASCII.GetBytes($"c{module}\n{name}\n"));
        void EmptyOrderedDict() { Global("collections", "OrderedDict"); Op((byte)')'); Op((byte)'R'); }

        Op(0x80); Op(2);                                   // PROTO 2
        EmptyOrderedDict();
        Op((byte)'(');                                     // MARK for SETITEMS
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            Str(t.Name);
            Global("torch._utils", "_rebuild_tensor_v2");
            Op((byte)'(');                                 // args tuple
            Op((byte)'(');                                 // persistent id
            Str("storage"); Global("torch", storageType); Str(i.ToString(System.Globalization.CultureInfo.InvariantCulture)); Str("cpu"); Int(t.ElementCount);
            Op((byte)'t');
            Op((byte)'Q');                                 // BINPERSID
            Int(0);                                        // storage offset
            Op((byte)'(');
            foreach (int d in t.Shape) Int(d);
            Op((byte)'t');
            Op((byte)'(');
            long stride = 1;
            var strides = new long[t.Rank];
            for (int d = t.Rank - 1; d >= 0; d--) { strides[d] = stride; stride *= Math.Max(1, t.Shape[d]); }
            foreach (long s in strides) Int(s);
            Op((byte)'t');
            Op(0x89);                                      // requires_grad False
            EmptyOrderedDict();                            // backward hooks
            Op((byte)'t');
            Op((byte)'R');
        }
        Op((byte)'u');                                     // SETITEMS
        Op((byte)'.');
        return p.ToArray();
    }

    /// <summary>Minimal ZIP writer: stored members with CRC-32, data aligned to 64 bytes through the extra field (as torch.save does).</summary>
    private sealed class StoredZipWriter(FileStream fs)
    {
        private readonly List<(byte[] Name, uint Crc, long Size, long Offset, int Extra)> _members = [];

        public void Add(string name, byte[] data)
        {
            if (data.LongLength >= uint.MaxValue || fs.Position >= uint.MaxValue)
                throw new ArgumentException($"member '{name}' is too large for this writer (ZIP64 is not written)");
            var nameBytes = Encoding.UTF8.GetBytes(name);
            long offset = fs.Position;
            long dataStart = offset + 30 + nameBytes.Length + 4;
            int pad = (int)((64 - dataStart % 64) % 64);
            int extra = 4 + pad;
            uint crc = Crc32Stream.Compute(data);
            var h = new byte[30];
            BinaryPrimitives.WriteUInt32LittleEndian(h, 0x04034b50);
            BinaryPrimitives.WriteUInt16LittleEndian(h.AsSpan(4), 20);
            BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(14), crc);
            BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(18), (uint)data.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(22), (uint)data.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(h.AsSpan(26), (ushort)nameBytes.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(h.AsSpan(28), (ushort)extra);
            fs.Write(h);
            fs.Write(nameBytes);
            var ex = new byte[extra];
            BinaryPrimitives.WriteUInt16LittleEndian(ex, 0x4246);   // "FB": torch.save's padding record
            BinaryPrimitives.WriteUInt16LittleEndian(ex.AsSpan(2), (ushort)pad);
            fs.Write(ex);
            fs.Write(data);
            _members.Add((nameBytes, crc, data.Length, offset, extra));
        }

        public void Finish()
        {
            if (_members.Count > ushort.MaxValue) throw new ArgumentException($"{_members.Count} members are too many for this writer (ZIP64 is not written)");
            long start = fs.Position;
            foreach (var m in _members)
            {
                var c = new byte[46];
                BinaryPrimitives.WriteUInt32LittleEndian(c, 0x02014b50);
                BinaryPrimitives.WriteUInt16LittleEndian(c.AsSpan(4), 20);
                BinaryPrimitives.WriteUInt16LittleEndian(c.AsSpan(6), 20);
                BinaryPrimitives.WriteUInt32LittleEndian(c.AsSpan(16), m.Crc);
                BinaryPrimitives.WriteUInt32LittleEndian(c.AsSpan(20), (uint)m.Size);
                BinaryPrimitives.WriteUInt32LittleEndian(c.AsSpan(24), (uint)m.Size);
                BinaryPrimitives.WriteUInt16LittleEndian(c.AsSpan(28), (ushort)m.Name.Length);
                BinaryPrimitives.WriteUInt32LittleEndian(c.AsSpan(42), (uint)m.Offset);
                fs.Write(c);
                fs.Write(m.Name);
            }
            long size = fs.Position - start;
            var e = new byte[22];
            BinaryPrimitives.WriteUInt32LittleEndian(e, 0x06054b50);
            BinaryPrimitives.WriteUInt16LittleEndian(e.AsSpan(8), (ushort)_members.Count);
            BinaryPrimitives.WriteUInt16LittleEndian(e.AsSpan(10), (ushort)_members.Count);
            BinaryPrimitives.WriteUInt32LittleEndian(e.AsSpan(12), (uint)size);
            BinaryPrimitives.WriteUInt32LittleEndian(e.AsSpan(16), (uint)start);
            fs.Write(e);
        }
    }
}

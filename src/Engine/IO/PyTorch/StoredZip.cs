using System.Buffers.Binary;
using System.Text;

namespace WhereToEdit.Engine.IO.PyTorch;

/// <summary>One member of a ZIP archive: name, compression method, sizes and where its bytes start in the file.</summary>
internal sealed record ZipMember(string Name, int Method, long CompressedSize, long Size, long DataOffset);

/// <summary>
/// The central directory of a ZIP archive (ZIP64 included), read with every offset and size checked against the
/// file's length, so a member's bytes can be memory-mapped in place. torch.save writes its members uncompressed
/// ("stored"), which is what makes that possible; compressed members are listed but not readable here.
/// </summary>
internal static class StoredZip
{
    private const uint EocdSignature = 0x06054b50, Zip64EocdSignature = 0x06064b50, Zip64LocatorSignature = 0x07064b50;
    private const uint CentralSignature = 0x02014b50, LocalSignature = 0x04034b50;

    /// <summary>True when the file starts like a ZIP archive (local header or empty-archive EOCD).</summary>
    public static bool LooksLikeZip(ReadOnlySpan<byte> head) =>
        head.Length >= 4 && head[0] == 'P' && head[1] == 'K' && (head[2] == 3 && head[3] == 4 || head[2] == 5 && head[3] == 6);

    public static List<ZipMember> ReadDirectory(FileStream fs, string path)
    {
        long length = fs.Length;
        if (length < 22) throw new CheckpointFormatException(path, $"truncated ZIP archive ({length} bytes, shorter than an end-of-central-directory record)");
        // The EOCD record sits at the end, followed by a comment of at most 65535 bytes.
        int tailLength = (int)Math.Min(length, 22 + 65535);
        var tail = new byte[tailLength];
        ReadAt(fs, length - tailLength, tail, path);
        int eocd = -1;
        for (int i = tailLength - 22; i >= 0; i--)
            if (BinaryPrimitives.ReadUInt32LittleEndian(tail.AsSpan(i)) == EocdSignature) { eocd = i; break; }
        if (eocd < 0) throw new CheckpointFormatException(path, "truncated or not a ZIP archive: no end-of-central-directory record");
        var e = tail.AsSpan(eocd);
        long entries = BinaryPrimitives.ReadUInt16LittleEndian(e[10..]);
        long dirSize = BinaryPrimitives.ReadUInt32LittleEndian(e[12..]);
        long dirOffset = BinaryPrimitives.ReadUInt32LittleEndian(e[16..]);
        long eocdPosition = length - tailLength + eocd;
        if (entries == 0xFFFF || dirSize == 0xFFFFFFFF || dirOffset == 0xFFFFFFFF)
        {
            // ZIP64: the locator sits just before the EOCD record and points at the ZIP64 EOCD record.
            if (eocdPosition < 20) throw new CheckpointFormatException(path, "truncated ZIP64 archive: no ZIP64 locator");
            var loc = new byte[20];
            ReadAt(fs, eocdPosition - 20, loc, path);
            if (BinaryPrimitives.ReadUInt32LittleEndian(loc) != Zip64LocatorSignature)
                throw new CheckpointFormatException(path, "corrupt ZIP64 archive: ZIP64 locator missing");
            long z64 = checked((long)BinaryPrimitives.ReadUInt64LittleEndian(loc.AsSpan(8)));
            if (z64 < 0 || z64 > length - 56) throw new CheckpointFormatException(path, "corrupt ZIP64 archive: ZIP64 end record out of bounds");
            var rec = new byte[56];
            ReadAt(fs, z64, rec, path);
            if (BinaryPrimitives.ReadUInt32LittleEndian(rec) != Zip64EocdSignature)
                throw new CheckpointFormatException(path, "corrupt ZIP64 archive: bad ZIP64 end record");
            entries = ToLong(BinaryPrimitives.ReadUInt64LittleEndian(rec.AsSpan(32)), path);
            dirSize = ToLong(BinaryPrimitives.ReadUInt64LittleEndian(rec.AsSpan(40)), path);
            dirOffset = ToLong(BinaryPrimitives.ReadUInt64LittleEndian(rec.AsSpan(48)), path);
        }
        if (dirOffset > length || dirSize > length - dirOffset)
            throw new CheckpointFormatException(path, $"truncated ZIP archive: central directory [{dirOffset}, +{dirSize}) lies beyond the file's {length} bytes");
        // Each central record is at least 46 bytes: the count is bounded by the directory's size before anything is allocated.
        if (entries > dirSize / 46)
            throw new CheckpointFormatException(path, $"corrupt ZIP archive: {entries} entries cannot fit a {dirSize}-byte central directory");
        var dir = new byte[dirSize];
        ReadAt(fs, dirOffset, dir, path);
        var members = new List<ZipMember>((int)entries);
        int p = 0;
        var local = new byte[30];
        for (long n = 0; n < entries; n++)
        {
            if (p + 46 > dir.Length || BinaryPrimitives.ReadUInt32LittleEndian(dir.AsSpan(p)) != CentralSignature)
                throw new CheckpointFormatException(path, $"corrupt ZIP archive: central directory record {n} is malformed");
            var c = dir.AsSpan(p);
            int flags = BinaryPrimitives.ReadUInt16LittleEndian(c[8..]);
            int method = BinaryPrimitives.ReadUInt16LittleEndian(c[10..]);
            long compressed = BinaryPrimitives.ReadUInt32LittleEndian(c[20..]);
            long size = BinaryPrimitives.ReadUInt32LittleEndian(c[24..]);
            int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(c[28..]);
            int extraLength = BinaryPrimitives.ReadUInt16LittleEndian(c[30..]);
            int commentLength = BinaryPrimitives.ReadUInt16LittleEndian(c[32..]);
            long headerOffset = BinaryPrimitives.ReadUInt32LittleEndian(c[42..]);
            if (p + 46 + nameLength + extraLength + commentLength > dir.Length)
                throw new CheckpointFormatException(path, $"corrupt ZIP archive: central directory record {n} overruns the directory");
            string name = Encoding.UTF8.GetString(c.Slice(46, nameLength));
            var extra = c.Slice(46 + nameLength, extraLength);
            // ZIP64 extended information: the 0xFFFFFFFF fields, in order, as 8-byte values.
            while (extra.Length >= 4)
            {
                int id = BinaryPrimitives.ReadUInt16LittleEndian(extra), len = BinaryPrimitives.ReadUInt16LittleEndian(extra[2..]);
                if (4 + len > extra.Length) break;
                if (id == 1)
                {
                    var z = extra.Slice(4, len);
                    int q = 0;
                    bool ok = true;
                    if (size == 0xFFFFFFFF) { ok &= q + 8 <= z.Length; if (ok) size = ToLong(BinaryPrimitives.ReadUInt64LittleEndian(z[q..]), path); q += 8; }
                    if (compressed == 0xFFFFFFFF) { ok &= q + 8 <= z.Length; if (ok) compressed = ToLong(BinaryPrimitives.ReadUInt64LittleEndian(z[q..]), path); q += 8; }
                    if (headerOffset == 0xFFFFFFFF) { ok &= q + 8 <= z.Length; if (ok) headerOffset = ToLong(BinaryPrimitives.ReadUInt64LittleEndian(z[q..]), path); }
                    if (!ok) throw new CheckpointFormatException(path, $"corrupt ZIP64 extra field of member '{name}'");
                }
                extra = extra[(4 + len)..];
            }
            if ((flags & 1) != 0) throw new CheckpointFormatException(path, $"member '{name}' is encrypted");
            if (headerOffset > length - 30)
                throw new CheckpointFormatException(path, $"truncated ZIP archive: member '{name}' starts beyond the end of the file");
            ReadAt(fs, headerOffset, local, path);
            if (BinaryPrimitives.ReadUInt32LittleEndian(local) != LocalSignature)
                throw new CheckpointFormatException(path, $"corrupt ZIP archive: member '{name}' has no local header");
            long dataOffset = headerOffset + 30 + BinaryPrimitives.ReadUInt16LittleEndian(local.AsSpan(26)) + BinaryPrimitives.ReadUInt16LittleEndian(local.AsSpan(28));
            if (dataOffset > length || compressed > length - dataOffset)
                throw new CheckpointFormatException(path, $"truncated ZIP archive: member '{name}' ({compressed} bytes at {dataOffset}) runs past the end of the file ({length} bytes)");
            if (method == 0 && compressed != size)
                throw new CheckpointFormatException(path, $"corrupt ZIP archive: stored member '{name}' has compressed size {compressed} but size {size}");
            members.Add(new ZipMember(name, method, compressed, size, dataOffset));
            p += 46 + nameLength + extraLength + commentLength;
        }
        return members;
    }

    private static long ToLong(ulong v, string path) =>
        v <= long.MaxValue ? (long)v : throw new CheckpointFormatException(path, "corrupt ZIP64 archive: size or offset out of range");

    internal static void ReadAt(FileStream fs, long offset, Span<byte> buffer, string path)
    {
        fs.Seek(offset, SeekOrigin.Begin);
        int done = 0;
        while (done < buffer.Length)
        {
            int n = fs.Read(buffer[done..]);
            if (n == 0) throw new CheckpointFormatException(path, $"truncated file: {buffer.Length} bytes wanted at offset {offset}");
            done += n;
        }
    }
}

using System.Buffers.Binary;
using System.IO.Compression;

namespace WhereToEdit.Engine.IO;

/// <summary>An IDX file (MNIST / Fashion-MNIST format) that cannot be used; the message names the file.</summary>
internal sealed class IdxFormatException(string filePath, string problem, Exception? inner = null)
    : Exception($"{CheckpointFormatException.Describe(filePath)}: {problem}", inner)
{
    public string FilePath { get; } = filePath;
    public string Problem { get; } = problem;
}

/// <summary>Unsigned-byte images [count, rows, cols] from an IDX3 file (magic 0x00000803).</summary>
internal sealed class IdxImages
{
    private readonly byte[] _pixels;

    internal IdxImages(string path, int count, int rows, int cols, byte[] pixels)
    {
        Path = path; Count = count; Rows = rows; Cols = cols;
        _pixels = pixels;
    }

    public string Path { get; }
    public int Count { get; }
    public int Rows { get; }
    public int Cols { get; }

    /// <summary>Bytes per image (rows·cols).</summary>
    public int ImageBytes => Rows * Cols;

    /// <summary>Image <paramref name="index"/>: rows·cols gray values, row-major, 0 = background.</summary>
    public ReadOnlySpan<byte> Image(int index)
    {
        if ((uint)index >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"{Path} holds {Count} images");
        return _pixels.AsSpan(index * ImageBytes, ImageBytes);
    }

    /// <summary>A copy of image <paramref name="index"/>.</summary>
    public byte[] GetImage(int index) => Image(index).ToArray();
}

/// <summary>Unsigned-byte labels [count] from an IDX1 file (magic 0x00000801).</summary>
internal sealed class IdxLabels
{
    private readonly byte[] _labels;

    internal IdxLabels(string path, byte[] labels)
    {
        Path = path;
        _labels = labels;
    }

    public string Path { get; }
    public int Count => _labels.Length;
    public byte this[int index] => (uint)index < (uint)Count ? _labels[index] : throw new ArgumentOutOfRangeException(nameof(index), index, $"{Path} holds {Count} labels");
    public ReadOnlySpan<byte> All => _labels;
}

/// <summary>
/// Reads IDX files, gzipped (detected by the gzip magic 1f 8b) or plain. Only unsigned-byte data is supported: images
/// (magic 0x00000803, dims [n, rows, cols]) and labels (0x00000801, [n]). The header is validated (magic, positive
/// dimensions, a size below 2 GiB) and the data must be exactly n·rows·cols (or n) bytes: a truncated file or
/// trailing bytes are refused. Every error is an <see cref="IdxFormatException"/> naming the file.
/// </summary>
internal static class IdxReader
{
    public const int ImagesMagic = 0x00000803;
    public const int LabelsMagic = 0x00000801;

    public static IdxImages ReadImages(string path)
    {
        var (dims, data) = Read(path, ImagesMagic, 3, "images");
        return new IdxImages(path, dims[0], dims[1], dims[2], data);
    }

    public static IdxLabels ReadLabels(string path)
    {
        var (_, data) = Read(path, LabelsMagic, 1, "labels");
        return new IdxLabels(path, data);
    }

    private static (int[] Dims, byte[] Data) Read(string path, int expectedMagic, int rank, string what)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path)) throw new IdxFormatException(path, "is a folder, not an IDX file");
        if (!File.Exists(path)) throw new IdxFormatException(path, "no such file");
        if (new FileInfo(path).Length == 0) throw new IdxFormatException(path, "file is 0 bytes, too short for an IDX header (or not a regular file: a FIFO, socket or device)");
        try
        {
            using var file = File.OpenRead(path);
            bool gzip = file.Length >= 2 && file.ReadByte() == 0x1f && file.ReadByte() == 0x8b;
            file.Position = 0;
            using Stream stream = gzip ? new GZipStream(file, CompressionMode.Decompress) : file;
            string kind = gzip ? "gzipped IDX" : "IDX";

            Span<byte> word = stackalloc byte[4];
            if (!ReadFully(stream, word)) throw new IdxFormatException(path, $"{kind} file too short for its 4-byte magic number");
            int magic = BinaryPrimitives.ReadInt32BigEndian(word);
            if (magic != expectedMagic)
            {
                string hint = magic switch
                {
                    ImagesMagic => " (this is an IDX images file)",
                    LabelsMagic => " (this is an IDX labels file)",
                    _ when (magic & ~0xFF) == 0x0800 => $" (unsigned-byte data of rank {magic & 0xFF})",
                    _ when (magic >> 16) == 0 && ((magic >> 8) & 0xFF) is 0x09 or 0x0B or 0x0C or 0x0D or 0x0E => " (a non-byte IDX type, not supported)",
                    _ => gzip ? "" : " (not an IDX file, or a gzipped one under another name)",
                };
                throw new IdxFormatException(path, $"{kind} magic 0x{magic:X8}, expected 0x{expectedMagic:X8} for {what}{hint}");
            }
            var dims = new int[rank];
            long size = 1;
            for (int i = 0; i < rank; i++)
            {
                if (!ReadFully(stream, word)) throw new IdxFormatException(path, $"{kind} header cut short: dimension {i} of {rank} missing");
                int d = BinaryPrimitives.ReadInt32BigEndian(word);
                if (d <= 0) throw new IdxFormatException(path, $"{kind} dimension {i} is {d}; every dimension must be positive");
                dims[i] = d;
                size *= d;
                if (size > Array.MaxLength) throw new IdxFormatException(path, $"{kind} dims [{string.Join(", ", dims.Take(i + 1))}] describe more than {Array.MaxLength:N0} bytes");
            }
            long headerBytes = 4 + 4L * rank;
            if (!gzip && file.Length != headerBytes + size)
                throw new IdxFormatException(path, file.Length < headerBytes + size
                    ? $"{kind} data truncated: dims [{string.Join(", ", dims)}] need {size:N0} bytes after the header, the file holds {file.Length - headerBytes:N0}"
                    : $"{kind} has {file.Length - headerBytes - size:N0} trailing bytes after the {size:N0} data bytes of dims [{string.Join(", ", dims)}]");
            // Grow the buffer as data arrives: a corrupt header cannot make us allocate what the file does not hold.
            var data = new byte[Math.Min(size, 1 << 24)];
            int got = 0;
            while (true)
            {
                if (got == data.Length)
                {
                    if (got == size) break;
                    Array.Resize(ref data, (int)Math.Min(size, 2L * data.Length));
                }
                int n = stream.Read(data, got, data.Length - got);
                if (n == 0) break;
                got += n;
            }
            if (got < size)
                throw new IdxFormatException(path, $"{kind} data truncated: dims [{string.Join(", ", dims)}] need {size:N0} bytes after the header, the file holds {got:N0}");
            if (stream.ReadByte() >= 0)
                throw new IdxFormatException(path, $"{kind} has trailing bytes after the {size:N0} data bytes of dims [{string.Join(", ", dims)}]");
            if (gzip)
            {
                // GZipStream stops quietly at bytes that are not another gzip member: the last member's ISIZE must be
                // what was inflated (mod 2^32), else something other than gzip data follows.
                Span<byte> isize = stackalloc byte[4];
                file.Position = file.Length - 4;
                if (file.Length < 18 || !ReadFully(file, isize) || BinaryPrimitives.ReadUInt32LittleEndian(isize) != (uint)(headerBytes + size))
                    throw new IdxFormatException(path, $"{kind}: the gzip trailer does not match the {headerBytes + size:N0} bytes inflated (garbage after the gzip data, or a corrupt file)");
            }
            return (dims, data);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            throw new IdxFormatException(path, $"cannot read: {e.Message}", e);
        }
    }

    private static bool ReadFully(Stream s, Span<byte> buffer) => ReadAtMost(s, buffer) == buffer.Length;

    private static int ReadAtMost(Stream s, Span<byte> buffer)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = s.Read(buffer[total..]);
            if (n == 0) break;
            total += n;
        }
        return total;
    }
}

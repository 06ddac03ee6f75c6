using System.Buffers.Binary;
using System.IO.Compression;

namespace WhereToEdit.Engine.IO;

/// <summary>
/// A walk over a PNG's chunks before ImageSharp sees it: every chunk inside the file, IHDR first, IEND last;
/// compressed text chunks (zTXt, iTXt, iCCP) may not inflate beyond <see cref="MaxTextBytes"/> (ImageSharp inflates
/// them whole while identifying); the image data must inflate to exactly the size the header implies (PIL refuses
/// a truncated image; ImageSharp would fill the rest with zeros).
/// </summary>
internal static class PngChunks
{
    public const int MaxTextBytes = 8 << 20;
    private const int MaxChunks = 1 << 20;

    public static void Check(byte[] data, string name, long maxPixels)
    {
        if (data.Length < 8 + 25) throw new ImageLoadException(name, "truncated PNG (no complete IHDR chunk)");
        long pos = 8;
        int chunks = 0, width = 0, height = 0, bitDepth = 0, colorType = 0, interlace = 0;
        bool sawEnd = false;
        var idat = new List<(int Offset, int Length)>();
        while (pos < data.Length)
        {
            if (sawEnd) throw new ImageLoadException(name, $"PNG has {data.Length - pos} bytes after the IEND chunk");
            if (++chunks > MaxChunks) throw new ImageLoadException(name, $"PNG has more than {MaxChunks} chunks");
            if (pos + 12 > data.Length) throw new ImageLoadException(name, "truncated PNG (a chunk header is cut off)");
            uint length = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan((int)pos));
            string type = System.Text.Encoding.ASCII.GetString(data, (int)pos + 4, 4);
            if (length > int.MaxValue || pos + 12 + length > data.Length)
                throw new ImageLoadException(name, $"truncated PNG (chunk {Printable(type)} of {length} bytes runs past the end of the file)");
            int body = (int)pos + 8, len = (int)length;
            if (chunks == 1)
            {
                if (type != "IHDR" || len != 13) throw new ImageLoadException(name, "PNG does not start with an IHDR chunk");
                width = (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(body)), int.MaxValue);
                height = (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(body + 4)), int.MaxValue);
                bitDepth = data[body + 8];
                colorType = data[body + 9];
                interlace = data[body + 12];
            }
            switch (type)
            {
                case "IDAT": idat.Add((body, len)); break;
                case "IEND": sawEnd = true; break;
                // keyword, NUL, compression method, zlib data
                case "zTXt": CheckInflated(data, body, len, SkipLatin1(data, body, len) + 2, name, type); break;
                case "iCCP": CheckInflated(data, body, len, SkipLatin1(data, body, len) + 2, name, type); break;
                case "iTXt":
                {
                    int keyEnd = SkipLatin1(data, body, len);
                    if (keyEnd + 2 < len && data[body + keyEnd + 1] == 1)
                    {
                        int lang = SkipLatin1(data, body + keyEnd + 3, len - keyEnd - 3);
                        int translated = SkipLatin1(data, body + keyEnd + 3 + lang + 1, len - keyEnd - 3 - lang - 1);
                        CheckInflated(data, body, len, keyEnd + 3 + lang + 1 + translated + 1, name, type);
                    }
                    break;
                }
            }
            pos += 12 + length;
        }
        if (!sawEnd) throw new ImageLoadException(name, "truncated PNG (no IEND chunk)");
        if (idat.Count == 0) throw new ImageLoadException(name, "PNG holds no image data (IDAT)");
        long expected = RawSize(width, height, bitDepth, colorType, interlace);
        if (expected <= 0 || (long)width * height > maxPixels) return;   // ImageSharp reports the bad header; the pixel limit refuses a huge one
        long got = Inflate(new ChunkStream(data, idat), expected + 1, name, "IDAT");
        if (got < expected) throw new ImageLoadException(name, $"truncated PNG: the image data inflates to {got:N0} of the {expected:N0} bytes a {width}×{height} image needs");
    }

    private static string Printable(string type) => type.All(char.IsAsciiLetter) ? type : "?";

    /// <summary>Offset (relative to <paramref name="start"/>) of the NUL that ends a keyword, clamped to the chunk.</summary>
    private static int SkipLatin1(byte[] data, int start, int len)
    {
        int i = 0;
        while (i < len && i < 80 && data[start + i] != 0) i++;
        return i;
    }

    private static void CheckInflated(byte[] data, int body, int len, int skip, string name, string type)
    {
        if (skip >= len) return;
        long got = Inflate(new MemoryStream(data, body + skip, len - skip, writable: false), MaxTextBytes + 1L, name, type, corruptIsError: false);
        if (got > MaxTextBytes) throw new ImageLoadException(name, $"PNG {type} chunk inflates to more than {MaxTextBytes:N0} bytes (a decompression bomb; refused before decoding)");
    }

    /// <summary>Bytes the zlib stream inflates to, reading at most <paramref name="cap"/>.</summary>
    private static long Inflate(Stream compressed, long cap, string name, string what, bool corruptIsError = true)
    {
        var buffer = new byte[1 << 16];
        long total = 0;
        try
        {
            using var z = new ZLibStream(compressed, CompressionMode.Decompress);
            int n;
            while (total < cap && (n = z.Read(buffer, 0, (int)Math.Min(buffer.Length, cap - total))) > 0) total += n;
        }
        catch (InvalidDataException e)
        {
            if (corruptIsError) throw new ImageLoadException(name, $"truncated or corrupt PNG {what} data ({e.Message})", e);
        }
        return total;
    }

    /// <summary>Filtered scanline bytes of the image (Adam7 passes when interlaced); 0 when the header is invalid.</summary>
    private static long RawSize(long w, long h, int bitDepth, int colorType, int interlace)
    {
        int channels = colorType switch { 0 => 1, 2 => 3, 3 => 1, 4 => 2, 6 => 4, _ => 0 };
        if (channels == 0 || bitDepth is not (1 or 2 or 4 or 8 or 16) || w <= 0 || h <= 0 || w > 1 << 24 || h > 1 << 24) return 0;
        long bits = (long)channels * bitDepth;
        long Rows(long pw, long ph) => pw == 0 || ph == 0 ? 0 : ph * (1 + (pw * bits + 7) / 8);
        if (interlace == 0) return Rows(w, h);
        if (interlace != 1) return 0;
        (int X0, int Y0, int Dx, int Dy)[] passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)];
        long total = 0;
        foreach (var (x0, y0, dx, dy) in passes)
            total += Rows((w - x0 + dx - 1) / dx, (h - y0 + dy - 1) / dy);
        return total;
    }

    /// <summary>The IDAT chunks' bodies as one stream.</summary>
    private sealed class ChunkStream(byte[] data, List<(int Offset, int Length)> parts) : Stream
    {
        private int _part, _at;
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override int Read(byte[] buffer, int offset, int count)
        {
            while (_part < parts.Count && _at == parts[_part].Length) { _part++; _at = 0; }
            if (_part == parts.Count) return 0;
            int n = Math.Min(count, parts[_part].Length - _at);
            Array.Copy(data, parts[_part].Offset + _at, buffer, offset, n);
            _at += n;
            return n;
        }
    }
}

using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace WhereToEdit.Engine.IO;

/// <summary>A parsed .npy header.</summary>
internal sealed record NpyHeader(int MajorVersion, int MinorVersion, string Descr, TensorDType DType, int[] Shape, int DataOffset)
{
    public long ElementCount => NamedTensor.ElementCountOf(Shape);

    public long DataBytes => ElementCount * DTypeConversion.SizeOf(DType);
}

/// <summary>
/// The NumPy .npy format: magic <c>\x93NUMPY</c>, version byte pair (1.0: u16 header length; 2.0 and 3.0: u32),
/// then a Python dict literal <c>{'descr': '&lt;f4', 'fortran_order': False, 'shape': (…)}</c> padded with
/// spaces and a newline, then the raw C-order data. Reads float32, float16 and float64 (little-endian) as float32.
/// </summary>
internal static class Npy
{
    /// <summary>Headers longer than this are refused (1 MiB; NumPy's own limit is 10 kB by default).</summary>
    public const int MaxHeaderBytes = 1 << 20;

    private static ReadOnlySpan<byte> Magic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>Reads one .npy stream (header and data); <paramref name="where"/> names it in errors ("member 'x.npy'").</summary>
    public static NamedTensor Read(Stream stream, string name, string path, string where, long? declaredLength = null)
    {
        var header = ReadHeader(stream, path, where);
        long count = header.ElementCount;
        if (count > Array.MaxLength)
            throw new CheckpointFormatException(path, $"{where}: shape {NamedTensor.FormatShape(header.Shape)} is too large for one float array");
        long expected = header.DataOffset + header.DataBytes;
        if (declaredLength is long len && len != expected)
            throw new CheckpointFormatException(path,
                $"{where}: size mismatch: header says shape {NamedTensor.FormatShape(header.Shape)} of '{header.Descr}' = {header.DataBytes} data bytes " +
                $"(+{header.DataOffset} header) = {expected} bytes, but the member is {len} bytes");

        ResourceBudget.Require(ResourceBudget.Bytes(count, 4), path, $"{where}: shape {NamedTensor.FormatShape(header.Shape)} as float32");
        var data = new float[count];
        int size = DTypeConversion.SizeOf(header.DType);
        const int chunk = 1 << 20;
        var buffer = new byte[(int)Math.Min(chunk, Math.Max(count, 1)) * size];
        for (long i = 0; i < count; i += chunk)
        {
            int n = (int)Math.Min(chunk, count - i);
            var span = buffer.AsSpan(0, n * size);
            ReadExactly(stream, span, path, where, "data");
            DTypeConversion.ToFloat32(span, header.DType, data.AsSpan((int)i, n));
        }
        // Nothing may follow the data.
        Span<byte> probe = stackalloc byte[1];
        if (SafeRead(stream, probe, path, where) != 0)
            throw new CheckpointFormatException(path, $"{where}: extra bytes after the {header.DataBytes} data bytes of shape {NamedTensor.FormatShape(header.Shape)}");
        return new NamedTensor(name, header.Shape, data, header.DType);
    }

    /// <summary>Reads and validates the magic, version and header dict, leaving the stream at the data.</summary>
    public static NpyHeader ReadHeader(Stream stream, string path, string where)
    {
        Span<byte> pre = stackalloc byte[10];
        ReadExactly(stream, pre, path, where, "magic/version");
        if (!pre[..6].SequenceEqual(Magic))
            throw new CheckpointFormatException(path, $"{where}: not a .npy array (magic bytes are {Convert.ToHexString(pre[..6])}, expected 934E554D5059 = \\x93NUMPY)");
        int major = pre[6], minor = pre[7];
        int headerLen, prefix;
        if (major == 1)
        {
            headerLen = BinaryPrimitives.ReadUInt16LittleEndian(pre[8..10]);
            prefix = 10;
        }
        else if (major is 2 or 3)
        {
            Span<byte> rest = stackalloc byte[2];
            ReadExactly(stream, rest, path, where, "header length");
            uint l = BinaryPrimitives.ReadUInt32LittleEndian([pre[8], pre[9], rest[0], rest[1]]);
            if (l > MaxHeaderBytes)
                throw new CheckpointFormatException(path, $"{where}: .npy header length {l} is absurd (limit {MaxHeaderBytes})");
            headerLen = (int)l;
            prefix = 12;
        }
        else
        {
            throw new CheckpointFormatException(path, $"{where}: unsupported .npy format version {major}.{minor} (1.0, 2.0 and 3.0 are read)");
        }
        if (minor != 0)
            throw new CheckpointFormatException(path, $"{where}: unsupported .npy format version {major}.{minor} (1.0, 2.0 and 3.0 are read)");

        var text = new byte[headerLen];
        ReadExactly(stream, text, path, where, "header");
        string dict = major == 3 ? DecodeUtf8(text, path, where) : Encoding.Latin1.GetString(text);
        var (descr, dtype, shape) = ParseDict(dict, path, where);
        return new NpyHeader(major, minor, descr, dtype, shape, prefix + headerLen);
    }

    private static string DecodeUtf8(byte[] text, string path, string where)
    {
        try
        {
            return new UTF8Encoding(false, true).GetString(text);
        }
        catch (DecoderFallbackException e)
        {
            throw new CheckpointFormatException(path, $"{where}: .npy 3.0 header is not valid UTF-8", e);
        }
    }

    /// <summary>Parses the header dict text; exposed for tests.</summary>
    public static (string Descr, TensorDType DType, int[] Shape) ParseDict(string text, string path, string where)
    {
        object? value;
        try
        {
            var p = new PyLiteralParser(text);
            value = p.ParseValue();
            p.ExpectEnd();
        }
        catch (FormatException e)
        {
            throw new CheckpointFormatException(path, $"{where}: malformed .npy header {Quote(text)}: {e.Message}");
        }
        if (value is not Dictionary<string, object?> d)
            throw new CheckpointFormatException(path, $"{where}: .npy header is not a dict: {Quote(text)}");
        foreach (var key in d.Keys)
            if (key is not ("descr" or "fortran_order" or "shape"))
                throw new CheckpointFormatException(path, $"{where}: unexpected key '{key}' in .npy header {Quote(text)}");
        if (!d.TryGetValue("descr", out var descrObj) || descrObj is not string descr)
            throw new CheckpointFormatException(path, $"{where}: .npy header has no string 'descr': {Quote(text)}");
        if (!d.TryGetValue("fortran_order", out var fo) || fo is not bool fortran)
            throw new CheckpointFormatException(path, $"{where}: .npy header has no boolean 'fortran_order': {Quote(text)}");
        if (!d.TryGetValue("shape", out var shapeObj) || shapeObj is not PyTuple tuple)
            throw new CheckpointFormatException(path, $"{where}: .npy header has no tuple 'shape': {Quote(text)}");

        TensorDType dtype = descr switch
        {
            "<f4" => TensorDType.F32,
            "<f2" => TensorDType.F16,
            "<f8" => TensorDType.F64,
            _ => throw new CheckpointFormatException(path,
                $"{where}: unsupported .npy dtype '{descr}' (only little-endian floats '<f4', '<f2', '<f8' are read)"),
        };
        if (fortran)
            throw new CheckpointFormatException(path,
                $"{where}: fortran_order=True arrays are not supported; re-save with np.ascontiguousarray(...)");
        var shape = new int[tuple.Items.Count];
        for (int i = 0; i < shape.Length; i++)
        {
            if (tuple.Items[i] is not long dim)
                throw new CheckpointFormatException(path, $"{where}: .npy shape entry {i} is not an integer: {Quote(text)}");
            if (dim < 0 || dim > int.MaxValue)
                throw new CheckpointFormatException(path, $"{where}: .npy shape dimension {dim} is out of range");
            shape[i] = (int)dim;
        }
        try
        {
            checked { _ = NamedTensor.ElementCountOf(shape) * 8; }
        }
        catch (OverflowException)
        {
            throw new CheckpointFormatException(path, $"{where}: .npy shape {NamedTensor.FormatShape(shape)} overflows");
        }
        return (descr, dtype, shape);
    }

    /// <summary>Builds a version 1.0 header (magic … newline) whose total length is a multiple of 64, as NumPy does.</summary>
    public static byte[] BuildHeader(string descr, ReadOnlySpan<int> shape)
    {
        string shapeText = shape.Length == 1 ? $"({shape[0]},)" : "(" + string.Join(", ", shape.ToArray()) + ")";
        string dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shapeText}, }}";
        int total = 10 + dict.Length + 1;
        int pad = (64 - total % 64) % 64;
        string text = dict + new string(' ', pad) + "\n";
        var bytes = new byte[10 + text.Length];
        Magic.CopyTo(bytes);
        bytes[6] = 1;
        bytes[7] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), checked((ushort)text.Length));
        Encoding.Latin1.GetBytes(text, bytes.AsSpan(10));
        return bytes;
    }

    private static string Quote(string s)
    {
        s = s.TrimEnd();
        return "\"" + (s.Length > 120 ? s[..117] + "..." : s) + "\"";
    }

    private static void ReadExactly(Stream s, Span<byte> buffer, string path, string where, string part)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = SafeRead(s, buffer[total..], path, where);
            if (n == 0)
                throw new CheckpointFormatException(path, $"{where}: truncated .npy ({part}: got {total} of {buffer.Length} bytes)");
            total += n;
        }
    }

    private static int SafeRead(Stream s, Span<byte> buffer, string path, string where)
    {
        try
        {
            return s.Read(buffer);
        }
        catch (InvalidDataException e)
        {
            throw new CheckpointFormatException(path, $"{where}: corrupt compressed data ({e.Message})", e);
        }
    }

    private sealed class PyTuple(List<object?> items)
    {
        public List<object?> Items { get; } = items;
    }

    /// <summary>The subset of Python literals .npy headers use: dict, tuple, str, int, True/False/None.</summary>
    private sealed class PyLiteralParser(string text)
    {
        /// <summary>Nesting deeper than this is refused (a real header nests 2 levels; recursion must not overflow the stack).</summary>
        private const int MaxDepth = 32;
        private int _pos, _depth;

        public void ExpectEnd()
        {
            SkipWs();
            if (_pos != text.Length) throw new FormatException($"unexpected '{text[_pos]}' after the dict at position {_pos}");
        }

        public object? ParseValue()
        {
            SkipWs();
            if (_pos >= text.Length) throw new FormatException("unexpected end");
            char c = text[_pos];
            if (c is '{' or '(' or '[' && ++_depth > MaxDepth) throw new FormatException($"nesting deeper than {MaxDepth} levels at position {_pos}");
            switch (c)
            {
                case '{': { var d = ParseDict(); _depth--; return d; }
                case '(': { var t = new PyTuple(ParseSequence('(', ')')); _depth--; return t; }
                case '[': { var t = new PyTuple(ParseSequence('[', ']')); _depth--; return t; }
                case '\'':
                case '"': return ParseString();
            }
            if (char.IsDigit(c) || c == '-' || c == '+') return ParseInt();
            if (char.IsLetter(c) || c == '_')
            {
                int start = _pos;
                while (_pos < text.Length && (char.IsLetterOrDigit(text[_pos]) || text[_pos] == '_')) _pos++;
                string word = text[start.._pos];
                return word switch
                {
                    "True" => true,
                    "False" => false,
                    "None" => null,
                    _ => throw new FormatException($"unexpected name '{word}'"),
                };
            }
            throw new FormatException($"unexpected '{c}' at position {_pos}");
        }

        private Dictionary<string, object?> ParseDict()
        {
            Expect('{');
            var d = new Dictionary<string, object?>(StringComparer.Ordinal);
            while (true)
            {
                SkipWs();
                if (Peek() == '}') { _pos++; return d; }
                if (Peek() is not ('\'' or '"')) throw new FormatException($"dict key at position {_pos} is not a string");
                string key = ParseString();
                SkipWs();
                Expect(':');
                var v = ParseValue();
                if (!d.TryAdd(key, v)) throw new FormatException($"duplicate key '{key}'");
                SkipWs();
                if (Peek() == ',') { _pos++; continue; }
                SkipWs();
                if (Peek() == '}') { _pos++; return d; }
                throw new FormatException($"expected ',' or '}}' at position {_pos}");
            }
        }

        private List<object?> ParseSequence(char open, char close)
        {
            Expect(open);
            var items = new List<object?>();
            while (true)
            {
                SkipWs();
                if (Peek() == close) { _pos++; return items; }
                items.Add(ParseValue());
                SkipWs();
                if (Peek() == ',') { _pos++; continue; }
                if (Peek() == close) { _pos++; return items; }
                throw new FormatException($"expected ',' or '{close}' at position {_pos}");
            }
        }

        private string ParseString()
        {
            char quote = text[_pos++];
            var sb = new StringBuilder();
            while (true)
            {
                if (_pos >= text.Length) throw new FormatException("unterminated string");
                char c = text[_pos++];
                if (c == quote) return sb.ToString();
                if (c == '\\')
                {
                    if (_pos >= text.Length) throw new FormatException("unterminated string");
                    c = text[_pos++];
                }
                sb.Append(c);
            }
        }

        private long ParseInt()
        {
            int start = _pos;
            if (text[_pos] is '-' or '+') _pos++;
            while (_pos < text.Length && char.IsAsciiDigit(text[_pos])) _pos++;
            string digits = text[start.._pos];
            if (_pos < text.Length && text[_pos] is 'L' or 'l') _pos++; // Python 2 long
            if (!long.TryParse(digits, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long v))
                throw new FormatException($"bad integer '{digits}'");
            return v;
        }

        private char Peek() => _pos < text.Length ? text[_pos] : '\0';

        private void Expect(char c)
        {
            SkipWs();
            if (Peek() != c) throw new FormatException($"expected '{c}' at position {_pos}");
            _pos++;
        }

        private void SkipWs()
        {
            while (_pos < text.Length && char.IsWhiteSpace(text[_pos])) _pos++;
        }
    }
}

using System.Buffers.Binary;
using System.Text;

namespace WhereToEdit.Engine.IO.PyTorch;

/// <summary>
/// Walks a pickle opcode by opcode BEFORE it is unpickled and refuses it unless every global it names is on a fixed
/// allow-list, every length fits the bytes that are there, and it uses only the opcodes a torch.save state dict needs.
/// This is what makes loading safe by construction: the unpickler never sees a global it would have to resolve,
/// so nothing outside the allow-list is ever looked up, constructed or called.
/// </summary>
internal static class PickleGuard
{
    /// <summary>Every global a PyTorch checkpoint may name ("module.name").</summary>
    public static readonly IReadOnlySet<string> AllowedGlobals = new HashSet<string>(StringComparer.Ordinal)
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch.Size",
        "torch.device",
        "torch.FloatStorage", "torch.HalfStorage", "torch.BFloat16Storage", "torch.DoubleStorage",
        "torch.LongStorage", "torch.IntStorage", "torch.ShortStorage", "torch.CharStorage", "torch.ByteStorage", "torch.BoolStorage",
    };

    private const int MaxProtocol = 5;

    /// <summary>Throws <see cref="CheckpointFormatException"/> naming <paramref name="path"/> and <paramref name="member"/> on the first problem.</summary>
    public static void Check(byte[] p, string path, string member) => Check(p, 0, p.Length, path, member, requireEnd: true);

    /// <summary>Checks the pickle that starts at <paramref name="start"/>; returns the offset just after its STOP opcode.</summary>
    public static int CheckOne(byte[] p, int start, int length, string path, string member) => Check(p, start, length, path, member, requireEnd: false);

    private static int Check(byte[] p, int start, int length, string path, string member, bool requireEnd)
    {
        var memo = new Dictionary<int, string?>();
        // The two most recent values pushed, when they are strings (null: something else). STACK_GLOBAL takes its
        // module and name from the stack, so it is accepted only when both are strings this walk has seen.
        string? last = null, beforeLast = null;
        bool lastWasPush = false;
        int i = start;
        void Push(string? s) { beforeLast = last; last = s; lastWasPush = true; }
        CheckpointFormatException Bad(string what, int at) =>
            new(path, $"{member}: {what} (pickle byte {at}); nothing was executed");

        while (true)
        {
            if (i >= length) throw Bad("truncated pickle: no STOP opcode", i);
            int at = i;
            byte op = p[i++];
            bool push = true;
            string? pushed = null;
            switch (op)
            {
                case (byte)'.': // STOP
                    if (requireEnd && i != length) throw Bad($"{length - i} bytes after the STOP opcode", i);
                    return i;
                case 0x80: // PROTO
                    Need(1);
                    if (p[i] > MaxProtocol) throw Bad($"unsupported pickle protocol {p[i]}", at);
                    i += 1; push = false; break;
                case 0x95: Need(8); i += 8; push = false; break; // FRAME
                // opcodes without arguments
                case (byte)'(': case (byte)'0': case (byte)'1': case (byte)'2': case (byte)'N': case (byte)'Q': case (byte)'R':
                case (byte)'a': case (byte)'b': case (byte)'d': case (byte)'}': case (byte)'e': case (byte)'l': case (byte)']':
                case (byte)'s': case (byte)'t': case (byte)')': case (byte)'u': case 0x81: case 0x85: case 0x86: case 0x87:
                case 0x88: case 0x89: case 0x8f: case 0x90: case 0x91:
                    break;
                case 0x94: // MEMOIZE
                    memo[memo.Count] = lastWasPush ? last : null; push = false; break;
                case (byte)'K': Need(1); i += 1; break;           // BININT1
                case (byte)'M': Need(2); i += 2; break;           // BININT2
                case (byte)'J': Need(4); i += 4; break;           // BININT
                case (byte)'G': Need(8); i += 8; break;           // BINFLOAT
                case 0x8a: Need(1); Skip(p[i], 1); break;         // LONG1
                case 0x8b: Need(4); Skip(BinaryPrimitives.ReadInt32LittleEndian(p.AsSpan(i)), 4); break; // LONG4
                case (byte)'I': case (byte)'L': case (byte)'F': case (byte)'S': case (byte)'V': Line(); break; // text INT/LONG/FLOAT/STRING/UNICODE
                case (byte)'T': Need(4); Skip(BinaryPrimitives.ReadInt32LittleEndian(p.AsSpan(i)), 4); break;   // BINSTRING
                case (byte)'U': Need(1); Skip(p[i], 1); break;                                              // SHORT_BINSTRING
                case (byte)'B': Need(4); Skip(BinaryPrimitives.ReadInt32LittleEndian(p.AsSpan(i)), 4); break;   // BINBYTES
                case (byte)'C': Need(1); Skip(p[i], 1); break;                                              // SHORT_BINBYTES
                case 0x8e: case 0x96: Need(8); Skip(BinaryPrimitives.ReadInt64LittleEndian(p.AsSpan(i)), 8); break; // BINBYTES8, BYTEARRAY8
                case (byte)'X': Need(4); pushed = Utf8(BinaryPrimitives.ReadInt32LittleEndian(p.AsSpan(i)), 4); break; // BINUNICODE
                case 0x8c: Need(1); pushed = Utf8(p[i], 1); break;                                             // SHORT_BINUNICODE
                case 0x8d: Need(8); pushed = Utf8(BinaryPrimitives.ReadInt64LittleEndian(p.AsSpan(i)), 8); break;   // BINUNICODE8
                case (byte)'h': Need(1); pushed = Recall(p[i]); i += 1; break;                                 // BINGET
                case (byte)'j': Need(4); pushed = Recall(BinaryPrimitives.ReadInt32LittleEndian(p.AsSpan(i))); i += 4; break; // LONG_BINGET
                case (byte)'g': pushed = Recall(ParseIndex(Line())); break;                                    // GET
                case (byte)'q': Need(1); memo[p[i]] = lastWasPush ? last : null; i += 1; push = false; break;  // BINPUT
                case (byte)'r': Need(4); memo[BinaryPrimitives.ReadInt32LittleEndian(p.AsSpan(i))] = lastWasPush ? last : null; i += 4; push = false; break; // LONG_BINPUT
                case (byte)'p': memo[ParseIndex(Line())] = lastWasPush ? last : null; push = false; break;     // PUT
                case (byte)'c': // GLOBAL
                {
                    string module = Line(), name = Line();
                    Allow(module, name, at);
                    break;
                }
                case 0x93: // STACK_GLOBAL
                    if (last is null || beforeLast is null)
                        throw Bad("STACK_GLOBAL whose module and name are not plain strings cannot be verified; refused", at);
                    Allow(beforeLast, last, at);
                    break;
                case (byte)'P': throw Bad("text persistent id (PERSID) is not used by torch.save; refused", at);
                case (byte)'i': throw Bad($"INST opcode (instantiates '{Peek2Lines()}') refused", at);
                case (byte)'o': throw Bad("OBJ opcode (instantiates a class from the stack) refused", at);
                case 0x92: throw Bad("NEWOBJ_EX opcode refused", at);
                case 0x82: case 0x83: case 0x84: throw Bad("extension-registry opcode (EXT1/EXT2/EXT4) refused", at);
                case 0x97: case 0x98: throw Bad("out-of-band buffer opcode refused", at);
                default: throw Bad($"unknown pickle opcode 0x{op:x2}", at);
            }
            if (push) Push(pushed);
            else if (op is not (0x94 or (byte)'q' or (byte)'r' or (byte)'p')) lastWasPush = false;
        }

        void Need(long n)
        {
            if (n < 0 || n > length - i) throw new CheckpointFormatException(path, $"{member}: truncated pickle: {n} bytes wanted at byte {i}, {length - i} left; nothing was executed");
        }
        void Skip(long n, int header)
        {
            i += header;
            Need(n);
            i += (int)n;
        }
        string Utf8(long n, int header)
        {
            Skip(n, header);
            try { return new UTF8Encoding(false, true).GetString(p.AsSpan(i - (int)n, (int)n)); }
            catch (DecoderFallbackException) { throw new CheckpointFormatException(path, $"{member}: invalid UTF-8 string in pickle at byte {i - n}; nothing was executed"); }
        }
        string Line()
        {
            int end = p.AsSpan(i, length - i).IndexOf((byte)'\n');
            if (end < 0) throw new CheckpointFormatException(path, $"{member}: truncated pickle: unterminated text argument at byte {i}; nothing was executed");
            string s = Encoding.UTF8.GetString(p.AsSpan(i, end));
            i += end + 1;
            return s;
        }
        string Peek2Lines()
        {
            int save = i;
            try { return Line() + "." + Line(); } catch (CheckpointFormatException) { return "?"; } finally { i = save; }
        }
        int ParseIndex(string s) =>
            int.TryParse(s, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int v) ? v
            : throw new CheckpointFormatException(path, $"{member}: bad memo index '{s}' in pickle; nothing was executed");
        string? Recall(int index) =>
            memo.TryGetValue(index, out var s) ? s : throw new CheckpointFormatException(path, $"{member}: pickle reads memo slot {index} that was never written; nothing was executed");
        void Allow(string module, string name, int at)
        {
            string full = module + "." + name;
            if (!AllowedGlobals.Contains(full))
                throw new CheckpointFormatException(path,
                    $"{member}: refused global '{full}' (pickle byte {at}): a PyTorch checkpoint may only name {string.Join(", ", AllowedGlobals.Take(5))} and the torch.*Storage types{(module.StartsWith("torch.nn", StringComparison.Ordinal) || module == "__main__" ? " (a pickled model object: save model.state_dict() instead)" : "")}; nothing was executed");
        }
    }
}

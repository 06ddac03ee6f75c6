using System.Text;
using System.Text.Json;

namespace WhereToEdit.Engine.IO;

/// <summary>
/// JSON parsing that rejects what <see cref="JsonDocument"/> silently accepts: duplicate keys in an object
/// (JsonDocument keeps both and lookups return the last one). Every error names the file.
/// </summary>
internal static class StrictJson
{
    private static readonly JsonDocumentOptions DocumentOptions = new()
    {
        AllowTrailingCommas = false,
        CommentHandling = JsonCommentHandling.Disallow,
        MaxDepth = 64,
    };

    /// <summary>Thrown (wrapped by callers) for a duplicate key; carries the JSON path of the object.</summary>
    internal sealed class DuplicateKeyException(string key, string objectPath) : Exception($"duplicate key \"{key}\" in {objectPath}")
    {
        public string Key { get; } = key;
        public string ObjectPath { get; } = objectPath;
    }

    /// <summary>Parses UTF-8 JSON; throws <see cref="CheckpointFormatException"/> naming <paramref name="path"/> and <paramref name="what"/>.</summary>
    public static JsonDocument Parse(ReadOnlyMemory<byte> utf8, string path, string what)
    {
        if (!System.Text.Unicode.Utf8.IsValid(utf8.Span))
            throw new CheckpointFormatException(path, $"{what} is not valid UTF-8");
        try
        {
            CheckNoDuplicateKeys(utf8.Span);
            return JsonDocument.Parse(utf8, DocumentOptions);
        }
        catch (DuplicateKeyException e)
        {
            throw new CheckpointFormatException(path, $"{what}: {e.Message}");
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(path, $"{what} is not valid JSON ({Short(e)})", e);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException) // invalid UTF-8 in strings
        {
            throw new CheckpointFormatException(path, $"{what} is not valid UTF-8 JSON ({e.Message})", e);
        }
    }

    public static JsonDocument Parse(string json, string path, string what) =>
        Parse(Encoding.UTF8.GetBytes(json), path, what);

    private static string Short(JsonException e) =>
        e.LineNumber is long line ? $"line {line + 1}, byte {e.BytePositionInLine + 1}: {FirstSentence(e.Message)}" : FirstSentence(e.Message);

    private static string FirstSentence(string m)
    {
        int i = m.IndexOf(" Path:", StringComparison.Ordinal);
        return i > 0 ? m[..i] : m;
    }

    /// <summary>Walks the token stream once; throws <see cref="DuplicateKeyException"/> or <see cref="JsonException"/>.</summary>
    public static void CheckNoDuplicateKeys(ReadOnlySpan<byte> utf8)
    {
        var reader = new Utf8JsonReader(utf8, new JsonReaderOptions
        {
            AllowTrailingCommas = false,
            CommentHandling = JsonCommentHandling.Disallow,
            MaxDepth = 64,
        });
        // One frame per open container: the keys seen (null for arrays) and the key that led into it.
        var keys = new Stack<HashSet<string>?>();
        var names = new Stack<string>();
        string? lastKey = null;
        while (reader.Read())
        {
            switch (reader.TokenType)
            {
                case JsonTokenType.StartObject:
                    keys.Push(new HashSet<string>(StringComparer.Ordinal));
                    names.Push(lastKey ?? (keys.Count == 1 ? "$" : "[]"));
                    lastKey = null;
                    break;
                case JsonTokenType.StartArray:
                    keys.Push(null);
                    names.Push(lastKey ?? (keys.Count == 1 ? "$" : "[]"));
                    lastKey = null;
                    break;
                case JsonTokenType.EndObject:
                case JsonTokenType.EndArray:
                    keys.Pop();
                    names.Pop();
                    lastKey = null;
                    break;
                case JsonTokenType.PropertyName:
                {
                    string key = reader.GetString()!;
                    if (!keys.Peek()!.Add(key))
                        throw new DuplicateKeyException(key, names.Count == 1 ? "the top-level object" : $"object \"{names.Peek()}\"");
                    lastKey = key;
                    break;
                }
                case JsonTokenType.String:
                    _ = reader.GetString(); // rejects escapes that are not valid UTF-16 (lone surrogates)
                    lastKey = null;
                    break;
                default:
                    lastKey = null;
                    break;
            }
        }
    }

    // ---- typed accessors with file-naming errors ---------------------------------------------------

    public static bool TryGet(JsonElement obj, string key, out JsonElement value)
    {
        value = default;
        return obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(key, out value) && value.ValueKind != JsonValueKind.Null;
    }

    public static int GetInt(JsonElement e, string key, string path, string what)
    {
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int v))
            throw new CheckpointFormatException(path, $"{what}: \"{key}\" must be an integer, got {Show(e)}");
        return v;
    }

    public static double GetDouble(JsonElement e, string key, string path, string what)
    {
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetDouble(out double v) || !double.IsFinite(v))
            throw new CheckpointFormatException(path, $"{what}: \"{key}\" must be a number, got {Show(e)}");
        return v;
    }

    public static bool GetBool(JsonElement e, string key, string path, string what) => e.ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => throw new CheckpointFormatException(path, $"{what}: \"{key}\" must be true or false, got {Show(e)}"),
    };

    public static string GetString(JsonElement e, string key, string path, string what) =>
        e.ValueKind == JsonValueKind.String ? e.GetString()!
        : throw new CheckpointFormatException(path, $"{what}: \"{key}\" must be a string, got {Show(e)}");

    public static float[] GetFloatArray(JsonElement e, string key, string path, string what)
    {
        if (e.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(path, $"{what}: \"{key}\" must be an array of numbers, got {Show(e)}");
        var r = new float[e.GetArrayLength()];
        int i = 0;
        foreach (var x in e.EnumerateArray()) r[i++] = (float)GetDouble(x, key, path, what);
        return r;
    }

    public static int[] GetIntArray(JsonElement e, string key, string path, string what)
    {
        if (e.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(path, $"{what}: \"{key}\" must be an array of integers, got {Show(e)}");
        var r = new int[e.GetArrayLength()];
        int i = 0;
        foreach (var x in e.EnumerateArray()) r[i++] = GetInt(x, key, path, what);
        return r;
    }

    public static string Show(JsonElement e)
    {
        string raw = e.GetRawText();
        return raw.Length > 60 ? raw[..57] + "..." : raw;
    }
}

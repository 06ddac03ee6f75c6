using System.Text;
using System.Text.Json;

namespace WhereToEdit.Engine.IO;

/// <summary>
/// JSON parsing that rejects what <see cref="JsonDocument"/> accepts by default: duplicate keys in an object
/// (System.Text.Json's <see cref="JsonDocumentOptions.AllowDuplicateProperties"/> = false) and strings holding escapes
/// that are not valid UTF-16 (lone surrogates). Every error names the file.
/// </summary>
internal static class StrictJson
{
    private static readonly JsonDocumentOptions DocumentOptions = new()
    {
        AllowTrailingCommas = false,
        CommentHandling = JsonCommentHandling.Disallow,
        MaxDepth = 64,
        AllowDuplicateProperties = false,
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
            return ParseDocument(utf8);
        }
        catch (DuplicateKeyException e)
        {
            throw new CheckpointFormatException(path, $"{what}: {e.Message}");
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(path, $"{what} is not valid JSON ({Short(e)})", e);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException) // invalid UTF-16 escapes in strings
        {
            throw new CheckpointFormatException(path, $"{what} is not valid UTF-8 JSON ({e.Message})", e);
        }
    }

    public static JsonDocument Parse(string json, string path, string what) =>
        Parse(Encoding.UTF8.GetBytes(json), path, what);

    /// <summary>
    /// Parses strictly; throws <see cref="DuplicateKeyException"/>, <see cref="JsonException"/> (syntax) or
    /// <see cref="InvalidOperationException"/> (a string escape that is not valid UTF-16). For callers with their own error type.
    /// </summary>
    public static JsonDocument ParseDocument(ReadOnlyMemory<byte> utf8)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(utf8, DocumentOptions);
        }
        catch (JsonException)
        {
            // System.Text.Json refused it; when duplicates are the only problem, say which key and where.
            if (LocateDuplicate(utf8) is { } duplicate) throw duplicate;
            throw;
        }
        try
        {
            RequireValidStrings(doc.RootElement);
        }
        catch
        {
            doc.Dispose();
            throw;
        }
        return doc;
    }

    private static string Short(JsonException e) =>
        e.LineNumber is long line ? $"line {line + 1}, byte {e.BytePositionInLine + 1}: {FirstSentence(e.Message)}" : FirstSentence(e.Message);

    private static string FirstSentence(string m)
    {
        int i = m.IndexOf(" Path:", StringComparison.Ordinal);
        return i > 0 ? m[..i] : m;
    }

    /// <summary>The first duplicate key in document order, when the text parses with duplicates allowed (error path only).</summary>
    private static DuplicateKeyException? LocateDuplicate(ReadOnlyMemory<byte> utf8)
    {
        try
        {
            using var lenient = JsonDocument.Parse(utf8, DocumentOptions with { AllowDuplicateProperties = true });
            return Find(lenient.RootElement, null, top: true);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            return null;
        }

        static DuplicateKeyException? Find(JsonElement e, string? name, bool top)
        {
            if (e.ValueKind == JsonValueKind.Array)
            {
                foreach (var item in e.EnumerateArray())
                    if (Find(item, "[]", top: false) is { } d) return d;
                return null;
            }
            if (e.ValueKind != JsonValueKind.Object) return null;
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var p in e.EnumerateObject())
                if (!seen.Add(p.Name)) return new DuplicateKeyException(p.Name, top ? "the top-level object" : $"object \"{name}\"");
            foreach (var p in e.EnumerateObject())
                if (Find(p.Value, p.Name, top: false) is { } d) return d;
            return null;
        }
    }

    /// <summary>Reads every string once: an escape that is not valid UTF-16 (a lone surrogate) throws here, not in a later lookup.</summary>
    private static void RequireValidStrings(JsonElement e)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.String:
                _ = e.GetString();
                break;
            case JsonValueKind.Array:
                foreach (var item in e.EnumerateArray()) RequireValidStrings(item);
                break;
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject())
                {
                    _ = p.Name;
                    RequireValidStrings(p.Value);
                }
                break;
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

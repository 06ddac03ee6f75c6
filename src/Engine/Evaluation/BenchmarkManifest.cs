using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using WhereToEdit.Engine.IO;

namespace WhereToEdit.Engine.Evaluation;

/// <summary>How a subset's groups came about (§7): real failures of one confusion pair, or a class under a style shift.</summary>
public enum BenchmarkSubsetKind
{
    /// <summary>Real images the base model misclassifies, one group per (true class, predicted class) pair.</summary>
    Natural,

    /// <summary>Images of one class under a style shift (the paper's AI-generated subsets), one group per class.</summary>
    Style,
}

/// <summary>
/// One edit group: base-model failures of one true class. <paramref name="Predicted"/> is the base model's wrong class
/// (natural groups from a confusion pair only; null otherwise). Image paths are relative to the manifest's folder,
/// '/'-separated.
/// </summary>
public sealed record BenchmarkGroup(string Name, int Label, int? Predicted, IReadOnlyList<string> Images);

/// <summary>A named set of groups of one kind.</summary>
public sealed record BenchmarkSubset(string Name, BenchmarkSubsetKind Kind, IReadOnlyList<BenchmarkGroup> Groups);

/// <summary>The locality set: images the base model gets right with top-1 − top-2 probability margin below <paramref name="Margin"/>.</summary>
public sealed record BenchmarkLocality(string Name, double Margin, IReadOnlyList<string> Images);

/// <summary>A manifest that cannot be used; lists every problem found, each on its own, and names the file.</summary>
internal sealed class BenchmarkManifestException : Exception
{
    public BenchmarkManifestException(string filePath, IReadOnlyList<string> problems, Exception? inner = null)
        : base(Format(filePath, problems), inner)
    {
        FilePath = filePath;
        Problems = problems;
    }

    public BenchmarkManifestException(string filePath, string problem, Exception? inner = null) : this(filePath, [problem], inner) { }

    /// <summary>The manifest file.</summary>
    public string FilePath { get; }

    /// <summary>Each problem, without the file prefix.</summary>
    public IReadOnlyList<string> Problems { get; }

    private const int Shown = 8;

    private static string Format(string path, IReadOnlyList<string> problems)
    {
        string where = string.IsNullOrEmpty(path) ? "<in-memory manifest>" : path;
        if (problems.Count == 1) return $"{where}: {problems[0]}";
        string list = string.Join("; ", problems.Take(Shown));
        return problems.Count > Shown ? $"{where}: {problems.Count} problems: {list}; … and {problems.Count - Shown} more"
                                      : $"{where}: {problems.Count} problems: {list}";
    }
}

/// <summary>
/// The benchmark manifest (format <c>wte-benchmark/1</c>): JSON naming the subsets, their groups, the locality set and
/// where every image is. Reading is strict: unknown or missing fields, wrong types, labels out of range, duplicate
/// names, empty groups, and image paths that are absolute, contain '..', use '\\' or do not exist are all refused, each
/// problem listed on its own in one <see cref="BenchmarkManifestException"/> naming the manifest file.
/// </summary>
/// <remarks>
/// Schema (keys in this order when written):
/// <code>
/// {
///   "format": "wte-benchmark/1",                       required
///   "name": string,                                      required, non-empty
///   "base_model_fingerprint": string | null,             optional (VitCheckpoint.Fingerprint of the base model)
///   "image_size": int | null,                            optional, > 0 (side of the square images)
///   "channels": 1 | 3 | null,                            optional
///   "labels": [string, ...] | null,                      optional, non-empty; when given, every label index must be below its length
///   "seed": uint64 | null,                               optional (the builder's seed)
///   "subsets": [                                         required, non-empty; names unique
///     { "name": string, "kind": "natural" | "style",
///       "groups": [                                      required, non-empty; names unique within the subset
///         { "name": string, "label": int ≥ 0,
///           "predicted": int ≥ 0, ≠ label | null | absent (natural only; a style group must not have one),
///           "images": [relative path, ...] }             non-empty, no duplicates
///       ] } ],
///   "locality": { "name": string, "margin": number in (0, 1], "images": [relative path, ...] },   required, images non-empty
///   "notes": [string, ...]                               optional
/// }
/// </code>
/// </remarks>
public sealed record BenchmarkManifest
{
    public const string FormatTag = "wte-benchmark/1";
    public const string FileName = "manifest.json";

    public required string Name { get; init; }
    public string? BaseModelFingerprint { get; init; }
    public int? ImageSize { get; init; }
    public int? Channels { get; init; }
    public IReadOnlyList<string>? Labels { get; init; }
    public ulong? Seed { get; init; }
    public required IReadOnlyList<BenchmarkSubset> Subsets { get; init; }
    public required BenchmarkLocality Locality { get; init; }
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>Absolute folder the image paths are relative to (the manifest file's folder once read or written).</summary>
    public required string Folder { get; init; }

    /// <summary>The absolute path of an image named in the manifest.</summary>
    public string ImagePath(string relative) => Path.Combine(Folder, relative.Replace('/', Path.DirectorySeparatorChar));

    /// <summary>Every file an evaluation of this manifest reads: the manifest itself (when present) and every image.</summary>
    public IEnumerable<string> InputFiles() =>
        new[] { Path.Combine(Folder, FileName) }.Where(File.Exists)
            .Concat(Subsets.SelectMany(s => s.Groups).SelectMany(g => g.Images).Concat(Locality.Images).Select(ImagePath));

    /// <summary>The subset of that name.</summary>
    public BenchmarkSubset Subset(string name) => Subsets.FirstOrDefault(s => s.Name == name)
        ?? throw new KeyNotFoundException($"benchmark '{Name}' has no subset '{name}' (it has {string.Join(", ", Subsets.Select(s => s.Name))})");

    /// <summary>The name a label index goes by (the label list's entry, else the index).</summary>
    public string LabelName(int index) => Labels is not null && index >= 0 && index < Labels.Count ? Labels[index] : index.ToString(CultureInfo.InvariantCulture);

    // ---- reading -------------------------------------------------------------------------------------

    /// <summary>Reads and validates a manifest; <paramref name="path"/> is the JSON file or a folder holding manifest.json.</summary>
    public static BenchmarkManifest Read(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Directory.Exists(path)) path = Path.Combine(path, FileName);
        if (!File.Exists(path)) throw new BenchmarkManifestException(path, "no such manifest file");
        if (PathSafety.InputFileProblem(path) is { } problem) throw new BenchmarkManifestException(path, problem);
        if (new FileInfo(path).Length > 64 << 20) throw new BenchmarkManifestException(path, $"is {new FileInfo(path).Length:N0} bytes; too large for a manifest (64 MiB)");
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BenchmarkManifestException(path, $"cannot read: {e.Message}", e);
        }
        return Parse(bytes, path);
    }

    /// <summary>Parses and validates manifest JSON; image paths are checked relative to <paramref name="manifestPath"/>'s folder.</summary>
    public static BenchmarkManifest Parse(ReadOnlyMemory<byte> utf8, string manifestPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(manifestPath);
        string folder = Path.GetDirectoryName(Path.GetFullPath(manifestPath)) ?? Path.GetFullPath(".");
        if (!System.Text.Unicode.Utf8.IsValid(utf8.Span)) throw new BenchmarkManifestException(manifestPath, "not valid UTF-8");
        JsonDocument doc;
        try
        {
            doc = StrictJson.ParseDocument(utf8);
        }
        catch (StrictJson.DuplicateKeyException e)
        {
            throw new BenchmarkManifestException(manifestPath, e.Message);
        }
        catch (JsonException e)
        {
            string line = e.LineNumber is long l ? $" at line {l + 1}" : "";
            string m = e.Message;
            int cut = m.IndexOf(" Path:", StringComparison.Ordinal);
            throw new BenchmarkManifestException(manifestPath, $"not valid JSON{line}: {(cut > 0 ? m[..cut] : m)}", e);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException)
        {
            throw new BenchmarkManifestException(manifestPath, $"not valid UTF-8 JSON ({e.Message})", e);
        }
        using (doc)
        {
            var parser = new ManifestParser();
            var manifest = parser.Root(doc.RootElement, folder);
            if (parser.Problems.Count > 0 || manifest is null) throw new BenchmarkManifestException(manifestPath, parser.Problems);
            var problems = manifest.Problems();
            if (problems.Count > 0) throw new BenchmarkManifestException(manifestPath, problems);
            return manifest;
        }
    }

    /// <summary>Every problem with the manifest's content and its images (relative to <see cref="Folder"/>); empty when valid.</summary>
    public IReadOnlyList<string> Problems()
    {
        var p = new List<string>();
        if (string.IsNullOrWhiteSpace(Name)) p.Add("\"name\" is empty");
        if (ImageSize is int size && size <= 0) p.Add($"\"image_size\" {size} must be positive");
        if (Channels is int ch && ch is not (1 or 3)) p.Add($"\"channels\" {ch} must be 1 or 3");
        if (Labels is not null)
        {
            if (Labels.Count == 0) p.Add("\"labels\" is empty (give the class names, or null)");
            for (int i = 0; i < Labels.Count; i++)
                if (string.IsNullOrWhiteSpace(Labels[i])) p.Add($"labels[{i}] is empty");
        }
        if (Subsets.Count == 0) p.Add("\"subsets\" is empty");
        var subsetNames = new HashSet<string>(StringComparer.Ordinal);
        for (int s = 0; s < Subsets.Count; s++)
        {
            var subset = Subsets[s];
            string sw = $"subsets[{s}]";
            if (string.IsNullOrWhiteSpace(subset.Name)) p.Add($"{sw}: \"name\" is empty");
            else if (!subsetNames.Add(subset.Name)) p.Add($"{sw}: duplicate subset name \"{subset.Name}\"");
            if (subset.Groups.Count == 0) p.Add($"{sw} (\"{subset.Name}\"): \"groups\" is empty");
            var groupNames = new HashSet<string>(StringComparer.Ordinal);
            for (int g = 0; g < subset.Groups.Count; g++)
            {
                var group = subset.Groups[g];
                string gw = $"{sw}.groups[{g}] (\"{group.Name}\")";
                if (string.IsNullOrWhiteSpace(group.Name)) p.Add($"{sw}.groups[{g}]: \"name\" is empty");
                else if (!groupNames.Add(group.Name)) p.Add($"{gw}: duplicate group name in subset \"{subset.Name}\"");
                LabelProblem(p, gw, "label", group.Label);
                if (group.Predicted is int pred)
                {
                    if (subset.Kind != BenchmarkSubsetKind.Natural) p.Add($"{gw}: \"predicted\" is given but subset \"{subset.Name}\" is of kind style (only natural groups have one predicted class)");
                    LabelProblem(p, gw, "predicted", pred);
                    if (pred == group.Label) p.Add($"{gw}: \"predicted\" equals \"label\" ({pred}); a failure group's predicted class must be wrong");
                }
                ImagesProblems(p, gw, group.Images);
            }
        }
        string lw = $"locality (\"{Locality.Name}\")";
        if (string.IsNullOrWhiteSpace(Locality.Name)) p.Add("locality: \"name\" is empty");
        if (!(Locality.Margin > 0 && Locality.Margin <= 1)) p.Add($"{lw}: \"margin\" {Locality.Margin.ToString(CultureInfo.InvariantCulture)} must be in (0, 1]");
        ImagesProblems(p, lw, Locality.Images);
        for (int i = 0; i < Notes.Count; i++)
            if (Notes[i] is null) p.Add($"notes[{i}] is null");
        return p;
    }

    private void LabelProblem(List<string> p, string where, string key, int value)
    {
        if (value < 0) p.Add($"{where}: \"{key}\" {value} is negative");
        else if (Labels is { Count: > 0 } && value >= Labels.Count) p.Add($"{where}: \"{key}\" {value} is out of range ({Labels.Count} labels: 0–{Labels.Count - 1})");
    }

    private void ImagesProblems(List<string> p, string where, IReadOnlyList<string> images)
    {
        if (images.Count == 0)
        {
            p.Add($"{where}: \"images\" is empty");
            return;
        }
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string image in images)
        {
            if (!seen.Add(image)) p.Add($"{where}: image \"{image}\" is listed twice");
            else if (PathProblem(image, Folder) is string problem) p.Add($"{where}: image \"{image}\": {problem}");
        }
    }

    /// <summary>Why a relative image path is unusable (null when it is fine): it must stay inside the folder and exist.</summary>
    internal static string? PathProblem(string relative, string folder)
    {
        if (string.IsNullOrEmpty(relative)) return "empty path";
        if (relative.Contains('\\', StringComparison.Ordinal)) return "uses '\\'; paths are '/'-separated";
        if (relative[0] == '/' || Path.IsPathRooted(relative) || (relative.Length >= 2 && relative[1] == ':'))
            return "absolute paths are not allowed (give it relative to the manifest's folder)";
        foreach (string segment in relative.Split('/'))
        {
            if (segment == "..") return "'..' would leave the manifest's folder";
            if (segment is "" or ".") return "not a normalised relative path (empty or '.' segment)";
        }
        string root, full;
        try
        {
            root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder));
            full = Path.GetFullPath(Path.Combine(root, relative));
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            return $"not a valid path ({e.Message})";
        }
        if (!full.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal)) return "leaves the manifest's folder";
        // Every component resolved (directory links included): the real file must stay under the real folder.
        string real;
        try { real = PathSafety.RealPath(full); }
        catch (UnsafePathException) { return "is a symbolic link loop"; }
        if (!PathSafety.IsUnder(real, PathSafety.RealPath(root))) return "resolves (through a symbolic link) to a file outside the manifest's folder";
        if (!File.Exists(full)) return Directory.Exists(full) ? "is a folder, not an image file" : "no such file";
        if (PathSafety.InputFileProblem(full) is { } problem) return problem;
        return null;
    }

    // ---- writing -------------------------------------------------------------------------------------

    /// <summary>The manifest as indented UTF-8 JSON (deterministic: same manifest, same bytes).</summary>
    public byte[] ToJsonBytes()
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("format", FormatTag);
            w.WriteString("name", Name);
            if (BaseModelFingerprint is null) w.WriteNull("base_model_fingerprint"); else w.WriteString("base_model_fingerprint", BaseModelFingerprint);
            if (ImageSize is int size) w.WriteNumber("image_size", size); else w.WriteNull("image_size");
            if (Channels is int ch) w.WriteNumber("channels", ch); else w.WriteNull("channels");
            if (Labels is null) w.WriteNull("labels");
            else
            {
                w.WriteStartArray("labels");
                foreach (string l in Labels) w.WriteStringValue(l);
                w.WriteEndArray();
            }
            if (Seed is ulong seed) w.WriteNumber("seed", seed); else w.WriteNull("seed");
            w.WriteStartArray("subsets");
            foreach (var s in Subsets)
            {
                w.WriteStartObject();
                w.WriteString("name", s.Name);
                w.WriteString("kind", KindName(s.Kind));
                w.WriteStartArray("groups");
                foreach (var g in s.Groups)
                {
                    w.WriteStartObject();
                    w.WriteString("name", g.Name);
                    w.WriteNumber("label", g.Label);
                    if (g.Predicted is int pred) w.WriteNumber("predicted", pred); else w.WriteNull("predicted");
                    WriteStrings(w, "images", g.Images);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartObject("locality");
            w.WriteString("name", Locality.Name);
            w.WriteNumber("margin", Locality.Margin);
            WriteStrings(w, "images", Locality.Images);
            w.WriteEndObject();
            WriteStrings(w, "notes", Notes);
            w.WriteEndObject();
        }
        buffer.WriteByte((byte)'\n');
        return buffer.ToArray();
    }

    private static void WriteStrings(Utf8JsonWriter w, string key, IEnumerable<string> values)
    {
        w.WriteStartArray(key);
        foreach (string v in values) w.WriteStringValue(v);
        w.WriteEndArray();
    }

    /// <summary>
    /// Writes the manifest to <paramref name="path"/> (a .json file, or a folder to hold manifest.json) atomically
    /// (temp file + rename), after checking it as the reader would with the images relative to that file's folder.
    /// Returns the manifest rebased on that folder.
    /// </summary>
    public BenchmarkManifest Write(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Directory.Exists(path)) path = Path.Combine(path, FileName);
        string folder = Path.GetDirectoryName(Path.GetFullPath(path)) ?? Path.GetFullPath(".");
        var rebased = this with { Folder = folder };
        var problems = rebased.Problems();
        if (problems.Count > 0) throw new BenchmarkManifestException(path, problems);
        AtomicFile.WriteAllBytes(path, ToJsonBytes());
        return rebased;
    }

    internal static string KindName(BenchmarkSubsetKind kind) => kind == BenchmarkSubsetKind.Natural ? "natural" : "style";

    // ---- the paper's layout ----------------------------------------------------------------------------


    /// <summary>
    /// The paper's layout: <paramref name="failuresFolder"/> holds one folder per group named
    /// <c>&lt;class index&gt;_&lt;name&gt;</c> (e.g. <c>409_analog clock</c>) with that class's failure images; the label is
    /// the index and the subset is one of <paramref name="kind"/> (natural unless told) named after the folder.
    /// <paramref name="localityFolder"/> holds the locality images, flat. Image files are .png/.jpg/.jpeg/.bmp/.gif/.webp
    /// (others and hidden files are skipped), sorted by name. Image paths are made relative to the nearest folder holding
    /// both (<see cref="Folder"/>), so <c>Write(Folder)</c> gives a readable manifest. The result is validated.
    /// </summary>
    public static BenchmarkManifest FromPaperLayout(string failuresFolder, string localityFolder, IReadOnlyList<string>? labels = null,
                                                    double margin = 0.05, BenchmarkSubsetKind kind = BenchmarkSubsetKind.Natural)
    {
        ArgumentException.ThrowIfNullOrEmpty(failuresFolder);
        ArgumentException.ThrowIfNullOrEmpty(localityFolder);
        string failures = Path.TrimEndingDirectorySeparator(Path.GetFullPath(failuresFolder));
        string locality = Path.TrimEndingDirectorySeparator(Path.GetFullPath(localityFolder));
        if (!Directory.Exists(failures)) throw new BenchmarkManifestException(failuresFolder, "no such folder of failure groups");
        if (!Directory.Exists(locality)) throw new BenchmarkManifestException(localityFolder, "no such locality folder");
        string root = CommonFolder(failures, locality);
        string Relative(string file) => Path.GetRelativePath(root, file).Replace(Path.DirectorySeparatorChar, '/');

        var problems = new List<string>();
        var groups = new List<(int Label, string Name, List<string> Images)>();
        foreach (string dir in Directory.GetDirectories(failures).Order(StringComparer.Ordinal))
        {
            string name = Path.GetFileName(dir);
            if (name.StartsWith('.')) continue;
            int cut = name.IndexOf('_', StringComparison.Ordinal);
            if (cut <= 0 || !int.TryParse(name.AsSpan(0, cut), NumberStyles.None, CultureInfo.InvariantCulture, out int label) || cut == name.Length - 1)
            {
                problems.Add($"folder \"{name}\" is not named <class index>_<name>");
                continue;
            }
            var images = ImagesIn(dir).Select(Relative).ToList();
            if (images.Count == 0) problems.Add($"folder \"{name}\" holds no images ({string.Join(", ", ImageLoader.Extensions)})");
            else groups.Add((label, name, images));
        }
        if (groups.Count == 0 && problems.Count == 0) problems.Add("holds no <class index>_<name> group folders");
        if (problems.Count > 0) throw new BenchmarkManifestException(failuresFolder, problems);
        var localityImages = ImagesIn(locality).Select(Relative).ToList();
        if (localityImages.Count == 0) throw new BenchmarkManifestException(localityFolder, $"holds no images ({string.Join(", ", ImageLoader.Extensions)})");

        var manifest = new BenchmarkManifest
        {
            Name = Path.GetFileName(failures),
            Labels = labels,
            Subsets = [new BenchmarkSubset(Path.GetFileName(failures), kind,
                groups.OrderBy(g => g.Label).ThenBy(g => g.Name, StringComparer.Ordinal)
                      .Select(g => new BenchmarkGroup(g.Name, g.Label, null, g.Images)).ToList())],
            Locality = new BenchmarkLocality(Path.GetFileName(locality), margin, localityImages),
            Notes = [$"from the paper's layout: {groups.Count} group folders in {Relative(failures)}/, {localityImages.Count} locality images in {Relative(locality)}/"],
            Folder = root,
        };
        var invalid = manifest.Problems();
        if (invalid.Count > 0) throw new BenchmarkManifestException(failuresFolder, invalid);
        return manifest;
    }

    private static IEnumerable<string> ImagesIn(string folder) =>
        Directory.GetFiles(folder)
            .Where(f => !Path.GetFileName(f).StartsWith('.') && ImageLoader.HasImageExtension(f))
            .Order(StringComparer.Ordinal);

    /// <summary>The deepest folder that holds both (the parent of a folder that holds the other).</summary>
    private static string CommonFolder(string a, string b)
    {
        var pa = a.Split(Path.DirectorySeparatorChar);
        var pb = b.Split(Path.DirectorySeparatorChar);
        int n = 0;
        while (n < pa.Length && n < pb.Length && pa[n] == pb[n]) n++;
        // Image paths must go through a subfolder: if one folder holds the other (or they are the same), use its parent.
        if (n == pa.Length || n == pb.Length) n--;
        if (n <= 0) return Path.GetPathRoot(a) ?? "/";
        string common = string.Join(Path.DirectorySeparatorChar, pa.Take(n));
        return common.Length == 0 ? Path.GetPathRoot(a) ?? "/" : common;
    }

    // ---- the parser ------------------------------------------------------------------------------------

    /// <summary>Walks the JSON collecting every structural problem (unknown, missing and mistyped fields).</summary>
    private sealed class ManifestParser
    {
        public List<string> Problems { get; } = [];

        private bool Fields(JsonElement obj, string where, string[] required, string[] optional)
        {
            if (obj.ValueKind != JsonValueKind.Object)
            {
                Problems.Add($"{where} must be a JSON object, got {StrictJson.Show(obj)}");
                return false;
            }
            foreach (var prop in obj.EnumerateObject())
                if (!required.Contains(prop.Name) && !optional.Contains(prop.Name))
                    Problems.Add($"{where}: unknown field \"{prop.Name}\" (expected {string.Join(", ", required.Concat(optional))})");
            foreach (string key in required)
                if (!obj.TryGetProperty(key, out _)) Problems.Add($"{where}: missing field \"{key}\"");
            return true;
        }

        private static bool Present(JsonElement obj, string key, out JsonElement value) =>
            obj.TryGetProperty(key, out value) && value.ValueKind != JsonValueKind.Null;

        private string? String(JsonElement obj, string key, string where, bool nullable = false)
        {
            if (!obj.TryGetProperty(key, out var e)) return null;
            if (e.ValueKind == JsonValueKind.String) return e.GetString();
            if (e.ValueKind == JsonValueKind.Null && nullable) return null;
            Problems.Add($"{where}: \"{key}\" must be a string{(nullable ? " or null" : "")}, got {StrictJson.Show(e)}");
            return null;
        }

        private int? Int(JsonElement obj, string key, string where, bool nullable = false)
        {
            if (!obj.TryGetProperty(key, out var e)) return null;
            if (e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int v)) return v;
            if (e.ValueKind == JsonValueKind.Null && nullable) return null;
            Problems.Add($"{where}: \"{key}\" must be an integer{(nullable ? " or null" : "")}, got {StrictJson.Show(e)}");
            return null;
        }

        private List<string>? Strings(JsonElement obj, string key, string where, bool nullable = false)
        {
            if (!obj.TryGetProperty(key, out var e)) return null;
            if (e.ValueKind == JsonValueKind.Null && nullable) return null;
            if (e.ValueKind != JsonValueKind.Array)
            {
                Problems.Add($"{where}: \"{key}\" must be an array of strings{(nullable ? " or null" : "")}, got {StrictJson.Show(e)}");
                return null;
            }
            var list = new List<string>();
            int i = 0;
            foreach (var x in e.EnumerateArray())
            {
                if (x.ValueKind == JsonValueKind.String) list.Add(x.GetString()!);
                else Problems.Add($"{where}: {key}[{i}] must be a string, got {StrictJson.Show(x)}");
                i++;
            }
            return list;
        }

        public BenchmarkManifest? Root(JsonElement root, string folder)
        {
            if (!Fields(root, "the manifest", ["format", "name", "subsets", "locality"],
                        ["base_model_fingerprint", "image_size", "channels", "labels", "seed", "notes"]))
                return null;
            const string w = "the manifest";
            if (root.TryGetProperty("format", out var fe))
            {
                if (fe.ValueKind != JsonValueKind.String)
                    Problems.Add($"\"format\" must be the string \"{FormatTag}\", got {StrictJson.Show(fe)}");
                else if (fe.GetString() is string tag && tag != FormatTag)
                {
                    // Stop here: the rest may follow another schema, and listing its "problems" would mislead.
                    Problems.Clear();
                    Problems.Add(tag.StartsWith("wte-benchmark/", StringComparison.Ordinal)
                        ? $"format \"{tag}\" is not supported (this version reads \"{FormatTag}\")"
                        : $"format \"{tag}\" is not a wte benchmark manifest (expected \"{FormatTag}\")");
                    return null;
                }
            }
            string? name = String(root, "name", w);
            string? fingerprint = String(root, "base_model_fingerprint", w, nullable: true);
            int? imageSize = Int(root, "image_size", w, nullable: true);
            int? channels = Int(root, "channels", w, nullable: true);
            var labels = Strings(root, "labels", w, nullable: true);
            ulong? seed = null;
            if (Present(root, "seed", out var se))
            {
                if (se.ValueKind == JsonValueKind.Number && se.TryGetUInt64(out ulong s)) seed = s;
                else Problems.Add($"\"seed\" must be a non-negative integer or null, got {StrictJson.Show(se)}");
            }
            var notes = Strings(root, "notes", w) ?? [];

            var subsets = new List<BenchmarkSubset>();
            if (root.TryGetProperty("subsets", out var ss))
            {
                if (ss.ValueKind != JsonValueKind.Array) Problems.Add($"\"subsets\" must be an array, got {StrictJson.Show(ss)}");
                else
                {
                    int i = 0;
                    foreach (var s in ss.EnumerateArray()) if (Subset(s, $"subsets[{i++}]") is { } subset) subsets.Add(subset);
                }
            }
            BenchmarkLocality? locality = null;
            if (root.TryGetProperty("locality", out var le) && Fields(le, "locality", ["name", "margin", "images"], []))
            {
                string? lname = String(le, "name", "locality");
                double? margin = null;
                if (le.TryGetProperty("margin", out var me))
                {
                    if (me.ValueKind == JsonValueKind.Number && me.TryGetDouble(out double m) && double.IsFinite(m)) margin = m;
                    else Problems.Add($"locality: \"margin\" must be a number, got {StrictJson.Show(me)}");
                }
                var images = Strings(le, "images", "locality");
                if (lname is not null && margin is double mm && images is not null) locality = new BenchmarkLocality(lname, mm, images);
            }
            if (Problems.Count > 0 || name is null || locality is null) return null;
            return new BenchmarkManifest
            {
                Name = name, BaseModelFingerprint = fingerprint, ImageSize = imageSize, Channels = channels, Labels = labels, Seed = seed,
                Subsets = subsets, Locality = locality, Notes = notes, Folder = folder,
            };
        }

        private BenchmarkSubset? Subset(JsonElement s, string where)
        {
            if (!Fields(s, where, ["name", "kind", "groups"], [])) return null;
            string? name = String(s, "name", where);
            if (name is not null) where = $"{where} (\"{name}\")";
            string? kindText = String(s, "kind", where);
            BenchmarkSubsetKind? kind = kindText switch
            {
                null => null,
                "natural" => BenchmarkSubsetKind.Natural,
                "style" => BenchmarkSubsetKind.Style,
                _ => null,
            };
            if (kindText is not null && kind is null) Problems.Add($"{where}: \"kind\" \"{kindText}\" must be \"natural\" or \"style\"");
            var groups = new List<BenchmarkGroup>();
            if (s.TryGetProperty("groups", out var ge))
            {
                if (ge.ValueKind != JsonValueKind.Array) Problems.Add($"{where}: \"groups\" must be an array, got {StrictJson.Show(ge)}");
                else
                {
                    int i = 0;
                    foreach (var g in ge.EnumerateArray()) if (Group(g, $"{where}.groups[{i++}]") is { } group) groups.Add(group);
                }
            }
            return name is not null && kind is BenchmarkSubsetKind k ? new BenchmarkSubset(name, k, groups) : null;
        }

        private BenchmarkGroup? Group(JsonElement g, string where)
        {
            if (!Fields(g, where, ["name", "label", "images"], ["predicted"])) return null;
            string? name = String(g, "name", where);
            if (name is not null) where = $"{where} (\"{name}\")";
            int? label = Int(g, "label", where);
            int? predicted = Int(g, "predicted", where, nullable: true);
            var images = Strings(g, "images", where);
            return name is not null && label is int l && images is not null ? new BenchmarkGroup(name, l, predicted, images) : null;
        }
    }
}

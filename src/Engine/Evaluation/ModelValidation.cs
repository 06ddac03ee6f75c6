using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using WhereToEdit.Engine.Training;

namespace WhereToEdit.Engine.Evaluation;

/// <summary>What <c>wte validate</c> measures: a labelled folder or IDX pair, the model before and after patches.</summary>
public sealed record ValidationOptions
{
    /// <summary>Class subfolders: <c>3/</c>, <c>3_dress/</c> (the paper's layout) or a label name (<c>Dress/</c>).</summary>
    public string? Folder { get; init; }
    public string? IdxImages { get; init; }
    /// <summary>Defaults to the images file with <c>images-idx3</c> replaced by <c>labels-idx1</c>.</summary>
    public string? IdxLabels { get; init; }
    /// <summary>Applied in order (each made for the model the previous ones give).</summary>
    public IReadOnlyList<string> Patches { get; init; } = [];
    public int Batch { get; init; } = 64;
    /// <summary>Only the first N images (in sorted order), or all.</summary>
    public int? Limit { get; init; }
}

public sealed record AccuracyScore(string Fingerprint, double Top1, double Top5);

public sealed record ClassAccuracy(int Index, string Label, int Images, double Top1Before, double? Top1After);

/// <summary>Top-1/top-5 and per-class accuracy before and (with patches) after; fixed/broken count changed predictions.</summary>
public sealed record ValidationResult(
    string Source, int Images, int Classes, IReadOnlyList<string> Patches,
    AccuracyScore Before, AccuracyScore? After, int Fixed, int Broken, IReadOnlyList<ClassAccuracy> PerClass);

public static partial class ModelValidation
{
    public static ValidationResult Run(VitModel model, LoadedModel loaded, ValidationOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Batch <= 0) throw new ArgumentException($"--batch {options.Batch}: must be positive");
        if (options.Limit is <= 0) throw new ArgumentException($"--limit {options.Limit}: must be positive");
        if ((options.Folder is null) == (options.IdxImages is null))
            throw new ArgumentException("give either a labelled FOLDER or --idx IMAGES (not both)");
        var patches = options.Patches.Select(EditPatch.Load).ToList();   // every patch readable before any work
        int classes = model.Config.NumClasses;
        var labels = Enumerable.Range(0, classes).Select(i => loaded.Labels is { } l && i < l.Count ? l[i] : i.ToString(CultureInfo.InvariantCulture)).ToArray();

        Func<float[]> classify;
        int[] truth;
        string source;
        if (options.Folder is { } folder)
        {
            var items = FolderItems(folder, labels);
            if (options.Limit is int n) items = items.Take(n).ToList();
            truth = items.Select(i => i.Label).ToArray();
            var files = items.Select(i => i.File).ToList();
            var loader = new ImageLoader();
            foreach (string f in files) loader.Identify(f);   // refuse unreadable images before any work
            classify = () => Predictor.Run(model, loader, loaded.Preprocessing, files, options.Batch, 1, null).SelectMany(p => p.Logits).ToArray();
            source = folder;
        }
        else
        {
            string imagesPath = options.IdxImages!;
            string labelsPath = options.IdxLabels ?? imagesPath.Replace("images-idx3", "labels-idx1", StringComparison.Ordinal);
            if (labelsPath == imagesPath) throw new ArgumentException($"--idx {imagesPath}: give the labels file with --idx-labels");
            var data = LabeledImagesIdx.Load(imagesPath, labelsPath);
            if (data.Height != data.Width) throw new ArgumentException($"--idx {imagesPath}: images are {data.Height}×{data.Width}, not square");
            int count = Math.Min(data.Count, options.Limit ?? int.MaxValue);
            truth = data.Labels.Take(count).Select(b => (int)b).ToArray();
            if (truth.FirstOrDefault(t => t >= classes, -1) is int bad and >= 0)
                throw new ArgumentException($"--idx-labels {labelsPath}: label {bad} but the model has {classes} classes");
            var pixels = data.Pixels.AsSpan(0, count * data.PixelsPerImage).ToArray();
            classify = () => BenchmarkBuilder.Classify(model, loaded.Preprocessing, pixels, count, data.Height, options.Batch);
            source = imagesPath;
        }
        if (truth.Length == 0) throw new ArgumentException($"{source}: no labelled images");

        float[] before = classify();
        var beforeScore = Score(before, truth, classes, VitCheckpoint.Fingerprint(model));
        float[]? after = null;
        AccuracyScore? afterScore = null;
        if (patches.Count > 0)
        {
            for (int i = 0; i < patches.Count; i++)
            {
                try { patches[i].Apply(model); }
                catch (InvalidOperationException e) { throw new InvalidOperationException($"--patch {options.Patches[i]}: {e.Message}", e); }
            }
            after = classify();
            afterScore = Score(after, truth, classes, VitCheckpoint.Fingerprint(model));
        }

        int fixedCount = 0, broken = 0;
        var perClass = new List<ClassAccuracy>();
        var predBefore = ArgMaxes(before, classes);
        var predAfter = after is null ? null : ArgMaxes(after, classes);
        if (predAfter is not null)
            for (int i = 0; i < truth.Length; i++)
            {
                bool was = predBefore[i] == truth[i], now = predAfter[i] == truth[i];
                if (!was && now) fixedCount++;
                if (was && !now) broken++;
            }
        for (int k = 0; k < classes; k++)
        {
            var idx = Enumerable.Range(0, truth.Length).Where(i => truth[i] == k).ToList();
            if (idx.Count == 0) continue;
            double b = idx.Count(i => predBefore[i] == k) / (double)idx.Count;
            double? a = predAfter is null ? null : idx.Count(i => predAfter[i] == k) / (double)idx.Count;
            perClass.Add(new ClassAccuracy(k, labels[k], idx.Count, b, a));
        }
        return new ValidationResult(source, truth.Length, classes, options.Patches.ToList(), beforeScore, afterScore, fixedCount, broken, perClass);
    }

    /// <summary>Writes <c>validation.json</c> and <c>validation.csv</c> (one row per class, then "all") into <paramref name="folder"/>.</summary>
    public static void Write(ValidationResult result, string folder)
    {
        Directory.CreateDirectory(folder);
        AtomicFile.WriteAllText(Path.Combine(folder, "validation.json"), ToJson(result) + "\n");
        var csv = new StringBuilder("class,label,images,top1_before,top1_after\n");
        string F(double? v) => v is double d ? d.ToString("F6", CultureInfo.InvariantCulture) : "";
        foreach (var c in result.PerClass)
            csv.Append(CultureInfo.InvariantCulture, $"{c.Index},{Csv(c.Label)},{c.Images},{F(c.Top1Before)},{F(c.Top1After)}\n");
        csv.Append(CultureInfo.InvariantCulture, $"all,,{result.Images},{F(result.Before.Top1)},{F(result.After?.Top1)}\n");
        AtomicFile.WriteAllText(Path.Combine(folder, "validation.csv"), csv.ToString());
    }

    public static string ToJson(ValidationResult result) => JsonSerializer.Serialize(result, JsonOptions);

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    private static string Csv(string s) => s.Contains(',') || s.Contains('"') ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;

    private static AccuracyScore Score(float[] logits, int[] truth, int classes, string fingerprint)
    {
        TensorChecks.EnsureFinite(logits, "validation logits");
        int top1 = 0, top5 = 0;
        for (int i = 0; i < truth.Length; i++)
        {
            var row = logits.AsSpan(i * classes, classes);
            float mine = row[truth[i]];
            int higher = 0;   // rank of the true class, ties broken toward the lower index as argmax does
            for (int k = 0; k < classes; k++) if (row[k] > mine || (row[k] == mine && k < truth[i])) higher++;
            if (higher == 0) top1++;
            if (higher < 5) top5++;
        }
        return new AccuracyScore(fingerprint, top1 / (double)truth.Length, top5 / (double)truth.Length);
    }

    private static int[] ArgMaxes(float[] logits, int classes) =>
        Enumerable.Range(0, logits.Length / classes).Select(i => HostMath.ArgMax(logits.AsSpan(i * classes, classes))).ToArray();

    /// <summary>Images of class subfolders, sorted by path; a folder that names no class is an error listing the classes.</summary>
    internal static List<(string File, int Label)> FolderItems(string folder, IReadOnlyList<string> labels)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder}: no such folder");
        var items = new List<(string, int)>();
        foreach (string sub in Directory.EnumerateDirectories(folder).Order(StringComparer.Ordinal))
        {
            string name = Path.GetFileName(sub);
            int label = ClassOf(name, labels)
                ?? throw new ArgumentException($"{sub}: folder name is not a class of the model (expected an index 0–{labels.Count - 1}, <index>_<name>, or one of: {string.Join(", ", labels)})");
            foreach (string f in Directory.EnumerateFiles(sub).Order(StringComparer.Ordinal))
                if (ImageLoader.HasImageExtension(f)) items.Add((f, label));
        }
        if (items.Count == 0)
            throw new ArgumentException($"{folder}: no images in class subfolders (expected {folder}/<class>/<image>, a class being an index, <index>_<name> or a label name)");
        return items;
    }

    private static int? ClassOf(string name, IReadOnlyList<string> labels)
    {
        for (int k = 0; k < labels.Count; k++)
            if (string.Equals(labels[k], name, StringComparison.OrdinalIgnoreCase)) return k;
        var m = IndexPrefix().Match(name);
        if (m.Success && int.TryParse(m.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int i) && i < labels.Count) return i;
        return null;
    }

    [GeneratedRegex(@"^(\d+)(_.*)?$")]
    private static partial Regex IndexPrefix();
}

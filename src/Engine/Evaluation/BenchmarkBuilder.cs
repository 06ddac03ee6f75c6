using System.Globalization;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using WhereToEdit.Engine.Training;

namespace WhereToEdit.Engine.Evaluation;

/// <summary>What <see cref="BenchmarkBuilder"/> keeps. Every cap picks its images or groups deterministically from the seed.</summary>
public sealed record BenchmarkBuildOptions
{
    /// <summary>Seeds the per-group image samples and the spotlights.</summary>
    public ulong Seed { get; init; }

    /// <summary>Locality set: correct images with top-1 − top-2 probability below this (§7: 0.05). Never widened automatically.</summary>
    public double Margin { get; init; } = 0.05;

    /// <summary>A group needs at least this many failures (§7 analogue: 5).</summary>
    public int MinPerGroup { get; init; } = 5;

    /// <summary>Images kept per group (a seeded sample of its failures, listed in test-set order).</summary>
    public int MaxPerGroup { get; init; } = 12;

    /// <summary>Groups kept per subset: those with the most failures (ties: lower true class, then lower predicted class).</summary>
    public int MaxGroups { get; init; } = 20;

    /// <summary>Locality images kept (a seeded sample); 0 keeps all.</summary>
    public int MaxLocality { get; init; }

    /// <summary>A locality set smaller than this gets a warning in the notes.</summary>
    public int SmallLocality { get; init; } = 50;

    /// <summary>Images per forward pass.</summary>
    public int Batch { get; init; } = 256;

    /// <summary>The benchmark's name in the manifest.</summary>
    public string Name { get; init; } = "fashion-mnist";

    public OilPaintingStyle OilPainting { get; init; } = new();
    public SpotlightStyle Spotlight { get; init; } = new();

    public BenchmarkBuildOptions Validate()
    {
        if (!(Margin > 0 && Margin <= 1)) throw new ArgumentException($"margin {Margin.ToString(CultureInfo.InvariantCulture)} must be in (0, 1]");
        if (MinPerGroup < 1) throw new ArgumentException($"min per group {MinPerGroup} must be at least 1");
        if (MaxPerGroup < MinPerGroup) throw new ArgumentException($"max per group {MaxPerGroup} must be at least the minimum group size {MinPerGroup}");
        if (MaxGroups < 1) throw new ArgumentException($"max groups {MaxGroups} must be at least 1");
        if (MaxLocality < 0) throw new ArgumentException($"max locality {MaxLocality} must be 0 (all) or positive");
        if (Batch < 1) throw new ArgumentException($"batch {Batch} must be positive");
        if (string.IsNullOrWhiteSpace(Name)) throw new ArgumentException("benchmark name is empty");
        ArgumentNullException.ThrowIfNull(OilPainting);
        ArgumentNullException.ThrowIfNull(Spotlight);
        OilPainting.Validate();
        Spotlight.Validate();
        return this;
    }
}

/// <summary>One subset's counts: failures found, groups with enough of them, and what was kept.</summary>
public sealed record BenchmarkSubsetStats(string Name, BenchmarkSubsetKind Kind, int Candidates, int Failures, int EligibleGroups, int Groups, int Images);

/// <summary>What a build wrote: the manifest (rebased on the output folder), its path, counts, and the builder's own prediction for every written image.</summary>
internal sealed record BenchmarkBuildResult(
    BenchmarkManifest Manifest,
    string ManifestPath,
    double BaseAccuracy,
    IReadOnlyList<BenchmarkSubsetStats> Subsets,
    int LocalityCandidates,
    IReadOnlyDictionary<string, int> Predictions,
    long TotalBytes);

/// <summary>
/// Builds the §7 benchmark from a base model and a labelled test set (Fashion-MNIST), deterministically:
/// <list type="bullet">
/// <item><b>natural</b>: the model's real test failures grouped by (true class, predicted class); pairs with at least
/// <see cref="BenchmarkBuildOptions.MinPerGroup"/> failures, the <see cref="BenchmarkBuildOptions.MaxGroups"/> largest,
/// at most <see cref="BenchmarkBuildOptions.MaxPerGroup"/> images each (seeded sample).</item>
/// <item><b>oil_painting</b> and <b>spotlight</b> (style): the test images the model gets RIGHT, re-rendered
/// (<see cref="StyleFilters.OilPainting"/>; <see cref="StyleFilters.ApplySpotlight"/> with a seeded spotlight per image),
/// keeping those the model then gets wrong, grouped by true class, same rule and caps. Starting from correct images
/// makes every failure the style shift's doing.</item>
/// <item><b>sensitive</b> locality set: test images the model gets right with top-1 − top-2 probability margin below
/// <see cref="BenchmarkBuildOptions.Margin"/>. A small set is reported in the notes, never silently widened.</item>
/// </list>
/// Every image is classified exactly as <c>wte predict</c> would classify the written PNG: the raw 8-bit pixels go
/// through <see cref="ImageLoader.Preprocess"/> with the model's preprocessing, and the PNG stores those same pixels
/// (8-bit grayscale, lossless), so reloading reproduces the inputs bit for bit. Files are named by test-set index:
/// <c>natural/&lt;true&gt;_&lt;pred&gt;/NNNNN.png</c>, <c>oil_painting/&lt;true&gt;/NNNNN.png</c>,
/// <c>spotlight/&lt;true&gt;/NNNNN.png</c>, <c>locality/NNNNN.png</c>; manifest.json is written last, atomically.
/// </summary>
internal static class BenchmarkBuilder
{
    public const string NaturalSubset = "natural";
    public const string OilPaintingSubset = "oil_painting";
    public const string SpotlightSubset = "spotlight";
    public const string LocalityName = "sensitive";
    public const string LocalityFolder = "locality";

    /// <summary>
    /// Builds into <paramref name="outFolder"/>, which must not exist or be empty (a failed build removes a folder it
    /// created). <paramref name="labels"/> names the classes (null: indices).
    /// </summary>
    public static BenchmarkBuildResult Build(VitModel model, Preprocessing preprocessing, IReadOnlyList<string>? labels, LabeledImages test,
                                             string outFolder, BenchmarkBuildOptions? options = null, Action<string>? log = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(preprocessing);
        ArgumentNullException.ThrowIfNull(test);
        ArgumentException.ThrowIfNullOrEmpty(outFolder);
        var o = (options ?? new BenchmarkBuildOptions()).Validate();
        var c = model.Config;
        if (c.InChans != 1 || preprocessing.Channels != 1)
            throw new ArgumentException($"the benchmark is built from grayscale images: the model takes {c.InChans} channels and its preprocessing gives {preprocessing.Channels}");
        var problems = preprocessing.Problems();
        if (problems.Count > 0) throw new ArgumentException("invalid preprocessing: " + string.Join("; ", problems));
        if (preprocessing.CropSize != c.ImageSize)
            throw new ArgumentException($"preprocessing crops {preprocessing.CropSize} px but the model takes {c.ImageSize} px");
        if (test.Height != test.Width) throw new ArgumentException($"{test.Source}: images are {test.Height}×{test.Width}; square images expected");
        if (test.Count == 0) throw new ArgumentException($"{test.Source}: no images");
        for (int i = 0; i < test.Count; i++)
            if (test.Labels[i] >= c.NumClasses)
                throw new ArgumentException($"{test.Source}: image {i} has label {test.Labels[i]} but the model has {c.NumClasses} classes");
        if (labels is not null && labels.Count != c.NumClasses)
            throw new ArgumentException($"{labels.Count} label names for a model with {c.NumClasses} classes");

        string root = Path.GetFullPath(outFolder);
        bool created = !Directory.Exists(root);
        if (!created && Directory.EnumerateFileSystemEntries(root).Any())
            throw new IOException($"{outFolder}: output folder is not empty; give a new or empty folder");
        Directory.CreateDirectory(root);
        try
        {
            return BuildInto(model, preprocessing, labels, test, root, o, log ?? (_ => { }));
        }
        catch
        {
            if (created)
                try { Directory.Delete(root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    private sealed record Candidate(int Index, int Label, int Predicted, byte[] Pixels);

    private static BenchmarkBuildResult BuildInto(VitModel model, Preprocessing pre, IReadOnlyList<string>? labels, LabeledImages test,
                                                  string root, BenchmarkBuildOptions o, Action<string> log)
    {
        int n = test.Count, side = test.Width, classes = model.Config.NumClasses;
        string Label(int k) => labels is not null ? labels[k] : k.ToString(CultureInfo.InvariantCulture);
        var notes = new List<string>();
        var predictions = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var stats = new List<BenchmarkSubsetStats>();
        var subsets = new List<BenchmarkSubset>();
        long bytes = 0;

        // ---- the base model on the clean test set
        log($"classifying {n} test images");
        var logits = Classify(model, pre, test.Pixels, n, side, o.Batch);
        var predicted = new int[n];
        var margin = new double[n];
        int correct = 0;
        for (int i = 0; i < n; i++)
        {
            (predicted[i], margin[i]) = ArgmaxAndMargin(logits.AsSpan(i * classes, classes));
            if (predicted[i] == test.Labels[i]) correct++;
        }
        double accuracy = (double)correct / n;
        notes.Add(string.Create(CultureInfo.InvariantCulture,
            $"base model: {correct} of {n} test images right ({accuracy:P2}) on {Path.GetFileName(test.Source)}; image files are named by test-set index"));

        string Write(string relative, byte[] pixels, int prediction)
        {
            string path = Path.Combine(root, relative.Replace('/', Path.DirectorySeparatorChar));
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            bytes += WriteGrayPng(path, pixels, side, side);
            predictions.Add(relative, prediction);
            return relative;
        }
        string File(int index) => index.ToString("D5", CultureInfo.InvariantCulture) + ".png";

        // ---- natural: real failures by confusion pair
        var failures = new List<Candidate>();
        for (int i = 0; i < n; i++)
            if (predicted[i] != test.Labels[i]) failures.Add(new Candidate(i, test.Labels[i], predicted[i], test.Image(i).ToArray()));
        AddSubset(NaturalSubset, BenchmarkSubsetKind.Natural, n, failures, byPair: true,
            key => $"{Label(key.Label)}→{Label(key.Predicted)}",
            (key, index) => $"{NaturalSubset}/{key.Label}_{key.Predicted}/{File(index)}",
            "real test-set failures grouped by (true class, predicted class)");

        // ---- style subsets: correct images re-rendered, kept where the model now fails
        var right = Enumerable.Range(0, n).Where(i => predicted[i] == test.Labels[i]).ToArray();
        var oil = o.OilPainting;
        StyleSubset(OilPaintingSubset, i => StyleFilters.OilPainting(test.Image(i), side, side, oil),
            string.Create(CultureInfo.InvariantCulture, $"oil painting (Kuwahara radius {oil.Radius}, {oil.Levels} grey levels)"));
        var sp = o.Spotlight;
        StyleSubset(SpotlightSubset, i => StyleFilters.ApplySpotlight(test.Image(i), side, side, sp.Draw(new Rng(SeedFor(o.Seed, SpotlightSubset, i)))),
            string.Create(CultureInfo.InvariantCulture,
                $"stage lighting (one seeded spot per image: centre in [{sp.CenterMin}, {sp.CenterMax}]·side, σ along {sp.SigmaMin}–{sp.SigmaMax}·side, across ×{sp.AspectMin}–{sp.AspectMax}, gamma {sp.GammaMin}–{sp.GammaMax}, ambient {sp.AmbientMin}–{sp.AmbientMax}, haze {sp.HazeMin}–{sp.HazeMax})"));

        if (subsets.Count == 0)
            throw new InvalidOperationException($"no subset has a group of at least {o.MinPerGroup} failures; the model makes too few mistakes on {test.Source} for this benchmark");

        // ---- locality: correct and near the decision boundary
        var sensitive = right.Where(i => margin[i] < o.Margin).ToArray();
        string marginText = o.Margin.ToString(CultureInfo.InvariantCulture);
        if (sensitive.Length == 0)
            throw new InvalidOperationException($"no correctly classified test image has a top-1 − top-2 margin below {marginText}; the locality set would be empty (choose another --margin)");
        var kept = o.MaxLocality > 0 && sensitive.Length > o.MaxLocality ? Sample(sensitive, o.MaxLocality, SeedFor(o.Seed, LocalityName, 0)) : sensitive;
        var localityImages = kept.Select(i => Write($"{LocalityFolder}/{File(i)}", test.Image(i).ToArray(), predicted[i])).ToList();
        notes.Add($"locality \"{LocalityName}\": {sensitive.Length} of {right.Length} correctly classified test images have a top-1 − top-2 probability margin below {marginText}"
                  + (kept.Length < sensitive.Length ? $"; kept a seeded sample of {kept.Length}" : "; all kept"));
        if (kept.Length < o.SmallLocality)
            notes.Add($"WARNING: the locality set is small ({kept.Length} < {o.SmallLocality} images): locality rates are coarse. The margin was NOT widened; rebuild with a larger --margin to change the set's definition.");

        var manifest = new BenchmarkManifest
        {
            Name = o.Name,
            BaseModelFingerprint = VitCheckpoint.Fingerprint(model),
            ImageSize = side,
            Channels = 1,
            Labels = labels?.ToArray() ?? Enumerable.Range(0, classes).Select(Label).ToArray(),
            Seed = o.Seed,
            Subsets = subsets,
            Locality = new BenchmarkLocality(LocalityName, o.Margin, localityImages),
            Notes = notes,
            Folder = root,
        };
        string manifestPath = Path.Combine(root, BenchmarkManifest.FileName);
        manifest = manifest.Write(manifestPath);
        bytes += new FileInfo(manifestPath).Length;
        log($"wrote {manifestPath}");
        return new BenchmarkBuildResult(manifest, manifestPath, accuracy, stats, sensitive.Length, predictions, bytes);

        void StyleSubset(string name, Func<int, byte[]> render, string description)
        {
            log($"rendering {right.Length} correctly classified images as {name}");
            var pixels = new byte[right.Length * side * side];
            for (int r = 0; r < right.Length; r++) render(right[r]).CopyTo(pixels, r * side * side);
            var styled = Classify(model, pre, pixels, right.Length, side, o.Batch);
            var found = new List<Candidate>();
            for (int r = 0; r < right.Length; r++)
            {
                int p = ArgmaxAndMargin(styled.AsSpan(r * classes, classes)).Predicted;
                if (p != test.Labels[right[r]]) found.Add(new Candidate(right[r], test.Labels[right[r]], p, pixels.AsSpan(r * side * side, side * side).ToArray()));
            }
            AddSubset(name, BenchmarkSubsetKind.Style, right.Length, found, byPair: false,
                key => Label(key.Label),
                (key, index) => $"{name}/{key.Label}/{File(index)}",
                $"{description}; applied to the {right.Length} test images the base model gets right, kept where it then fails, grouped by true class");
        }

        void AddSubset(string name, BenchmarkSubsetKind kind, int candidates, List<Candidate> found, bool byPair,
                       Func<(int Label, int Predicted), string> groupName, Func<(int Label, int Predicted), int, string> imagePath, string description)
        {
            var byKey = found.GroupBy(f => (f.Label, Predicted: byPair ? f.Predicted : -1)).ToList();
            var eligible = byKey.Where(g => g.Count() >= o.MinPerGroup).ToList();
            var chosen = eligible.OrderByDescending(g => g.Count()).ThenBy(g => g.Key.Label).ThenBy(g => g.Key.Predicted)
                                 .Take(o.MaxGroups).OrderBy(g => g.Key.Label).ThenBy(g => g.Key.Predicted).ToList();
            var groups = new List<BenchmarkGroup>();
            foreach (var g in chosen)
            {
                var members = g.ToDictionary(f => f.Index);
                var indices = members.Keys.Order().ToArray();
                var pick = indices.Length > o.MaxPerGroup
                    ? Sample(indices, o.MaxPerGroup, SeedFor(o.Seed, name, (long)g.Key.Label * 1_000_003 + g.Key.Predicted + 1))
                    : indices;
                var images = pick.Select(i => Write(imagePath(g.Key, i), members[i].Pixels, members[i].Predicted)).ToList();
                groups.Add(new BenchmarkGroup(groupName(g.Key), g.Key.Label, byPair ? g.Key.Predicted : null, images));
            }
            int imageCount = groups.Sum(g => g.Images.Count);
            stats.Add(new BenchmarkSubsetStats(name, kind, candidates, found.Count, eligible.Count, groups.Count, imageCount));
            string keptText = eligible.Count > groups.Count ? $"kept the {groups.Count} largest" : $"kept all {groups.Count}";
            notes.Add($"{name}: {description}. {found.Count} failures in {byKey.Count} groups; {eligible.Count} have ≥ {o.MinPerGroup}; {keptText}, ≤ {o.MaxPerGroup} images each (seeded sample): {imageCount} images");
            if (groups.Count > 0) subsets.Add(new BenchmarkSubset(name, kind, groups));
            else notes.Add($"{name}: left out (no group reaches {o.MinPerGroup} failures)");
        }
    }

    /// <summary>
    /// Logits of <paramref name="count"/> 8-bit single-channel square images, each preprocessed by
    /// <see cref="ImageLoader.Preprocess"/> exactly as a decoded PNG of those pixels would be.
    /// </summary>
    public static float[] Classify(VitModel model, Preprocessing preprocessing, byte[] pixels, int count, int side, int batch)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(preprocessing);
        ArgumentNullException.ThrowIfNull(pixels);
        var c = model.Config;
        int per = side * side;
        if (pixels.Length != (long)count * per) throw new ArgumentException($"{pixels.Length} pixels for {count} images of {side}×{side}");
        if (preprocessing.OutputLength != c.InChans * c.ImageSize * c.ImageSize)
            throw new ArgumentException($"preprocessing gives {preprocessing.OutputLength} values per image, the model takes {c.InChans}×{c.ImageSize}×{c.ImageSize}");
        var logits = BatchedInference.Logits(model, count, batch, (i, host) =>
        {
            var image = new DecodedImage(side, side, 1, pixels.AsSpan(i * per, per).ToArray());
            ImageLoader.Preprocess(image, preprocessing, host);
        });
        TensorChecks.EnsureFinite(logits, "benchmark logits");
        return logits;
    }

    /// <summary>Argmax (first of equals) and the top-1 − top-2 softmax probability margin of one row of logits.</summary>
    public static (int Predicted, double Margin) ArgmaxAndMargin(ReadOnlySpan<float> logits)
    {
        int arg = 0;
        for (int k = 1; k < logits.Length; k++) if (logits[k] > logits[arg]) arg = k;
        double max = logits[arg], sum = 0, second = double.NegativeInfinity;
        for (int k = 0; k < logits.Length; k++)
        {
            sum += Math.Exp(logits[k] - max);
            if (k != arg && logits[k] > second) second = logits[k];
        }
        double p1 = 1 / sum, p2 = logits.Length > 1 ? Math.Exp(second - max) / sum : 0;
        return (arg, p1 - p2);
    }

    /// <summary>Writes 8-bit grayscale pixels (row-major) as a PNG without ancillary chunks; returns the file size.</summary>
    public static long WriteGrayPng(string path, byte[] pixels, int width, int height)
    {
        using var image = Image.LoadPixelData<L8>(pixels, width, height);
        var encoder = new PngEncoder
        {
            ColorType = PngColorType.Grayscale,
            BitDepth = PngBitDepth.Bit8,
            CompressionLevel = PngCompressionLevel.BestCompression,
            ChunkFilter = PngChunkFilter.ExcludeAll,
        };
        using var buffer = new MemoryStream();
        image.SaveAsPng(buffer, encoder);
        System.IO.File.WriteAllBytes(path, buffer.ToArray());
        return buffer.Length;
    }

    /// <summary>A seeded sample of <paramref name="k"/> of the values (partial Fisher–Yates), returned sorted.</summary>
    internal static int[] Sample(IReadOnlyList<int> values, int k, ulong seed)
    {
        var a = values.ToArray();
        var rng = new Rng(seed);
        for (int i = 0; i < k && i < a.Length - 1; i++)
        {
            int j = rng.NextInt(i, a.Length);
            (a[i], a[j]) = (a[j], a[i]);
        }
        return a.Take(k).Order().ToArray();
    }

    /// <summary>A per-purpose seed: FNV-1a of the purpose, mixed with the run's seed and a key (stable across .NET versions).</summary>
    internal static ulong SeedFor(ulong seed, string purpose, long key)
    {
        ulong h = Rng.StableHash(purpose);
        h ^= seed * 0x9E3779B97F4A7C15UL;
        h = (h ^ (h >> 29)) * 0xBF58476D1CE4E5B9UL;
        h ^= (ulong)key * 0x94D049BB133111EBUL;
        return h ^ (h >> 31);
    }
}

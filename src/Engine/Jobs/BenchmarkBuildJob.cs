using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Training;

namespace WhereToEdit.Engine.Jobs;

/// <summary>What `wte benchmark build` is asked to do.</summary>
public sealed record BenchmarkBuildJobOptions
{
    /// <summary>The base model (1 channel).</summary>
    public required string ModelPath { get; init; }
    /// <summary>Folder with the Fashion-MNIST IDX files (the t10k test split is used).</summary>
    public string DataPath { get; init; } = LabeledImagesIdx.DebianFashionMnist;
    /// <summary>Output folder (new or empty).</summary>
    public required string OutPath { get; init; }
    /// <summary>What the builder keeps: seed, margin, group sizes and counts, locality cap, name, batch, styles.</summary>
    public BenchmarkBuildOptions Build { get; init; } = new();
    /// <summary>Broad locality set: this many correctly classified test images, equally from every class (0: none).</summary>
    public int BroadCount { get; init; } = BroadLocality.DefaultCount;
    public BackendChoice Backend { get; init; } = new();
}

/// <summary>What `wte benchmark broad` is asked to do: add a broad locality set to an existing benchmark folder.</summary>
public sealed record BroadLocalityJobOptions
{
    public required string ModelPath { get; init; }
    public string DataPath { get; init; } = LabeledImagesIdx.DebianFashionMnist;
    /// <summary>The benchmark folder (holding manifest.json).</summary>
    public required string BenchmarkPath { get; init; }
    public int Count { get; init; } = BroadLocality.DefaultCount;
    public ulong Seed { get; init; }
    public BackendChoice Backend { get; init; } = new();
}

public sealed record BroadLocalityJobResult(int Images, int PerClass, string ImagesPath, long Bytes);

/// <summary>What a build wrote.</summary>
public sealed record BenchmarkBuildJobResult
{
    public required string ManifestPath { get; init; }
    public required double BaseAccuracy { get; init; }
    /// <summary>Per subset: candidates, failures, eligible groups, kept groups and images.</summary>
    public required IReadOnlyList<BenchmarkSubsetStats> Subsets { get; init; }
    public required string LocalityName { get; init; }
    public required int LocalityImages { get; init; }
    public required double Margin { get; init; }
    /// <summary>Correct images below the margin (before any cap).</summary>
    public required int LocalityCandidates { get; init; }
    /// <summary>Images written (failures and locality).</summary>
    public required int Images { get; init; }
    public required long TotalBytes { get; init; }
    /// <summary>The manifest's notes that start with WARNING.</summary>
    public required IReadOnlyList<string> Warnings { get; init; }
    /// <summary>Images in the broad locality set written beside the manifest (0: none).</summary>
    public int BroadImages { get; init; }
}

/// <summary>Builds the editing benchmark from a base model's failures on the Fashion-MNIST test set (<see cref="BenchmarkBuilder"/>).</summary>
public static class BenchmarkBuildJob
{
    public static BenchmarkBuildJobResult Run(BenchmarkBuildJobOptions o, IJobProgress? progress = null, CancellationToken cancel = default)
    {
        progress ??= NullJobProgress.Instance;
        var options = o.Build.Validate();
        if (o.BroadCount < 0) throw new ArgumentException($"--broad {o.BroadCount}: must be 0 (none) or positive");
        new CommandPaths().Input(o.ModelPath, "--model").Input(o.DataPath, "--data").OutputFolder(o.OutPath, "--out").Check();
        var loaded = ModelFolder.Load(o.ModelPath);
        var test = LabeledImagesIdx.FashionMnist(o.DataPath, train: false);
        using var backend = o.Backend.Create();
        using var vit = VitCheckpoint.Load(backend, loaded);
        var result = BenchmarkBuilder.Build(vit, loaded.Preprocessing, loaded.Labels, test, o.OutPath, options, m =>
        {
            cancel.ThrowIfCancellationRequested();
            progress.Note($"benchmark: {m}");
        });
        int broad = o.BroadCount > 0 ? BroadLocality.Build(vit, loaded.Preprocessing, test, o.OutPath, o.BroadCount, options.Seed, options.Batch).Length : 0;
        var locality = result.Manifest.Locality;
        return new BenchmarkBuildJobResult
        {
            ManifestPath = result.ManifestPath, BaseAccuracy = result.BaseAccuracy, Subsets = result.Subsets,
            LocalityName = locality.Name, LocalityImages = locality.Images.Count, Margin = locality.Margin, LocalityCandidates = result.LocalityCandidates,
            Images = result.Predictions.Count, TotalBytes = result.TotalBytes,
            Warnings = result.Manifest.Notes.Where(n => n.StartsWith("WARNING", StringComparison.Ordinal)).ToList(),
            BroadImages = broad,
        };
    }

    /// <summary>Adds a broad locality set (correctly classified test images from every class) to a benchmark folder.</summary>
    public static BroadLocalityJobResult AddBroadLocality(BroadLocalityJobOptions o, IJobProgress? progress = null, CancellationToken cancel = default)
    {
        string folder = o.BenchmarkPath;
        if (!File.Exists(Path.Combine(folder, BenchmarkManifest.FileName))) throw new ArgumentException($"--benchmark {folder}: no {BenchmarkManifest.FileName} there");
        if (o.Count <= 0) throw new ArgumentException($"--count {o.Count}: must be positive");
        var loaded = ModelFolder.Load(o.ModelPath);
        var test = LabeledImagesIdx.FashionMnist(o.DataPath, train: false);
        cancel.ThrowIfCancellationRequested();
        using var backend = o.Backend.Create();
        using var vit = VitCheckpoint.Load(backend, loaded);
        var picked = BroadLocality.Build(vit, loaded.Preprocessing, test, folder, o.Count, o.Seed);
        string images = Path.Combine(folder, BroadLocality.ImagesFile);
        long bytes = new FileInfo(images).Length + new FileInfo(Path.Combine(folder, BroadLocality.LabelsFile)).Length;
        return new BroadLocalityJobResult(picked.Length, picked.Length / Math.Max(1, vit.Config.NumClasses), images, bytes);
    }
}

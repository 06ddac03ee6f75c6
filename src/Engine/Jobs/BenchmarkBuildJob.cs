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
    public BackendChoice Backend { get; init; } = new();
}

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
}

/// <summary>Builds the editing benchmark from a base model's failures on the Fashion-MNIST test set (<see cref="BenchmarkBuilder"/>).</summary>
public static class BenchmarkBuildJob
{
    public static BenchmarkBuildJobResult Run(BenchmarkBuildJobOptions o, IJobProgress? progress = null, CancellationToken cancel = default)
    {
        progress ??= NullJobProgress.Instance;
        var options = o.Build.Validate();
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
        var locality = result.Manifest.Locality;
        return new BenchmarkBuildJobResult
        {
            ManifestPath = result.ManifestPath, BaseAccuracy = result.BaseAccuracy, Subsets = result.Subsets,
            LocalityName = locality.Name, LocalityImages = locality.Images.Count, Margin = locality.Margin, LocalityCandidates = result.LocalityCandidates,
            Images = result.Predictions.Count, TotalBytes = result.TotalBytes,
            Warnings = result.Manifest.Notes.Where(n => n.StartsWith("WARNING", StringComparison.Ordinal)).ToList(),
        };
    }
}

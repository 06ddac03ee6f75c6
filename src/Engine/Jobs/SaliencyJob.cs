using System.Globalization;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Engine.Jobs;

/// <summary>What `wte saliency` is asked to check: a model, a benchmark, the mask size, subsets, edited blocks.</summary>
public sealed record SaliencyJobOptions
{
    public required string ModelPath { get; init; }
    public required string BenchmarkPath { get; init; }
    public double Keep { get; init; } = 0.1;
    public IReadOnlyList<string>? Subsets { get; init; }
    public IReadOnlyList<int>? EditBlocks { get; init; }
    public BackendChoice Backend { get; init; } = new();
}

/// <summary>The pre-check's answer: per subset, the IoU of gradient-saliency masks within vs across groups.</summary>
public sealed record SaliencyJobResult(double Keep, int TotalGates, double RandomIoU, IReadOnlyList<SaliencyOverlap> Subsets);

/// <summary>Is there group-specific "where" in this model? (<see cref="GradientSaliency"/> on every failure of the benchmark.)</summary>
public static class SaliencyJob
{
    public static SaliencyJobResult Run(SaliencyJobOptions o, IJobProgress? progress = null, CancellationToken cancel = default)
    {
        if (!(o.Keep > 0 && o.Keep <= 1)) throw new ArgumentException($"--keep {o.Keep.ToString(CultureInfo.InvariantCulture)}: must be in (0, 1]");
        var manifest = BenchmarkManifest.Read(o.BenchmarkPath);
        if (o.Subsets is { } wanted) foreach (string name in wanted) _ = manifest.Subset(name);
        var loaded = ModelFolder.Load(o.ModelPath);
        using var backend = o.Backend.Create();
        using var vit = VitCheckpoint.Load(backend, loaded);
        var target = o.EditBlocks is { } blocks ? new EditTarget(vit.Config, blocks.ToArray()) : EditTarget.Default(vit.Config);
        var loader = new ImageLoader();
        using var saliency = new GradientSaliency(vit, target);
        var results = new List<SaliencyOverlap>();
        foreach (var subset in manifest.Subsets.Where(s => o.Subsets is null || o.Subsets.Contains(s.Name)))
        {
            cancel.ThrowIfCancellationRequested();
            var images = subset.Groups.SelectMany(g => g.Images.Select(i => (g.Name, g.Label, loader.Load(manifest.ImagePath(i), loaded.Preprocessing)))).ToList();
            results.Add(saliency.Overlap(subset.Name, images, o.Keep));
            progress?.Note($"saliency: {subset.Name} done");
        }
        return new SaliencyJobResult(o.Keep, target.TotalGates, o.Keep / (2 - o.Keep), results);
    }
}

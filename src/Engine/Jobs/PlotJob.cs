using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Reports;

namespace WhereToEdit.Engine.Jobs;

/// <summary>What `wte plot edit` is asked to draw: a model, a patch, the image (default: the patch's own if it is here).</summary>
public sealed record EditPanelJobOptions
{
    public required string ModelPath { get; init; }
    public required string PatchPath { get; init; }
    public string? ImagePath { get; init; }
    public int TopK { get; init; } = 5;
    /// <summary>Output path without extension (.png and .svg are written).</summary>
    public required string OutStem { get; init; }
}

/// <summary>The pictures that need a model: the before/after prediction panel of an edit.</summary>
public static class PlotJob
{
    public static IReadOnlyList<string> EditPanel(EditPanelJobOptions o, IJobProgress? progress = null, CancellationToken cancel = default)
    {
        if (o.TopK <= 0) throw new ArgumentException($"--top-k {o.TopK}: must be positive");
        var patch = EditPatch.Load(o.PatchPath);
        string imagePath = o.ImagePath ?? patch.Info.Images.FirstOrDefault(File.Exists)
            ?? throw new ArgumentException(patch.Info.Images.Length == 0 ? "--image: the patch names no edit image; give one"
                : $"--image: the patch's edit image '{patch.Info.Images[0]}' is not here; give its path");
        new CommandPaths().Input(o.ModelPath, "MODEL").Input(o.PatchPath, "PATCH").Input(imagePath, "--image")
            .Output(o.OutStem + ".png", "--out").Output(o.OutStem + ".svg", "--out").Check();
        var loaded = ModelFolder.Load(o.ModelPath);
        var loader = new ImageLoader();
        cancel.ThrowIfCancellationRequested();
        using var backend = new CpuBackend();
        using var vit = VitCheckpoint.Load(backend, loaded);
        var before = Predictor.Run(vit, loader, loaded.Preprocessing, [imagePath], 1, o.TopK, loaded.Labels)[0].Top;
        patch.Apply(vit);
        var after = Predictor.Run(vit, loader, loaded.Preprocessing, [imagePath], 1, o.TopK, loaded.Labels)[0].Top;
        int target = patch.Info.Labels.FirstOrDefault();
        string label = loaded.Labels is { } names && target < names.Count ? names[target] : target.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var decoded = loader.Decode(imagePath, loaded.Preprocessing.Channels);
        return Figures.BeforeAfter(decoded, before, after, $"{Path.GetFileName(imagePath)}: edit to '{label}' ({patch.Info.Method})", o.OutStem);
    }
}

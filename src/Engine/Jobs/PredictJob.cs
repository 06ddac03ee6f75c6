using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Engine.Jobs;

/// <summary>Preprocessing given on top of what the model file says (null: the model's).</summary>
public sealed record PreprocessingOverrides
{
    /// <summary>Resize size (shorter side, or both sides with direct resizing).</summary>
    public int? Resize { get; init; }
    /// <summary>Center-crop size (must equal the model's input size).</summary>
    public int? Crop { get; init; }
    /// <summary>shorter or direct.</summary>
    public string? ResizeMode { get; init; }
    /// <summary>bilinear or bicubic.</summary>
    public string? Interpolation { get; init; }
    /// <summary>Per-channel mean; one value is used for every channel.</summary>
    public float[]? Mean { get; init; }
    public float[]? Std { get; init; }

    /// <summary>The model's preprocessing with these overrides, checked.</summary>
    public Preprocessing Apply(Preprocessing p, string modelPath)
    {
        if (ResizeMode is { } mode)
            p = p with
            {
                ResizeMode = mode.Trim().ToLowerInvariant() switch
                {
                    "shorter" or "shorter_side" => IO.ResizeMode.ShorterSide,
                    "direct" => IO.ResizeMode.Direct,
                    _ => throw new ArgumentException($"--resize-mode '{mode}': expected shorter or direct"),
                },
            };
        if (Resize is int r) p = p with { ResizeSize = r };
        if (Crop is int c) p = p with { CropSize = c };
        if (Interpolation is { } i)
            p = p with
            {
                Interpolation = i.Trim().ToLowerInvariant() switch
                {
                    "bilinear" => IO.Interpolation.Bilinear,
                    "bicubic" => IO.Interpolation.Bicubic,
                    _ => throw new ArgumentException($"--interpolation '{i}': expected bilinear or bicubic"),
                },
            };
        if (Mean is { } m) p = p with { Mean = PerChannel(m, "--mean", p.Channels) };
        if (Std is { } s) p = p with { Std = PerChannel(s, "--std", p.Channels) };
        p.EnsureValid(modelPath);
        return p;
    }

    private static float[] PerChannel(float[] values, string option, int channels)
    {
        if (values.Length == 1 && channels > 1) values = Enumerable.Repeat(values[0], channels).ToArray();
        if (values.Length != channels)
            throw new ArgumentException($"{option} '{string.Join(",", values.Select(v => v.ToString(System.Globalization.CultureInfo.InvariantCulture)))}': {values.Length} values for a {channels}-channel model");
        return values;
    }
}

/// <summary>What `wte predict` is asked to classify.</summary>
public sealed record PredictJobOptions
{
    /// <summary>A .safetensors or .npz file, or a hub-style folder.</summary>
    public required string ModelPath { get; init; }
    /// <summary>Image files or folders of images.</summary>
    public required IReadOnlyList<string> Images { get; init; }
    /// <summary>Classes kept per image.</summary>
    public int TopK { get; init; } = 5;
    /// <summary>Images per forward pass.</summary>
    public int Batch { get; init; } = 8;
    public PreprocessingOverrides Preprocessing { get; init; } = new();
    public BackendChoice Backend { get; init; } = new();
}

/// <summary>One prediction per image, in input order (folders expanded).</summary>
public sealed record PredictJobResult(IReadOnlyList<Prediction> Predictions);

/// <summary>Classifies images with the model's own preprocessing (or overrides); every image is checked before any runs.</summary>
public static class PredictJob
{
    public static PredictJobResult Run(PredictJobOptions o, IJobProgress? progress = null, CancellationToken cancel = default)
    {
        if (o.TopK <= 0) throw new ArgumentException($"--top-k {o.TopK}: must be positive");
        if (o.Batch <= 0) throw new ArgumentException($"--batch {o.Batch}: must be positive");
        var files = JobInputs.ExpandImages(o.Images);
        var loaded = ModelFolder.Load(o.ModelPath);
        var preprocessing = o.Preprocessing.Apply(loaded.Preprocessing, o.ModelPath);
        var loader = new ImageLoader();
        foreach (string f in files) loader.Identify(f);   // refuse unreadable or over-large images before any output
        cancel.ThrowIfCancellationRequested();
        using var backend = o.Backend.Create();
        using var vit = VitCheckpoint.Load(backend, loaded);
        return new PredictJobResult(Predictor.Run(vit, loader, preprocessing, files, o.Batch, o.TopK, loaded.Labels));
    }
}

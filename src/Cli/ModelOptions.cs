using System.CommandLine;
using System.Globalization;
using WhereToEdit.Engine.IO;

namespace WhereToEdit.Cli;

/// <summary>Options shared by commands that load a model: preprocessing overrides on top of what the model file says.</summary>
internal sealed class PreprocessingOptions
{
    public readonly Option<int?> Resize = new("--resize") { Description = "resize size (shorter side, or both sides with --resize-mode direct)" };
    public readonly Option<int?> Crop = new("--crop") { Description = "center-crop size (must equal the model's input size)" };
    public readonly Option<string?> ResizeMode = new("--resize-mode") { Description = "shorter (resize the shorter side, then crop) or direct (resize to crop×crop)" };
    public readonly Option<string?> Interpolation = new("--interpolation") { Description = "bilinear or bicubic" };
    public readonly Option<string?> Mean = new("--mean") { Description = "per-channel mean, e.g. 0.5,0.5,0.5" };
    public readonly Option<string?> Std = new("--std") { Description = "per-channel std, e.g. 0.5,0.5,0.5" };

    public IEnumerable<Option> All => [Resize, Crop, ResizeMode, Interpolation, Mean, Std];

    public Preprocessing Apply(ParseResult parse, Preprocessing p, string modelPath)
    {
        if (parse.GetValue(ResizeMode) is { } mode)
            p = p with
            {
                ResizeMode = mode.Trim().ToLowerInvariant() switch
                {
                    "shorter" or "shorter_side" => Engine.IO.ResizeMode.ShorterSide,
                    "direct" => Engine.IO.ResizeMode.Direct,
                    _ => throw new ArgumentException($"--resize-mode '{mode}': expected shorter or direct"),
                },
            };
        if (parse.GetValue(Resize) is int r) p = p with { ResizeSize = r };
        if (parse.GetValue(Crop) is int c) p = p with { CropSize = c };
        if (parse.GetValue(Interpolation) is { } i)
            p = p with
            {
                Interpolation = i.Trim().ToLowerInvariant() switch
                {
                    "bilinear" => Engine.IO.Interpolation.Bilinear,
                    "bicubic" => Engine.IO.Interpolation.Bicubic,
                    _ => throw new ArgumentException($"--interpolation '{i}': expected bilinear or bicubic"),
                },
            };
        if (parse.GetValue(Mean) is { } m) p = p with { Mean = Floats(m, "--mean", p.Channels) };
        if (parse.GetValue(Std) is { } s) p = p with { Std = Floats(s, "--std", p.Channels) };
        p.EnsureValid(modelPath);
        return p;
    }

    private static float[] Floats(string text, string option, int channels)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var values = new float[parts.Length];
        for (int k = 0; k < parts.Length; k++)
            if (!float.TryParse(parts[k], NumberStyles.Float, CultureInfo.InvariantCulture, out values[k]))
                throw new ArgumentException($"{option} '{text}': '{parts[k]}' is not a number");
        if (values.Length == 1 && channels > 1) values = Enumerable.Repeat(values[0], channels).ToArray();
        if (values.Length != channels) throw new ArgumentException($"{option} '{text}': {values.Length} values for a {channels}-channel model");
        return values;
    }
}

using System.CommandLine;
using System.Globalization;
using WhereToEdit.Engine.Jobs;

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

    public PreprocessingOverrides Parse(ParseResult parse) => new()
    {
        Resize = parse.GetValue(Resize), Crop = parse.GetValue(Crop), ResizeMode = parse.GetValue(ResizeMode), Interpolation = parse.GetValue(Interpolation),
        Mean = parse.GetValue(Mean) is { } m ? Floats(m, "--mean") : null,
        Std = parse.GetValue(Std) is { } s ? Floats(s, "--std") : null,
    };

    private static float[] Floats(string text, string option)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var values = new float[parts.Length];
        for (int k = 0; k < parts.Length; k++)
            if (!float.TryParse(parts[k], NumberStyles.Float, CultureInfo.InvariantCulture, out values[k]))
                throw new ArgumentException($"{option} '{text}': '{parts[k]}' is not a number");
        return values;
    }
}

using System.Globalization;
using System.Text.RegularExpressions;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Engine.IO;

/// <summary>Where <see cref="VitConfig.NumHeads"/> came from.</summary>
public enum HeadsOrigin
{
    /// <summary>A config file (HF num_attention_heads, timm architecture name / model_args, wte.config) or the caller.</summary>
    Config,
    /// <summary>Read off the AugReg query kernel shape [D, H, hd] (Flax keeps heads as a separate axis).</summary>
    CheckpointShapes,
    /// <summary>The timm preset with the same embedding width (tiny 192→3, small 384→6, base 768→12, …).</summary>
    TimmPreset,
    /// <summary>No config and no preset: heads = dim / 64. A guess; pass the real value to be sure.</summary>
    DimOver64Guess,
}

/// <summary>Architecture numbers read off a checkpoint's tensor shapes (everything except heads, unless AugReg).</summary>
internal sealed record CheckpointShapes(
    int EmbedDim, int Depth, int MlpHidden, int PatchSize, int InChans, int ImageSize, int NumClasses, bool QkvBias, int? HeadsFromShapes);

/// <summary>
/// Where a loaded architecture's numbers came from (informational, not part of the model): the origin of the head
/// count, which cannot be read off the weight shapes of timm or Hugging Face checkpoints, in words, and the timm
/// preset it matched, if any.
/// </summary>
public sealed record ArchitectureProvenance(HeadsOrigin HeadsOrigin, string HeadsSource, string? Preset = null)
{
    /// <summary>True when heads came from dim/64 only.</summary>
    public bool HeadsAreGuessed => HeadsOrigin == HeadsOrigin.DimOver64Guess;
}

/// <summary>Infers a <see cref="VitConfig"/> from a checkpoint's tensor shapes and whatever config came with it.</summary>
internal static class ArchitectureInference
{
    /// <summary>
    /// Combines shapes with heads from (in order) <paramref name="configHeads"/>, the checkpoint shapes (AugReg),
    /// the timm preset of the same width, or dim/64 (flagged as a guess). Throws when no rule gives a divisor of dim.
    /// </summary>
    public static (VitConfig Architecture, ArchitectureProvenance Provenance) Infer(CheckpointShapes s, double lnEps, string path, int? configHeads = null, string? configSource = null)
    {
        int heads;
        HeadsOrigin origin;
        string? presetName = null;
        string source;
        var preset = TimmVitPresets.ByDim(s.EmbedDim);
        if (configHeads is int ch)
        {
            heads = ch;
            origin = HeadsOrigin.Config;
            source = configSource ?? "config";
            if (s.HeadsFromShapes is int hs && hs != ch)
                throw new CheckpointFormatException(path, $"{source} says {ch} heads but the attention kernels have {hs}");
        }
        else if (s.HeadsFromShapes is int hs)
        {
            heads = hs;
            origin = HeadsOrigin.CheckpointShapes;
            source = "checkpoint shapes (query kernel [D, H, hd])";
        }
        else if (preset is not null)
        {
            heads = preset.Heads;
            origin = HeadsOrigin.TimmPreset;
            presetName = preset.Matches(s) ? $"vit_{preset.Size}_patch{s.PatchSize}_{s.ImageSize}" : $"vit_{preset.Size} width";
            source = $"timm preset {presetName} (dim {s.EmbedDim} → {heads} heads)";
        }
        else if (s.EmbedDim % 64 == 0)
        {
            heads = s.EmbedDim / 64;
            origin = HeadsOrigin.DimOver64Guess;
            source = $"GUESS: dim {s.EmbedDim} / 64 = {heads} heads (no config, no timm preset of this width)";
        }
        else
        {
            throw new CheckpointFormatException(path,
                $"cannot infer the number of attention heads for dim {s.EmbedDim} (no config, no timm preset, not a multiple of 64); give it explicitly");
        }
        var arch = new VitConfig
        {
            ImageSize = s.ImageSize, PatchSize = s.PatchSize, InChans = s.InChans, EmbedDim = s.EmbedDim, Depth = s.Depth,
            NumHeads = heads, MlpHidden = s.MlpHidden, NumClasses = s.NumClasses, LayerNormEps = (float)lnEps, QkvBias = s.QkvBias,
        };
        arch.EnsureValid(path);
        return (arch, new ArchitectureProvenance(origin, source, presetName));
    }
}

/// <summary>timm's standard ViT widths (the heads each uses).</summary>
internal static partial class TimmVitPresets
{
    public sealed record Preset(string Size, int Dim, int Depth, int Heads, int MlpHidden)
    {
        internal bool Matches(CheckpointShapes s) => s.Depth == Depth && s.MlpHidden == MlpHidden;
    }

    public static IReadOnlyList<Preset> All { get; } =
    [
        new("tiny", 192, 12, 3, 768),
        new("small", 384, 12, 6, 1536),
        new("medium", 512, 12, 8, 2048),
        new("base", 768, 12, 12, 3072),
        new("large", 1024, 24, 16, 4096),
        new("huge", 1280, 32, 16, 5120),
    ];

    public static Preset? ByDim(int dim) => All.FirstOrDefault(p => p.Dim == dim);

    public static Preset? BySize(string size) => All.FirstOrDefault(p => p.Size == size);

    /// <summary>
    /// Parses a timm architecture name such as <c>vit_base_patch16_224</c> or <c>vit_small_patch16_384.augreg_in21k_ft_in1k</c>;
    /// null when it is not a plain ViT name.
    /// </summary>
    public static (Preset Preset, int Patch, int ImageSize)? ParseName(string architecture)
    {
        string baseName = architecture.Split('.')[0];
        var m = NameRegex().Match(baseName);
        if (!m.Success) return null;
        var preset = BySize(m.Groups[1].Value);
        if (preset is null) return null;
        return (preset, int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture), int.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture));
    }

    [GeneratedRegex(@"^vit_([a-z]+)_patch(\d+)_(?:[a-z0-9]+_)*?(\d+)$")]
    private static partial Regex NameRegex();
}

using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace WhereToEdit.Engine.IO;

/// <summary>
/// The architecture of a plain timm-style ViT classifier (class token, learned absolute position embedding,
/// pre-norm blocks, final LayerNorm, linear head on the class token, exact-erf GELU, attention scale
/// 1/sqrt(head_dim)). Field by field this is the engine's ViT config:
/// <list type="bullet">
/// <item><see cref="ImageSize"/> (img_size): square input side in pixels; <see cref="PatchSize"/>: square patch side;
/// tokens = (ImageSize/PatchSize)² + 1.</item>
/// <item><see cref="InChans"/>: image channels (3, or 1 for grayscale models).</item>
/// <item><see cref="EmbedDim"/> (hidden_size), <see cref="Depth"/> (blocks), <see cref="NumHeads"/> (EmbedDim % NumHeads == 0),
/// <see cref="MlpHidden"/> (fc1 output width, = mlp_ratio·EmbedDim).</item>
/// <item><see cref="NumClasses"/>: head outputs; 0 means the checkpoint has no head.</item>
/// <item><see cref="LnEps"/>: LayerNorm epsilon (1e-6 timm/JAX; Hugging Face configs default to 1e-12).</item>
/// <item><see cref="QkvBias"/>: whether blocks.N.attn.qkv.bias exists.</item>
/// <item><see cref="HeadsSource"/>: human-readable origin of NumHeads (heads cannot be read off the weight shapes of timm or
/// Hugging Face checkpoints); informational, not part of the model.</item>
/// </list>
/// </summary>
public sealed record CheckpointArchitecture(
    int ImageSize,
    int PatchSize,
    int InChans,
    int EmbedDim,
    int Depth,
    int NumHeads,
    int MlpHidden,
    int NumClasses,
    double LnEps,
    bool QkvBias,
    string HeadsSource)
{
    public int HeadDim => EmbedDim / NumHeads;

    public int GridSize => ImageSize / PatchSize;

    public int NumPatches => GridSize * GridSize;

    /// <summary>Patches + the class token.</summary>
    public int NumTokens => NumPatches + 1;

    /// <summary>ViT-B/16 at 224 px, 1000 classes (timm's vit_base_patch16_224).</summary>
    public static CheckpointArchitecture VitBase16 { get; } = new(224, 16, 3, 768, 12, 12, 3072, 1000, 1e-6, true, "preset vit_base_patch16_224");

    /// <summary>Problems with the numbers (empty when consistent).</summary>
    public IReadOnlyList<string> Problems()
    {
        var p = new List<string>();
        if (PatchSize <= 0) p.Add($"patch_size {PatchSize} must be positive");
        if (ImageSize <= 0) p.Add($"image_size {ImageSize} must be positive");
        if (PatchSize > 0 && ImageSize % PatchSize != 0) p.Add($"image_size {ImageSize} is not a multiple of patch_size {PatchSize}");
        if (InChans <= 0) p.Add($"in_chans {InChans} must be positive");
        if (EmbedDim <= 0) p.Add($"embed_dim {EmbedDim} must be positive");
        if (Depth <= 0) p.Add($"depth {Depth} must be positive");
        if (NumHeads <= 0) p.Add($"num_heads {NumHeads} must be positive");
        else if (EmbedDim % NumHeads != 0) p.Add($"embed_dim {EmbedDim} is not divisible by num_heads {NumHeads}");
        if (MlpHidden <= 0) p.Add($"mlp_hidden {MlpHidden} must be positive");
        if (NumClasses < 0) p.Add($"num_classes {NumClasses} must be ≥ 0");
        if (!(LnEps > 0) || !double.IsFinite(LnEps)) p.Add($"ln_eps {LnEps} must be a positive number");
        return p;
    }

    /// <summary>Throws <see cref="CheckpointFormatException"/> naming <paramref name="path"/> when <see cref="Problems"/> is not empty.</summary>
    public void EnsureValid(string path)
    {
        var p = Problems();
        if (p.Count > 0) throw new CheckpointFormatException(path, "invalid ViT architecture: " + string.Join("; ", p));
    }

    /// <summary>Every timm tensor of this architecture with its shape, in timm's state_dict order.</summary>
    public IReadOnlyList<(string Name, int[] Shape)> TimmTensorShapes()
    {
        int d = EmbedDim;
        var list = new List<(string, int[])>
        {
            ("cls_token", [1, 1, d]),
            ("pos_embed", [1, NumTokens, d]),
            ("patch_embed.proj.weight", [d, InChans, PatchSize, PatchSize]),
            ("patch_embed.proj.bias", [d]),
        };
        for (int i = 0; i < Depth; i++)
        {
            string b = $"blocks.{i}.";
            list.Add((b + "norm1.weight", [d]));
            list.Add((b + "norm1.bias", [d]));
            list.Add((b + "attn.qkv.weight", [3 * d, d]));
            if (QkvBias) list.Add((b + "attn.qkv.bias", [3 * d]));
            list.Add((b + "attn.proj.weight", [d, d]));
            list.Add((b + "attn.proj.bias", [d]));
            list.Add((b + "norm2.weight", [d]));
            list.Add((b + "norm2.bias", [d]));
            list.Add((b + "mlp.fc1.weight", [MlpHidden, d]));
            list.Add((b + "mlp.fc1.bias", [MlpHidden]));
            list.Add((b + "mlp.fc2.weight", [d, MlpHidden]));
            list.Add((b + "mlp.fc2.bias", [d]));
        }
        list.Add(("norm.weight", [d]));
        list.Add(("norm.bias", [d]));
        if (NumClasses > 0)
        {
            list.Add(("head.weight", [NumClasses, d]));
            list.Add(("head.bias", [NumClasses]));
        }
        return list;
    }

    public long ParameterCount => TimmTensorShapes().Sum(t => NamedTensor.ElementCountOf(t.Shape));

    /// <summary>Checks that <paramref name="timm"/> holds exactly this architecture's tensors; throws a <see cref="CheckpointMappingException"/> otherwise.</summary>
    public void EnsureMatches(TensorFile timm, string path)
    {
        var expected = TimmTensorShapes();
        var missing = new List<string>();
        var misshaped = new List<string>();
        var expectedNames = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, shape) in expected)
        {
            expectedNames.Add(name);
            if (!timm.TryGet(name, out var t)) missing.Add($"{name} {NamedTensor.FormatShape(shape)}");
            else if (!t.Shape.AsSpan().SequenceEqual(shape))
                misshaped.Add($"{name}: expected {NamedTensor.FormatShape(shape)}, found {NamedTensor.FormatShape(t.Shape)}");
        }
        var unexpected = timm.Tensors.Where(t => !expectedNames.Contains(t.Name)).Select(t => t.ToString()).ToList();
        if (missing.Count + misshaped.Count + unexpected.Count > 0)
            throw new CheckpointMappingException(path, NamingConvention.Timm, missing, unexpected, misshaped,
                $"the tensors do not match the architecture {this.Describe()}");
    }

    /// <summary>"ViT dim 768, depth 12, heads 12, mlp 3072, patch 16, 224 px, 3 ch, 1000 classes".</summary>
    public string Describe() =>
        $"ViT dim {EmbedDim}, depth {Depth}, heads {NumHeads}, mlp {MlpHidden}, patch {PatchSize}, {ImageSize} px, {InChans} ch, " +
        $"{NumClasses} classes, ln_eps {LnEps.ToString("R", CultureInfo.InvariantCulture)}, qkv_bias {QkvBias}";

    // ---- JSON (the "wte.config" metadata value) ----------------------------------------------------

    public string ToJson()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteNumber("image_size", ImageSize);
            w.WriteNumber("patch_size", PatchSize);
            w.WriteNumber("in_chans", InChans);
            w.WriteNumber("embed_dim", EmbedDim);
            w.WriteNumber("depth", Depth);
            w.WriteNumber("num_heads", NumHeads);
            w.WriteNumber("mlp_hidden", MlpHidden);
            w.WriteNumber("num_classes", NumClasses);
            w.WriteNumber("ln_eps", LnEps);
            w.WriteBoolean("qkv_bias", QkvBias);
            w.WriteString("heads_source", HeadsSource);
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>Parses <see cref="ToJson"/>'s output; every key except heads_source is required.</summary>
    public static CheckpointArchitecture FromJson(string json, string path)
    {
        const string what = "architecture config (wte.config)";
        using var doc = StrictJson.Parse(json, path, what);
        var r = doc.RootElement;
        if (r.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, $"{what} must be a JSON object");
        int I(string k) => StrictJson.TryGet(r, k, out var e) ? StrictJson.GetInt(e, k, path, what)
            : throw new CheckpointFormatException(path, $"{what} has no \"{k}\"");
        double eps = StrictJson.TryGet(r, "ln_eps", out var epsEl) ? StrictJson.GetDouble(epsEl, "ln_eps", path, what)
            : throw new CheckpointFormatException(path, $"{what} has no \"ln_eps\"");
        bool qkvBias = StrictJson.TryGet(r, "qkv_bias", out var qb) ? StrictJson.GetBool(qb, "qkv_bias", path, what)
            : throw new CheckpointFormatException(path, $"{what} has no \"qkv_bias\"");
        string src = StrictJson.TryGet(r, "heads_source", out var hs) ? StrictJson.GetString(hs, "heads_source", path, what) : "wte.config";
        var a = new CheckpointArchitecture(I("image_size"), I("patch_size"), I("in_chans"), I("embed_dim"), I("depth"),
            I("num_heads"), I("mlp_hidden"), I("num_classes"), eps, qkvBias, src);
        a.EnsureValid(path);
        return a;
    }
}

/// <summary>Where <see cref="CheckpointArchitecture.NumHeads"/> came from.</summary>
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
public sealed record CheckpointShapes(
    int EmbedDim, int Depth, int MlpHidden, int PatchSize, int InChans, int ImageSize, int NumClasses, bool QkvBias, int? HeadsFromShapes);

/// <summary>An architecture inferred from a checkpoint, with how sure we are about the heads.</summary>
public sealed record VitArchitectureGuess(CheckpointArchitecture Architecture, HeadsOrigin HeadsOrigin, string? Preset)
{
    /// <summary>True when heads came from dim/64 only.</summary>
    public bool HeadsAreGuessed => HeadsOrigin == HeadsOrigin.DimOver64Guess;

    /// <summary>
    /// Combines shapes with heads from (in order) <paramref name="configHeads"/>, the checkpoint shapes (AugReg),
    /// the timm preset of the same width, or dim/64 (flagged as a guess). Throws when no rule gives a divisor of dim.
    /// </summary>
    public static VitArchitectureGuess Infer(CheckpointShapes s, double lnEps, string path, int? configHeads = null, string? configSource = null)
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
        var arch = new CheckpointArchitecture(s.ImageSize, s.PatchSize, s.InChans, s.EmbedDim, s.Depth, heads, s.MlpHidden,
            s.NumClasses, lnEps, s.QkvBias, source);
        arch.EnsureValid(path);
        return new VitArchitectureGuess(arch, origin, presetName);
    }
}

/// <summary>timm's standard ViT widths (the heads each uses).</summary>
public static partial class TimmVitPresets
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

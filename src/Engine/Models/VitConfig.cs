using System.Text.Json;
using System.Text.Json.Serialization;

namespace WhereToEdit.Engine.Models;

/// <summary>
/// A Vision Transformer's architecture, in timm's terms: pre-norm blocks, [CLS] pooling after the final
/// LayerNorm, exact-erf GELU MLPs, learned position embeddings, a linear head on the class token, attention
/// scale 1/sqrt(head_dim). The one architecture type: the model is built from it and checkpoints are read and
/// written with it (<c>VitConfig.Checkpoint.cs</c>); where a loaded checkpoint's numbers came from is an
/// <see cref="IO.ArchitectureProvenance"/> beside it. Field by field:
/// <list type="bullet">
/// <item><see cref="ImageSize"/> (img_size): square input side in pixels; <see cref="PatchSize"/>: square patch side;
/// tokens = (ImageSize/PatchSize)² + 1.</item>
/// <item><see cref="InChans"/>: image channels (3, or 1 for grayscale models).</item>
/// <item><see cref="EmbedDim"/> (hidden_size), <see cref="Depth"/> (blocks), <see cref="NumHeads"/> (EmbedDim % NumHeads == 0),
/// <see cref="MlpHidden"/> (fc1 output width, = mlp_ratio·EmbedDim).</item>
/// <item><see cref="NumClasses"/>: head outputs; a checkpoint may have none (0), a model needs at least one.</item>
/// <item><see cref="LayerNormEps"/>: LayerNorm epsilon (1e-6 timm/JAX; Hugging Face configs default to 1e-12).</item>
/// <item><see cref="QkvBias"/>: whether blocks.N.attn.qkv.bias exists.</item>
/// </list>
/// </summary>
public sealed partial record VitConfig
{
    [JsonPropertyName("image_size")] public int ImageSize { get; init; }
    [JsonPropertyName("patch_size")] public int PatchSize { get; init; }
    [JsonPropertyName("in_chans")] public int InChans { get; init; } = 3;
    [JsonPropertyName("embed_dim")] public int EmbedDim { get; init; }
    [JsonPropertyName("depth")] public int Depth { get; init; }
    [JsonPropertyName("num_heads")] public int NumHeads { get; init; }
    [JsonPropertyName("mlp_hidden")] public int MlpHidden { get; init; }
    [JsonPropertyName("num_classes")] public int NumClasses { get; init; }
    [JsonPropertyName("ln_eps")] public float LayerNormEps { get; init; } = 1e-6f;
    [JsonPropertyName("qkv_bias")] public bool QkvBias { get; init; } = true;

    [JsonIgnore] public int HeadDim => EmbedDim / NumHeads;
    [JsonIgnore] public int GridSize => ImageSize / PatchSize;
    [JsonIgnore] public int Patches => GridSize * GridSize;
    /// <summary>Patches plus the [CLS] token.</summary>
    [JsonIgnore] public int Tokens => Patches + 1;
    [JsonIgnore] public int PatchInputs => InChans * PatchSize * PatchSize;

    /// <summary>
    /// Problems with the numbers (empty when consistent). A checkpoint without a head (<see cref="NumClasses"/> 0)
    /// is consistent; <see cref="Validate"/> also asks for a head.
    /// </summary>
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
        if (!(LayerNormEps > 0) || !float.IsFinite(LayerNormEps)) p.Add($"ln_eps {LayerNormEps} must be a positive number");
        return p;
    }

    /// <summary>Throws a clear error for an architecture a model cannot be built from (including one without a head).</summary>
    public VitConfig Validate()
    {
        var p = new List<string>(Problems());
        if (NumClasses == 0) p.Add("num_classes must be positive (the model needs a head), got 0");
        if (p.Count > 0) throw new ArgumentException("ViT config: " + string.Join("; ", p));
        return this;
    }

    public long ParameterCount()
    {
        long d = EmbedDim, h = MlpHidden;
        long perBlock = 2 * d + 3 * d * d + (QkvBias ? 3 * d : 0) + d * d + d + 2 * d + h * d + h + d * h + d;
        return d + (long)Tokens * d + d * PatchInputs + d + Depth * perBlock + 2 * d + NumClasses * d + NumClasses;
    }

    /// <summary>
    /// Multiply-adds of one image's forward pass (all matmuls: patch embed, qkv, attention, proj, MLP, head); with
    /// <paramref name="lastBlockClsOnly"/>, those executed when the last block runs past its attention for [CLS] only.
    /// </summary>
    public double ForwardMacs(bool lastBlockClsOnly = false)
    {
        double t = Tokens, d = EmbedDim, h = MlpHidden;
        double block = t * d * 3 * d + 2 * t * t * d + t * d * d + 2 * t * d * h;
        // The last block for [CLS] only (VitModel.LastBlockClsOnly): k, v of every token, the rest for one row.
        double last = lastBlockClsOnly ? t * d * 2 * d + d * d + 2 * t * d + d * d + 2 * d * h : block;
        return Patches * (double)PatchInputs * d + (Depth - 1) * block + last + d * NumClasses;
    }

    public string ToJson() => JsonSerializer.Serialize(this);

    /// <summary>Lenient parse (missing keys take their defaults), for trusted JSON such as test fixtures; files use <see cref="FromJson(string, string)"/>.</summary>
    public static VitConfig FromJson(string json)
        => (JsonSerializer.Deserialize<VitConfig>(json) ?? throw new ArgumentException("ViT config JSON is null")).Validate();

    public static readonly IReadOnlyDictionary<string, VitConfig> Presets = new Dictionary<string, VitConfig>
    {
        ["vit_tiny_patch16_224"] = Timm(192, 3),
        ["vit_small_patch16_224"] = Timm(384, 6),
        ["vit_base_patch16_224"] = Timm(768, 12),
        ["vit_large_patch16_224"] = Timm(1024, 16, depth: 24),
        // The embedded default: a 12-block ViT for 28×28 grayscale Fashion-MNIST (blocks 7–9 keep their meaning).
        ["vit_fashion_mnist"] = new() { ImageSize = 28, PatchSize = 4, InChans = 1, EmbedDim = 64, Depth = 12, NumHeads = 4, MlpHidden = 256, NumClasses = 10 },
        // Small configs for tests.
        ["test_tiny"] = new() { ImageSize = 32, PatchSize = 8, InChans = 3, EmbedDim = 32, Depth = 4, NumHeads = 4, MlpHidden = 64, NumClasses = 10 },
        ["test_gray"] = new() { ImageSize = 28, PatchSize = 7, InChans = 1, EmbedDim = 24, Depth = 3, NumHeads = 3, MlpHidden = 40, NumClasses = 7, QkvBias = false },
    };

    /// <summary>ViT-B/16 at 224 px, 1000 classes (timm's vit_base_patch16_224).</summary>
    public static VitConfig VitBase16 => Presets["vit_base_patch16_224"];

    private static VitConfig Timm(int dim, int heads, int depth = 12) => new()
    {
        ImageSize = 224, PatchSize = 16, InChans = 3, EmbedDim = dim, Depth = depth, NumHeads = heads,
        MlpHidden = 4 * dim, NumClasses = 1000, LayerNormEps = 1e-6f, QkvBias = true,
    };

    public static VitConfig Preset(string name)
        => Presets.TryGetValue(name, out var config)
            ? config
            : throw new ArgumentException($"unknown model preset '{name}'; known: {string.Join(", ", Presets.Keys)}");
}

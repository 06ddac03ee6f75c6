using System.Text.Json;
using System.Text.Json.Serialization;

namespace WhereToEdit.Engine.Models;

/// <summary>
/// A Vision Transformer's architecture, in timm's terms: pre-norm blocks, [CLS] pooling after the final
/// LayerNorm, exact-erf GELU MLPs, learned position embeddings, a linear head.
/// </summary>
public sealed record VitConfig
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

    /// <summary>Throws a clear error for an impossible architecture.</summary>
    public VitConfig Validate()
    {
        void Positive(int v, string name)
        {
            if (v <= 0) throw new ArgumentException($"ViT config: {name} must be positive, got {v}");
        }
        Positive(ImageSize, "image_size"); Positive(PatchSize, "patch_size"); Positive(InChans, "in_chans");
        Positive(EmbedDim, "embed_dim"); Positive(Depth, "depth"); Positive(NumHeads, "num_heads");
        Positive(MlpHidden, "mlp_hidden"); Positive(NumClasses, "num_classes");
        if (ImageSize % PatchSize != 0) throw new ArgumentException($"ViT config: image_size {ImageSize} is not a multiple of patch_size {PatchSize}");
        if (EmbedDim % NumHeads != 0) throw new ArgumentException($"ViT config: embed_dim {EmbedDim} is not divisible by num_heads {NumHeads}");
        if (!(LayerNormEps > 0) || !float.IsFinite(LayerNormEps)) throw new ArgumentException($"ViT config: ln_eps must be positive, got {LayerNormEps}");
        return this;
    }

    public long ParameterCount()
    {
        long d = EmbedDim, h = MlpHidden;
        long perBlock = 2 * d + 3 * d * d + (QkvBias ? 3 * d : 0) + d * d + d + 2 * d + h * d + h + d * h + d;
        return d + (long)Tokens * d + d * PatchInputs + d + Depth * perBlock + 2 * d + NumClasses * d + NumClasses;
    }

    /// <summary>Multiply-adds of one image's forward pass (all matmuls: patch embed, qkv, attention, proj, MLP, head).</summary>
    public double ForwardMacs()
    {
        double t = Tokens, d = EmbedDim, h = MlpHidden;
        double block = t * d * 3 * d + 2 * t * t * d + t * d * d + 2 * t * d * h;
        return Patches * (double)PatchInputs * d + Depth * block + d * NumClasses;
    }

    public string ToJson() => JsonSerializer.Serialize(this);

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

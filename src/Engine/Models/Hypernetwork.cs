using System.Text.Json;
using System.Text.Json.Serialization;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Models;

/// <summary>Shape of the mask hypernetwork g_φ (method.md §3).</summary>
public sealed record HypernetConfig
{
    /// <summary>Token width = the base ViT's width (the [CLS] feature is a token).</summary>
    [JsonPropertyName("embed_dim")] public int EmbedDim { get; init; }
    [JsonPropertyName("depth")] public int Depth { get; init; } = 3;
    [JsonPropertyName("num_heads")] public int NumHeads { get; init; }
    [JsonPropertyName("mlp_hidden")] public int MlpHidden { get; init; }
    /// <summary>Mask vectors R (one learned query token and one head each): 2 per edited block.</summary>
    [JsonPropertyName("units")] public int Units { get; init; }
    /// <summary>Gates per mask vector = the base ViT's MLP hidden width.</summary>
    [JsonPropertyName("unit_size")] public int UnitSize { get; init; }
    [JsonPropertyName("amplify")] public float Amplify { get; init; } = 3f;
    [JsonPropertyName("clamp")] public float Clamp { get; init; } = 1e-5f;
    [JsonPropertyName("ln_eps")] public float LayerNormEps { get; init; } = 1e-6f;

    [JsonIgnore] public int Tokens => Units + 1;

    /// <summary>
    /// Sized from the base model as the paper does for ViT-B (width 768, 6 heads of 128, MLP 768→768→768):
    /// heads of width 128 where the width allows, else 64, else the largest of 4, 3, 2, 1 that divides it.
    /// </summary>
    public static HypernetConfig For(VitConfig baseModel, int units, int depth = 3, int? heads = null)
    {
        int d = baseModel.EmbedDim;
        int h = heads ?? DefaultHeads(d);
        return new HypernetConfig { EmbedDim = d, Depth = depth, NumHeads = h, MlpHidden = d, Units = units, UnitSize = baseModel.MlpHidden }.Validate();
    }

    /// <summary>Heads of width 128 where <paramref name="width"/> allows, else 64, else the largest of 4, 3, 2, 1 that divides it.</summary>
    public static int DefaultHeads(int width) =>
        width % 128 == 0 ? width / 128 : width % 64 == 0 ? width / 64 : new[] { 4, 3, 2, 1 }.First(k => width % k == 0);

    public HypernetConfig Validate()
    {
        if (EmbedDim <= 0 || Depth <= 0 || NumHeads <= 0 || MlpHidden <= 0 || Units <= 0 || UnitSize <= 0)
            throw new ArgumentException($"hypernetwork config: all sizes must be positive ({ToJson()})");
        if (EmbedDim % NumHeads != 0) throw new ArgumentException($"hypernetwork config: embed_dim {EmbedDim} is not divisible by num_heads {NumHeads}");
        if (!(Clamp >= 0 && Clamp < 0.5f)) throw new ArgumentException($"hypernetwork config: clamp {Clamp} must be in [0, 0.5)");
        if (Depth > MaxDepth) throw new ArgumentException($"hypernetwork config: depth {Depth} is above {MaxDepth}");
        if (!float.IsFinite(Amplify) || !float.IsFinite(LayerNormEps) || !(LayerNormEps > 0)) throw new ArgumentException($"hypernetwork config: amplify and ln_eps must be finite (ln_eps positive)");
        return this;
    }

    /// <summary>Deepest hypernetwork accepted (the paper uses 3 blocks).</summary>
    public const int MaxDepth = 256;

    /// <summary>Bytes of parameters, gradients and optimizer state (saturating): what a config alone makes us allocate.</summary>
    public long EstimateBytes()
    {
        long d = EmbedDim, m = MlpHidden;
        long block = ResourceBudget.Add(ResourceBudget.Add(ResourceBudget.Bytes(4, d, d), ResourceBudget.Bytes(2, d, m)), 9 * d + m);
        long parameters = ResourceBudget.Add(ResourceBudget.Bytes(Units, d), ResourceBudget.Bytes(Depth, block));
        parameters = ResourceBudget.Add(parameters, ResourceBudget.Bytes(Units, UnitSize, d + 1));
        return ResourceBudget.Bytes(4 * 4, parameters);
    }

    public string ToJson() => JsonSerializer.Serialize(this);

    public static HypernetConfig FromJson(string json)
        => (JsonSerializer.Deserialize<HypernetConfig>(json) ?? throw new ArgumentException("hypernetwork config JSON is null")).Validate();
}

/// <summary>Preallocated activations and gradients of the hypernetwork for a batch capacity.</summary>
public sealed class HypernetWorkspace : IDisposable
{
    internal HypernetWorkspace(Hypernetwork net, int capacity)
    {
        var be = net.Backend;
        var c = net.Config;
        Capacity = capacity;
        int t = c.Tokens, d = c.EmbedDim;
        Tokens = new Tensor[c.Depth + 1];
        for (int i = 0; i <= c.Depth; i++) Tokens[i] = be.Allocate($"hyper.tokens.{i}", capacity, t, d);
        Blocks = net.Blocks.Select((b, i) => b.CreateActivations($"hyper.blocks.{i}.", capacity, t)).ToArray();
        BlockScratch = new TransformerBlock.Scratch(be, "hyper.", capacity * t, d, c.MlpHidden);
        Logits = be.Allocate("hyper.logits", capacity, c.Units, c.UnitSize);
        Scores = be.Allocate("hyper.scores", capacity, c.Units, c.UnitSize);
        DScores = be.Allocate("hyper.scores.grad", capacity, c.Units, c.UnitSize);
        DLogits = be.Allocate("hyper.logits.grad", capacity, c.Units, c.UnitSize);
        DTokens = be.Allocate("hyper.tokens.grad", capacity, t, d);
    }

    public int Capacity { get; }

    /// <summary>Soft scores [capacity, units, unitSize] in [clamp, 1 − clamp] of the last forward.</summary>
    public Tensor Scores { get; }

    /// <summary>Set by the caller (a loss) before <see cref="Hypernetwork.Backward"/>.</summary>
    public Tensor DScores { get; }

    internal Tensor[] Tokens { get; }
    internal TransformerBlock.Activations[] Blocks { get; }
    internal TransformerBlock.Scratch BlockScratch { get; }
    internal Tensor Logits { get; }
    internal Tensor DLogits { get; }
    internal Tensor DTokens { get; }

    public void Dispose()
    {
        foreach (var t in Tokens) t.Dispose();
        foreach (var t in Blocks.SelectMany(b => b.All()).Concat(BlockScratch.All())) t.Dispose();
        Logits.Dispose(); Scores.Dispose(); DScores.Dispose(); DLogits.Dispose(); DTokens.Dispose();
    }
}

/// <summary>
/// g_φ: predicts WHERE to edit. Tokens = R learned query tokens followed by the frozen model's final [CLS]
/// feature (no positional embedding) → pre-norm Transformer blocks → head r (its own Linear) on query token r
/// → clamp(σ(3·z)). Output: soft scores [B, R, unitSize]. Parameter names: query_tokens, blocks.{i}.*
/// (timm block names), heads.{r}.weight/bias.
/// </summary>
public sealed class Hypernetwork : IDisposable
{
    private readonly List<Parameter> _parameters = [];
    private readonly Dictionary<string, Parameter> _byName = [];
    private readonly Func<Parameter?, bool> _all = p => p is not null;

    public Hypernetwork(IBackend backend, HypernetConfig config)
    {
        ResourceBudget.Require(config.Validate().EstimateBytes(), "hypernetwork config", $"depth {config.Depth}, width {config.EmbedDim}, MLP {config.MlpHidden}, {config.Units} units of {config.UnitSize}");
        Backend = backend ?? throw new ArgumentNullException(nameof(backend));
        Config = (config ?? throw new ArgumentNullException(nameof(config))).Validate();
        int d = config.EmbedDim;
        QueryTokens = Add(new Parameter(backend, "query_tokens", 1, config.Units, d));
        var blocks = new TransformerBlock[config.Depth];
        for (int i = 0; i < config.Depth; i++)
            blocks[i] = new TransformerBlock(backend, $"blocks.{i}.", d, config.NumHeads, config.MlpHidden, qkvBias: true, config.LayerNormEps, p => Add(p));
        Blocks = blocks;
        var heads = new (Parameter, Parameter)[config.Units];
        for (int r = 0; r < config.Units; r++)
            heads[r] = (Add(new Parameter(backend, $"heads.{r}.weight", config.UnitSize, d)), Add(new Parameter(backend, $"heads.{r}.bias", config.UnitSize)));
        Heads = heads;
    }

    private Parameter Add(Parameter p)
    {
        _parameters.Add(p);
        _byName.Add(p.Name, p);
        return p;
    }

    public IBackend Backend { get; }
    public HypernetConfig Config { get; }
    public Parameter QueryTokens { get; }
    public IReadOnlyList<TransformerBlock> Blocks { get; }
    public IReadOnlyList<(Parameter Weight, Parameter Bias)> Heads { get; }
    public IReadOnlyList<Parameter> Parameters => _parameters;

    public Parameter this[string name] => _byName.TryGetValue(name, out var p)
        ? p : throw new KeyNotFoundException($"the hypernetwork has no parameter '{name}'");

    public HypernetWorkspace CreateWorkspace(int capacity)
        => capacity > 0 ? new HypernetWorkspace(this, capacity) : throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "capacity must be positive");

    /// <summary>
    /// Initialisation: query tokens 0 (as the reference), Linear weights trunc-normal(0.02), biases 0, LayerNorm 1/0.
    /// </summary>
    public void InitializeRandom(ulong seed)
    {
        var rng = new Rng(seed);
        foreach (var p in _parameters)
        {
            var values = new float[p.Length];
            if (p.Name.Contains("norm", StringComparison.Ordinal) && p.Name.EndsWith(".weight", StringComparison.Ordinal)) Array.Fill(values, 1f);
            else if (p.Name.EndsWith(".weight", StringComparison.Ordinal))
                for (int i = 0; i < values.Length; i++) values[i] = (float)rng.NextTruncatedNormal(0.02);
            p.Value.CopyFrom(values);
        }
    }

    /// <summary>Loads named tensors; every parameter must be present with its shape and finite values.</summary>
    public void LoadWeights(IReadOnlyDictionary<string, (int[] Shape, float[] Data)> tensors, string source)
        => ParameterLoading.Load(_parameters, tensors, source, "hypernetwork config");

    public void ZeroGrad()
    {
        foreach (var p in _parameters) Backend.Fill(p.Grad, 0f);
    }

    /// <summary>Scores = g_φ(cls) for cls [batch, dim] (the frozen model's final [CLS] features).</summary>
    public void Forward(HypernetWorkspace ws, Tensor cls, int batch)
    {
        var c = Config;
        if (batch <= 0 || batch > ws.Capacity)
            throw new ArgumentOutOfRangeException(nameof(batch), batch, $"batch must be in [1, {ws.Capacity}] (the workspace's capacity)");
        if (cls.Length < (long)batch * c.EmbedDim)
            throw new ShapeMismatchException(cls.Name, [batch, c.EmbedDim], cls.Shape);
        var be = Backend;
        int d = c.EmbedDim, t = c.Tokens, r = c.Units, h = c.UnitSize;
        var x = ws.Tokens[0];
        for (int b = 0; b < batch; b++)
            be.CopyRows(QueryTokens.Value, 0, d, x, (long)b * t * d, d, r, d, accumulate: false);
        be.CopyRows(cls, 0, d, x, (long)r * d, t * d, batch, d, accumulate: false);
        for (int i = 0; i < c.Depth; i++) Blocks[i].Forward(ws.Tokens[i], ws.Tokens[i + 1], ws.Blocks[i], batch, t);
        var top = ws.Tokens[c.Depth];
        for (int u = 0; u < r; u++)
        {
            // logits[:, u, :] = top[:, u, :]·W_uᵀ + b_u (strided rows: one per sample).
            be.Gemm(false, true, batch, h, d, 1f, top, (long)u * d, t * d, Heads[u].Weight.Value, 0, d, 0f, ws.Logits, (long)u * h, r * h);
            be.CopyRows(Heads[u].Bias.Value, 0, 0, ws.Logits, (long)u * h, r * h, batch, h, accumulate: true);
        }
        be.SigmoidForward(ws.Logits, ws.Scores, (long)batch * r * h, c.Amplify, c.Clamp, 1f - c.Clamp);
    }

    /// <summary>Backward from ws.DScores, accumulating every parameter's gradient (zero them first).</summary>
    public void Backward(HypernetWorkspace ws, int batch)
    {
        var c = Config;
        var be = Backend;
        int d = c.EmbedDim, t = c.Tokens, r = c.Units, h = c.UnitSize;
        be.SigmoidBackward(ws.Scores, ws.DScores, ws.DLogits, (long)batch * r * h, c.Amplify, c.Clamp, 1f - c.Clamp);
        var top = ws.Tokens[c.Depth];
        be.Fill(ws.DTokens, 0f);
        for (int u = 0; u < r; u++)
        {
            // dW_u += dlogits[:, u]ᵀ·top[:, u]; db_u += Σ_b dlogits[b, u]; dtop[:, u] = dlogits[:, u]·W_u.
            be.Gemm(true, false, h, d, batch, 1f, ws.DLogits, (long)u * h, r * h, top, (long)u * d, t * d, 1f, Heads[u].Weight.Grad, 0, d);
            be.CopyRows(ws.DLogits, (long)u * h, r * h, Heads[u].Bias.Grad, 0, 0, batch, h, accumulate: true);
            be.Gemm(false, false, batch, d, h, 1f, ws.DLogits, (long)u * h, r * h, Heads[u].Weight.Value, 0, d, 0f, ws.DTokens, (long)u * d, t * d);
        }
        for (int i = c.Depth - 1; i >= 0; i--)
            Blocks[i].Backward(ws.Tokens[i], ws.Blocks[i], ws.DTokens, ws.BlockScratch, batch, t, _all, needInputGrad: true);   // block 0's input gradient feeds the query tokens
        // Query tokens are shared by every sample: their gradient is the sum over the batch of token rows 0..R−1.
        for (int b = 0; b < batch; b++)
            be.CopyRows(ws.DTokens, (long)b * t * d, d, QueryTokens.Grad, 0, d, r, d, accumulate: true);
    }

    public void Dispose()
    {
        foreach (var p in _parameters) p.Dispose();
    }
}

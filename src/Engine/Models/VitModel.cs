using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Models;

/// <summary>What a backward pass computes.</summary>
public sealed record BackwardOptions
{
    /// <summary>Full backward: every parameter's gradient and the input gradient.</summary>
    public static readonly BackwardOptions Full = new() { InputGradient = true };

    /// <summary>Lowest block the gradient flows into; blocks below it, the embeddings and the input get nothing.</summary>
    public int StartBlock { get; init; }

    /// <summary>Parameters whose gradients are accumulated; null = all (in the blocks reached).</summary>
    public IReadOnlySet<string>? Parameters { get; init; }

    /// <summary>Write d loss / d input into <see cref="VitWorkspace.DInput"/> (needs StartBlock 0).</summary>
    public bool InputGradient { get; init; }

    /// <summary>The edit-shaped backward: start at <paramref name="startBlock"/>, weight gradients for the named parameters only.</summary>
    public static BackwardOptions Truncated(int startBlock, IEnumerable<string> parameters)
        => new() { StartBlock = startBlock, Parameters = parameters.ToHashSet() };
}

/// <summary>
/// A timm-equivalent Vision Transformer with an explicit forward and backward per layer, running on any
/// <see cref="IBackend"/>. Reads like the paper: patch embed → [CLS] + position → pre-norm blocks
/// (x += attn(norm1(x)); x += mlp(norm2(x))) → final norm on [CLS] → head.
/// Only the [CLS] row goes through the final norm and head: LayerNorm is per token, so this equals timm's
/// norm-then-pool and skips work on the other tokens. For the same reason the last block, where the backend has the
/// kernels, runs past its attention for [CLS] only (<see cref="TransformerBlock.ForwardCls"/>), forward and backward.
/// </summary>
public sealed class VitModel : IDisposable
{
    private readonly List<Parameter> _parameters = [];
    private readonly Dictionary<string, Parameter> _byName = [];
    private readonly Dictionary<Parameter, int> _indexOf = new(ReferenceEqualityComparer.Instance);

    // The resolved form of the last BackwardOptions seen, so steady-state backward passes allocate nothing.
    private BackwardOptions? _planFor;
    private bool[] _wanted = [];
    private bool[] _blockWants = [];
    private readonly Func<Parameter?, bool> _wants;   // cached delegate: no allocation per backward

    public VitModel(IBackend backend, VitConfig config)
    {
        Backend = backend ?? throw new ArgumentNullException(nameof(backend));
        Config = (config ?? throw new ArgumentNullException(nameof(config))).Validate();
        int d = config.EmbedDim;
        ClsToken = Add(new Parameter(backend, "cls_token", 1, 1, d));
        PosEmbed = Add(new Parameter(backend, "pos_embed", 1, config.Tokens, d));
        PatchWeight = Add(new Parameter(backend, "patch_embed.proj.weight", d, config.InChans, config.PatchSize, config.PatchSize));
        PatchBias = Add(new Parameter(backend, "patch_embed.proj.bias", d));
        var blocks = new TransformerBlock[config.Depth];
        for (int i = 0; i < config.Depth; i++)
            blocks[i] = new TransformerBlock(backend, $"blocks.{i}.", d, config.NumHeads, config.MlpHidden, config.QkvBias, config.LayerNormEps, p => Add(p));
        Blocks = blocks;
        _wants = Wants;
        NormWeight = Add(new Parameter(backend, "norm.weight", d));
        NormBias = Add(new Parameter(backend, "norm.bias", d));
        HeadWeight = Add(new Parameter(backend, "head.weight", config.NumClasses, d));
        HeadBias = Add(new Parameter(backend, "head.bias", config.NumClasses));
    }

    private Parameter Add(Parameter p)
    {
        _indexOf.Add(p, _parameters.Count);
        _parameters.Add(p);
        _byName.Add(p.Name, p);
        return p;
    }

    public IBackend Backend { get; }
    public VitConfig Config { get; }
    public Parameter ClsToken { get; }
    public Parameter PosEmbed { get; }
    public Parameter PatchWeight { get; }
    public Parameter PatchBias { get; }
    public IReadOnlyList<TransformerBlock> Blocks { get; }
    public Parameter NormWeight { get; }
    public Parameter NormBias { get; }
    public Parameter HeadWeight { get; }
    public Parameter HeadBias { get; }

    /// <summary>All parameters in timm's named_parameters() order.</summary>
    public IReadOnlyList<Parameter> Parameters => _parameters;

    public Parameter this[string name] => _byName.TryGetValue(name, out var p)
        ? p : throw new KeyNotFoundException($"the ViT has no parameter '{name}'");

    public bool TryGetParameter(string name, out Parameter parameter) => _byName.TryGetValue(name, out parameter!);

    public VitWorkspace CreateWorkspace(int batchCapacity) => new(Backend, Config, batchCapacity);

    // ---- weights -----------------------------------------------------------------------------------

    /// <summary>timm's initialisation (trunc-normal 0.02 weights, zero biases, unit LayerNorm), seeded.</summary>
    public void InitializeRandom(ulong seed)
    {
        var rng = new Rng(seed);
        foreach (var p in _parameters)
        {
            var values = new float[p.Length];
            bool isNorm = p.Name.Contains("norm", StringComparison.Ordinal);
            if (isNorm && p.Name.EndsWith(".weight", StringComparison.Ordinal)) Array.Fill(values, 1f);
            else if (p.Name.EndsWith(".bias", StringComparison.Ordinal)) { }
            else if (p.Name == "cls_token") for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextNormal() * 1e-6);
            else for (int i = 0; i < values.Length; i++) values[i] = (float)rng.NextTruncatedNormal(0.02);
            p.Value.CopyFrom(values);
        }
    }

    /// <summary>
    /// Loads timm-named tensors. Every parameter must be present with its exact shape and finite values; the
    /// error lists every missing, unexpected and mis-shaped tensor at once.
    /// </summary>
    public void LoadWeights(IReadOnlyDictionary<string, (int[] Shape, float[] Data)> tensors, string source)
        => ParameterLoading.Load(_parameters, tensors, source, "ViT config");

    /// <summary>Zeroes the gradients of the given parameters (all when null).</summary>
    public void ZeroGrad(IEnumerable<string>? names = null)
    {
        foreach (var p in names is null ? _parameters : names.Select(n => this[n])) Backend.Fill(p.Grad, 0f);
    }

    // ---- forward -----------------------------------------------------------------------------------

    /// <summary>Full forward of images [batch, C, H, W]: fills ws.Logits, ws.ClsFeature and caches every block input.</summary>
    public void Forward(VitWorkspace ws, Tensor images, int batch)
    {
        ForwardUpTo(ws, images, batch, 0);
        ForwardFrom(ws, 0, batch);
    }

    /// <summary>
    /// The embeddings and blocks [0, <paramref name="stopBlock"/>) of images [batch, C, H, W]: fills ws.BlockInput[0..stopBlock]
    /// (the cache <see cref="ForwardFrom"/> restarts from); no head.
    /// </summary>
    internal void ForwardUpTo(VitWorkspace ws, Tensor images, int batch, int stopBlock)
    {
        CheckBatch(ws, batch);
        if (stopBlock < 0 || stopBlock > Config.Depth) throw new ArgumentOutOfRangeException(nameof(stopBlock), stopBlock, $"block index must be in [0, {Config.Depth}]");
        var c = Config;
        if (images.Length < (long)batch * c.InChans * c.ImageSize * c.ImageSize)
            throw new ShapeMismatchException(images.Name, [batch, c.InChans, c.ImageSize, c.ImageSize], images.Shape);
        var be = Backend;
        int d = c.EmbedDim, p = c.Patches;
        // Patch embedding: conv(k = s = patch) as im2col + GEMM.
        be.Im2Col(images, ws.Columns, batch, c.InChans, c.ImageSize, c.ImageSize, c.PatchSize);
        Linear(ws.Columns, PatchWeight, PatchBias, ws.PatchTokens, batch * p, c.PatchInputs, d);
        be.AssembleTokens(ws.PatchTokens, ClsToken.Value, PosEmbed.Value, ws.BlockInput[0], batch, p, d);
        ws.CachedBatch = batch;
        for (int i = 0; i < stopBlock; i++) BlockForward(ws, i, batch);
    }

    /// <summary>
    /// Whether the last block runs past its attention for [CLS] only where the backend can (the default; the logits and
    /// every gradient are the same). False: every token goes through it, so ws.BlockInput[depth] is complete.
    /// </summary>
    public bool LastBlockClsOnly { get; set; } = true;

    /// <summary>Whether a forward without per-sample weights in the last block runs it for [CLS] only: the setting, on a backend with the kernels.</summary>
    internal bool LastBlockRunsClsOnly => LastBlockClsOnly && Backend is IEditKernels;

    /// <summary>
    /// Block i's forward from ws.BlockInput[i] to ws.BlockInput[i + 1]. The last block runs for [CLS] only where the backend
    /// has the kernels for it (<see cref="IEditKernels"/>) and it has no per-sample weights: the head reads nothing else.
    /// </summary>
    private void BlockForward(VitWorkspace ws, int i, int batch)
    {
        bool last = i == Config.Depth - 1;
        if (last && LastBlockRunsClsOnly && !ws.Blocks[i].HasPerSampleWeights)
        {
            Blocks[i].ForwardCls((IEditKernels)Backend, ws.BlockInput[i], ws.BlockInput[i + 1], ws.Blocks[i], ws.LastBlockCls, batch, Config.Tokens);
            ws.LastBlockRanClsOnly = true;
            return;
        }
        Blocks[i].Forward(ws.BlockInput[i], ws.BlockInput[i + 1], ws.Blocks[i], batch, Config.Tokens);
        if (last) ws.LastBlockRanClsOnly = false;
    }

    /// <summary>
    /// Forward from block <paramref name="startBlock"/> on, reusing ws.BlockInput[startBlock] from an earlier
    /// forward on the same images (blocks before it are unchanged by an edit of later blocks).
    /// </summary>
    public void ForwardFrom(VitWorkspace ws, int startBlock, int batch)
    {
        CheckBatch(ws, batch);
        if (startBlock < 0 || startBlock > Config.Depth) throw new ArgumentOutOfRangeException(nameof(startBlock), startBlock, $"block index must be in [0, {Config.Depth}]");
        if (ws.CachedBatch != batch)
            throw new InvalidOperationException($"ForwardFrom(block {startBlock}, batch {batch}): the workspace caches block inputs for batch {ws.CachedBatch}; run Forward on these images first");
        for (int i = startBlock; i < Config.Depth; i++) BlockForward(ws, i, batch);
        Head(ws, batch);
    }

    /// <summary>Final norm of the [CLS] rows of ws.BlockInput[depth] and the head: fills ws.ClsFeature and ws.Logits.</summary>
    internal void Head(VitWorkspace ws, int batch)
    {
        var be = Backend;
        var c = Config;
        int d = c.EmbedDim;
        be.CopyRows(ws.BlockInput[c.Depth], 0, c.Tokens * d, ws.ClsRaw, 0, d, batch, d, accumulate: false);
        be.LayerNormForward(ws.ClsRaw, NormWeight.Value, NormBias.Value, ws.ClsFeature, ws.NormMean, ws.NormRstd, batch, d, c.LayerNormEps);
        Linear(ws.ClsFeature, HeadWeight, HeadBias, ws.Logits, batch, d, c.NumClasses);
    }

    private void Linear(Tensor x, Parameter weight, Parameter? bias, Tensor y, int rows, int inFeatures, int outFeatures)
        => TransformerBlock.Linear(Backend, x, weight, bias, y, rows, inFeatures, outFeatures);

    private void LinearBackward(Tensor dy, Tensor x, Parameter weight, Parameter? bias, Tensor? dx, int rows, int inFeatures, int outFeatures)
        => TransformerBlock.LinearBackward(Backend, dy, x, weight, bias, dx, rows, inFeatures, outFeatures, _wants);

    // ---- backward ----------------------------------------------------------------------------------

    /// <summary>
    /// Backward from ws.DLogits (set by a loss) through the head and the blocks down to options.StartBlock,
    /// ACCUMULATING into the selected parameters' gradients (zero them first with <see cref="ZeroGrad"/>).
    /// Per-sample weights attached to the workspace (<see cref="VitWorkspace.SetPerSampleWeights"/>) get their
    /// per-sample gradients overwritten. Needs the activations of the latest forward on the same batch.
    /// </summary>
    public void Backward(VitWorkspace ws, int batch, BackwardOptions? options = null)
    {
        options ??= BackwardOptions.Full;
        CheckBatch(ws, batch);
        var c = Config;
        if (options.StartBlock < 0 || options.StartBlock >= c.Depth)
            throw new ArgumentOutOfRangeException(nameof(options), options.StartBlock, $"backward start block must be in [0, {c.Depth})");
        if (options.InputGradient && options.StartBlock != 0)
            throw new ArgumentException("an input gradient needs the backward to reach block 0");
        if (!ReferenceEquals(options, _planFor)) Plan(options);
        var be = Backend;
        int d = c.EmbedDim;

        HeadBackward(ws, batch);
        int last = c.Depth - 1;
        bool clsOnly = ws.LastBlockRanClsOnly;
        if (!clsOnly)
        {
            be.Fill(ws.DResidual, 0f);
            be.CopyRows(ws.DClsRaw, 0, d, ws.DResidual, 0, c.Tokens * d, batch, d, accumulate: false);
        }

        // Index of the lowest block whose weights (or below which anything) still need gradient.
        bool embeddingsWanted = options.StartBlock == 0 && (options.InputGradient || Wants(ClsToken) || Wants(PosEmbed) || Wants(PatchWeight) || Wants(PatchBias));
        for (int i = last; i >= options.StartBlock; i--)
        {
            bool needBelow = embeddingsWanted || AnyBlockWants(options.StartBlock, i) || ws.AnyPerSampleWeights(options.StartBlock, i);
            if (i == last && clsOnly)
                Blocks[i].BackwardCls((IEditKernels)be, ws.BlockInput[i], ws.Blocks[i], ws.LastBlockCls, ws.DClsRaw, ws.DResidual,
                    ws.BlockScratch, batch, c.Tokens, _wants, needBelow);
            else
                Blocks[i].Backward(ws.BlockInput[i], ws.Blocks[i], ws.DResidual, ws.BlockScratch, batch, c.Tokens, _wants, needBelow);
            if (!needBelow) return;
        }
        if (!embeddingsWanted) return;

        int p = c.Patches;
        be.AssembleTokensBackward(ws.DResidual, ws.DPatchTokens, Wants(ClsToken) ? ClsToken.Grad : null,
            Wants(PosEmbed) ? PosEmbed.Grad : null, batch, p, d);
        LinearBackward(ws.DPatchTokens, ws.Columns, PatchWeight, PatchBias, options.InputGradient ? ws.DColumns : null,
            batch * p, c.PatchInputs, d);
        if (options.InputGradient)
            be.Col2Im(ws.DColumns, ws.DInput, batch, c.InChans, c.ImageSize, c.ImageSize, c.PatchSize);
    }

    /// <summary>
    /// The head's backward (logits = clsFeature·Wᵀ + b, clsFeature = LN(x[:, 0])): ws.DClsRaw = d loss / d x[:, 0] from
    /// ws.DLogits, and the head's and final norm's gradients where the current plan wants them.
    /// </summary>
    internal void HeadBackward(VitWorkspace ws, int batch)
    {
        int d = Config.EmbedDim;
        LinearBackward(ws.DLogits, ws.ClsFeature, HeadWeight, HeadBias, ws.DClsFeature, batch, d, Config.NumClasses);
        Backend.LayerNormBackward(ws.DClsFeature, ws.ClsRaw, NormWeight.Value, ws.NormMean, ws.NormRstd, ws.DClsRaw,
            Wants(NormWeight) ? NormWeight.Grad : null, Wants(NormBias) ? NormBias.Grad : null, batch, d, accumulateDx: false);
    }

    /// <summary>Makes <paramref name="options"/> the plan that decides which gradients backward passes compute.</summary>
    internal void UsePlan(BackwardOptions options)
    {
        if (!ReferenceEquals(options, _planFor)) Plan(options);
    }

    /// <summary>Whether the current plan wants <paramref name="p"/>'s gradient (the delegate the block backward takes).</summary>
    internal Func<Parameter?, bool> WantsDelegate => _wants;

    private void Plan(BackwardOptions options)
    {
        if (options.Parameters is not null)
            foreach (string name in options.Parameters) _ = this[name];
        _wanted = _parameters.Select(p => options.Parameters is null || options.Parameters.Contains(p.Name)).ToArray();
        _blockWants = Blocks.Select(b => b.Parameters().Any(Wants)).ToArray();
        _planFor = options;
    }

    private bool Wants(Parameter? p) => p is not null && _wanted[_indexOf[p]];

    private bool AnyBlockWants(int from, int toExclusive)
    {
        for (int i = from; i < toExclusive; i++)
            if (_blockWants[i]) return true;
        return false;
    }

    private void CheckBatch(VitWorkspace ws, int batch)
    {
        ArgumentNullException.ThrowIfNull(ws);
        if (!ReferenceEquals(ws.Config, Config) && ws.Config != Config)
            throw new ArgumentException("the workspace was created for a different ViT config");
        if (batch <= 0 || batch > ws.Capacity)
            throw new ArgumentOutOfRangeException(nameof(batch), batch, $"batch must be in [1, {ws.Capacity}] (the workspace's capacity)");
    }

    public void Dispose()
    {
        foreach (var p in _parameters) p.Dispose();
    }
}

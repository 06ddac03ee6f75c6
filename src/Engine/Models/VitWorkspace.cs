using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Models;

/// <summary>
/// Every activation a ViT forward saves for its backward, and the backward's gradient buffers, allocated
/// once for a batch capacity and reused by every step (no allocation in steady-state loops).
/// <see cref="BlockInput"/>[k] is the residual stream entering block k: after one full forward it is the
/// cache that lets repeated steps on the same images restart at block k.
/// </summary>
public sealed class VitWorkspace : IDisposable
{
    internal VitWorkspace(IBackend backend, VitConfig config, int capacity)
    {
        if (capacity <= 0) throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "workspace batch capacity must be positive");
        ResourceBudget.Require(EstimateBytes(config, capacity), "the model's activations", Describe(config, capacity));
        Config = config;
        Capacity = capacity;
        int t = config.Tokens, d = config.EmbedDim, rows = capacity * t, p = config.Patches;
        Columns = backend.Allocate("patch.columns", capacity * p, config.PatchInputs);
        PatchTokens = backend.Allocate("patch.tokens", capacity * p, d);
        BlockInput = new Tensor[config.Depth + 1];
        for (int i = 0; i <= config.Depth; i++) BlockInput[i] = backend.Allocate($"blocks.{i}.input", capacity, t, d);
        Blocks = new TransformerBlock.Activations[config.Depth];
        for (int i = 0; i < config.Depth; i++)
            Blocks[i] = new TransformerBlock.Activations(backend, $"blocks.{i}.", capacity, t, d, config.NumHeads, config.MlpHidden);
        BlockScratch = new TransformerBlock.Scratch(backend, "blocks.", rows, d, config.MlpHidden);
        LastBlockCls = new TransformerBlock.ClsActivations(backend, $"blocks.{config.Depth - 1}.", capacity, t, d, config.NumHeads, config.MlpHidden);
        ClsRaw = backend.Allocate("cls.raw", capacity, d);
        ClsFeature = backend.Allocate("cls_feature", capacity, d);
        NormMean = backend.Allocate("norm.mean", capacity);
        NormRstd = backend.Allocate("norm.rstd", capacity);
        Logits = backend.Allocate("logits", capacity, config.NumClasses);
        DLogits = backend.Allocate("logits.grad", capacity, config.NumClasses);
        DClsFeature = backend.Allocate("cls_feature.grad", capacity, d);
        DClsRaw = backend.Allocate("cls.raw.grad", capacity, d);
        DResidual = backend.Allocate("residual.grad", rows, d);
        DPatchTokens = backend.Allocate("patch.tokens.grad", capacity * p, d);
        DColumns = backend.Allocate("patch.columns.grad", capacity * p, config.PatchInputs);
        DInput = backend.Allocate("input.grad", capacity, config.InChans, config.ImageSize, config.ImageSize);
        Losses = backend.Allocate("losses", capacity);
    }

    /// <summary>
    /// Bytes of activations and gradients for <paramref name="capacity"/> images (an upper estimate, saturating):
    /// per block the attention probabilities are heads × tokens², so a model with many tokens costs quadratically.
    /// </summary>
    public static long EstimateBytes(VitConfig c, int capacity)
    {
        long t = c.Tokens, d = c.EmbedDim, h = c.MlpHidden, heads = c.NumHeads, depth = c.Depth;
        long square = ResourceBudget.Bytes(heads, t, t);
        long perBlock = ResourceBudget.Add(ResourceBudget.Add(ResourceBudget.Bytes(8, t, d), ResourceBudget.Bytes(2, t, h)), ResourceBudget.Add(square, 4 * t));
        long perSample = ResourceBudget.Add(ResourceBudget.Bytes(depth + 1, t, d), ResourceBudget.Bytes(depth, perBlock));
        perSample = ResourceBudget.Add(perSample, ResourceBudget.Add(square, ResourceBudget.Add(ResourceBudget.Bytes(4, t, d), ResourceBudget.Bytes(2, t, h))));
        perSample = ResourceBudget.Add(perSample, ResourceBudget.Bytes(2, c.Patches, ResourceBudget.Add(c.PatchInputs, d)));
        // The last block's [CLS]-row activations and gradients (LastBlockCls).
        perSample = ResourceBudget.Add(perSample, ResourceBudget.Add(ResourceBudget.Bytes(heads, t), ResourceBudget.Add(6 * d, 3 * h + 2)));
        return ResourceBudget.Bytes(4, capacity, perSample);
    }

    internal static string Describe(VitConfig c, int capacity) =>
        $"{c.Tokens:N0} tokens × width {c.EmbedDim} × {c.NumHeads} heads × {c.Depth} blocks for {capacity} image(s)";

    public VitConfig Config { get; }
    public int Capacity { get; }

    /// <summary>Logits [capacity, classes] of the last forward (first <c>batch</c> rows valid).</summary>
    public Tensor Logits { get; }

    /// <summary>The final [CLS] feature after the final LayerNorm, [capacity, dim].</summary>
    public Tensor ClsFeature { get; }

    /// <summary>Set by the caller (e.g. a loss) before <see cref="VitModel.Backward"/>.</summary>
    public Tensor DLogits { get; }

    /// <summary>Input gradient [capacity, C, H, W], written when the backward asks for it.</summary>
    public Tensor DInput { get; }

    /// <summary>Per-sample loss values written by loss helpers.</summary>
    public Tensor Losses { get; }

    /// <summary>
    /// Residual stream entering block k ([capacity, tokens, dim]); index depth = the last block's output, of which a backend
    /// with <see cref="Backends.IEditKernels"/> computes the [CLS] rows only (the only ones the head reads).
    /// </summary>
    public Tensor[] BlockInput { get; }

    /// <summary>How many images the cached block inputs hold, and the highest block input that is valid.</summary>
    public int CachedBatch { get; internal set; }

    internal Tensor Columns { get; }
    internal Tensor PatchTokens { get; }
    internal TransformerBlock.Activations[] Blocks { get; }
    internal TransformerBlock.Scratch BlockScratch { get; }

    /// <summary>The last block's [CLS]-row activations, when it ran for [CLS] only (<see cref="LastBlockRanClsOnly"/>).</summary>
    internal TransformerBlock.ClsActivations LastBlockCls { get; }

    /// <summary>
    /// Whether the latest forward ran the last block for [CLS] only (<see cref="TransformerBlock.ForwardCls"/>): then
    /// only the [CLS] rows of <see cref="BlockInput"/>[depth] hold the block's output.
    /// </summary>
    internal bool LastBlockRanClsOnly { get; set; }
    internal Tensor ClsRaw { get; }
    internal Tensor NormMean { get; }
    internal Tensor NormRstd { get; }
    internal Tensor DClsFeature { get; }
    internal Tensor DClsRaw { get; }
    internal Tensor DResidual { get; }
    internal Tensor DPatchTokens { get; }
    internal Tensor DColumns { get; }

    // ---- opt-in per-sample weights ----------------------------------------------------------------

    /// <summary>
    /// Runs block <paramref name="block"/>'s mlp.fc1 and/or mlp.fc2 with per-sample weights in this workspace's
    /// forward and backward passes (null: the shared parameter). Sample b of a batch uses Values[b]; a backward
    /// overwrites Grads[b] and reaches down to the lowest block that has per-sample weights even when no
    /// parameter gradient is asked for. The weights must be shaped like the block's [capacity, out, in].
    /// </summary>
    public void SetPerSampleWeights(int block, PerSampleWeights? fc1, PerSampleWeights? fc2)
    {
        if (block < 0 || block >= Blocks.Length)
            throw new ArgumentOutOfRangeException(nameof(block), block, $"block index must be in [0, {Blocks.Length})");
        Blocks[block].Fc1PerSample = fc1;
        Blocks[block].Fc2PerSample = fc2;
    }

    /// <summary>Back to the shared weights in every block.</summary>
    public void ClearPerSampleWeights()
    {
        foreach (var b in Blocks) { b.Fc1PerSample = null; b.Fc2PerSample = null; }
    }

    /// <summary>Whether any block in [from, toExclusive) runs per-sample weights.</summary>
    internal bool AnyPerSampleWeights(int from, int toExclusive)
    {
        for (int i = from; i < toExclusive; i++)
            if (Blocks[i].HasPerSampleWeights) return true;
        return false;
    }

    public long AllocatedFloats =>
        AllTensors().Sum(t => t.Length);

    private IEnumerable<Tensor> AllTensors()
    {
        IEnumerable<Tensor> own = [Columns, PatchTokens, ClsRaw, ClsFeature, NormMean, NormRstd, Logits, DLogits, DClsFeature,
            DClsRaw, DResidual, DPatchTokens, DColumns, DInput, Losses];
        return own.Concat(BlockInput).Concat(Blocks.SelectMany(b => b.All())).Concat(BlockScratch.All()).Concat(LastBlockCls.All());
    }

    public void Dispose()
    {
        foreach (var t in AllTensors()) t.Dispose();
    }
}

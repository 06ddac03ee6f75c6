using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Models;

/// <summary>
/// The forward from the first edited block and the truncated backward of an edit, without the work whose result the
/// loss never reads: the last block runs for the [CLS] row only (its other tokens only feed keys and values: K and V
/// are computed for every token, everything after the attention for [CLS] alone, forward and backward), and the
/// weight gradient of a masked matrix is computed for its selected hidden units only — a gather-GEMM over the
/// selected columns of dy (fc1, row mask) or x (fc2, column mask), scattered into the selected rows or columns of the
/// gradient, or kept compact for the optimizer (<see cref="CompactGradients"/>, what the editor runs). Only the
/// gradients of the edited fc1/fc2 weights are computed; the gradient outside the selected units is left as it was
/// (the masked optimizer step never reads it).
/// <para>The first edited block (when it is not the last one, and its edited matrices have selected units): its input,
/// attention and LN2 output do not change during an edit, and of its MLP only the selected hidden units U = S1 ∪ S2
/// (fc1 rows S1, fc2 columns S2) can change. <see cref="Forward"/> keeps base = out₀ − Σ_{j∈U} W2₀[:, j]·gelu(h₀_j) from
/// the original forward; each later forward computes h_j for j ∈ S1 only and out = base + Σ_{j∈U} W2[:, j]·gelu(h_j),
/// and the backward computes only the selected units' weight gradients there (no input gradient is needed below it).
/// This holds while nothing but the selected units' fc1 rows / fc2 columns changes between <see cref="Forward"/> and
/// later steps, as in a masked edit.</para>
/// Needs a backend with <see cref="IEditKernels"/>; buffers are allocated once per capacity (the first block's compact
/// buffers when <see cref="Forward"/> needs larger ones), steps allocate nothing.
/// </summary>
public sealed class EditPass : IDisposable, IWeightGradients
{
    private readonly VitModel _model;
    private readonly IBackend _be;
    private readonly IEditKernels _kernels;
    private readonly int _first;
    private readonly Parameter[] _weights;
    private readonly MaskAxis[] _axes;
    private readonly int[]?[] _selected;
    private readonly BackwardOptions _plan;
    // Gather-GEMM scratch: the gathered columns [rows, K ≤ hidden] and the compact gradient [K·dim].
    private readonly Tensor _gathered, _compact;
    // Per unit, its compact gradient when CompactGradients is set (grown to the largest selection, kept).
    private readonly Tensor?[] _unitGrads;
    // The first edited block's fc1 and fc2 units (indices into _weights; −1: that matrix is not edited).
    private readonly int _firstFc1 = -1, _firstFc2 = -1;
    // Its cached MLP (see the class summary): U sorted, the positions of S1 and S2 in U; set by Forward for _firstBatch.
    private int[] _union = [], _s1InUnion = [], _s2InUnion = [];
    private bool _firstCached;
    private int _firstBatch;
    // base [rows, dim]; gelu(h_U) [rows, |U|]; h_S1, gelu(h_S1), d h_S1 [rows, |S1|]; gelu(h_S2) [rows, |S2|];
    // W1[S1, :] [|S1|, dim]; W2[:, U] [dim, |U|]; W2[:, S1] [dim, |S1|]; b1[S1].
    private Tensor? _base, _gU, _h1, _g1, _dh1, _g2, _w1s, _w2u, _w2s1, _b1s;

    /// <param name="model">The ViT; its backend must implement <see cref="IEditKernels"/>.</param>
    /// <param name="firstBlock">The lowest edited block: the forward restarts and the backward stops there.</param>
    /// <param name="units">The edited weights: fc1 (<see cref="MaskAxis.Rows"/>) or fc2 (<see cref="MaskAxis.Columns"/>) of blocks ≥ firstBlock.</param>
    /// <param name="capacity">Largest batch.</param>
    public EditPass(VitModel model, int firstBlock, IReadOnlyList<(string Parameter, MaskAxis Axis)> units, int capacity)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _be = model.Backend;
        _kernels = _be as IEditKernels ?? throw new ArgumentException($"backend '{_be.Name}' has no edit kernels (IEditKernels)");
        var c = model.Config;
        if (firstBlock < 0 || firstBlock >= c.Depth) throw new ArgumentOutOfRangeException(nameof(firstBlock), firstBlock, $"block index must be in [0, {c.Depth})");
        if (capacity <= 0) throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "batch capacity must be positive");
        _first = firstBlock;
        _weights = new Parameter[units.Count];
        _axes = new MaskAxis[units.Count];
        _selected = new int[]?[units.Count];
        _unitGrads = new Tensor?[units.Count];
        for (int i = 0; i < units.Count; i++)
        {
            var (name, axis) = units[i];
            var w = model[name];
            int block = Array.FindIndex(model.Blocks.ToArray(), b => ReferenceEquals(b.Fc1Weight, w) || ReferenceEquals(b.Fc2Weight, w));
            bool fc1 = block >= 0 && ReferenceEquals(model.Blocks[block].Fc1Weight, w);
            if (block < firstBlock || axis != (fc1 ? MaskAxis.Rows : MaskAxis.Columns))
                throw new ArgumentException($"edit unit '{name}' ({axis}): expected the fc1 (rows) or fc2 (columns) weight of a block ≥ {firstBlock}");
            _weights[i] = w;
            _axes[i] = axis;
            if (block == firstBlock)
            {
                if (fc1) _firstFc1 = i;
                else _firstFc2 = i;
            }
        }
        _plan = BackwardOptions.Truncated(firstBlock, units.Select(u => u.Parameter));
        int d = c.EmbedDim, h = c.MlpHidden;
        Capacity = capacity;
        _gathered = _be.Allocate("edit.gathered", capacity * c.Tokens, h);
        _compact = _be.Allocate("edit.compact.grad", h, d);
    }

    public int Capacity { get; }

    /// <summary>
    /// When set, a unit with selected hidden units gets its weight gradient in <see cref="CompactGradient"/> ([K, dim]
    /// for fc1's rows, [dim, K] for fc2's columns, K = the selection's length) instead of scattered into the matrix's
    /// gradient: the editor's <see cref="IEditKernels.CompactRmsPropStep"/> reads it there (the scatter and the
    /// optimizer's pass over every cache line of fc2 were 6 % of a ViT-B edit step).
    /// </summary>
    public bool CompactGradients { get; set; }

    /// <summary>Unit i's compact weight gradient after a <see cref="Backward"/> with <see cref="CompactGradients"/> (at least K × the other dimension).</summary>
    public Tensor CompactGradient(int unit) => _unitGrads[unit] ?? throw new InvalidOperationException($"no compact gradient for '{_weights[unit].Name}': select its hidden units with CompactGradients set");

    /// <summary>Unit i's selected hidden units (null: the whole matrix).</summary>
    public int[]? Selected(int unit) => _selected[unit];

    /// <summary>
    /// Unit i's gradient from now on: for the selected hidden units only (sorted, distinct, in [0, hidden)), or the
    /// whole matrix (null; the pass then ACCUMULATES into the gradient, which the caller zeroes).
    /// </summary>
    public void Select(int unit, int[]? hiddenUnits)
    {
        if (hiddenUnits is not null)
        {
            int hidden = _model.Config.MlpHidden;
            for (int i = 0; i < hiddenUnits.Length; i++)
                if (hiddenUnits[i] < 0 || hiddenUnits[i] >= hidden || (i > 0 && hiddenUnits[i] <= hiddenUnits[i - 1]))
                    throw new ArgumentException($"selected hidden units of '{_weights[unit].Name}' must be sorted, distinct and in [0, {hidden})");
        }
        _selected[unit] = hiddenUnits;
        _firstCached = false;   // the first block's cache is for the selection at the last Forward
        if (CompactGradients && hiddenUnits is not null) UnitGradient(unit);   // grown here, not in a step
    }

    /// <summary>Embeddings and blocks below the first edited one, then <see cref="ForwardFrom"/>: the cache later steps restart from.</summary>
    public void Forward(VitWorkspace ws, Tensor images, int batch)
    {
        CheckBatch(ws, batch);
        // The blocks below the last one as the model's own forward (the original weights' activations, exactly), then the
        // first block's cache.
        _model.ForwardUpTo(ws, images, batch, _model.Config.Depth - 1);
        CacheFirstBlock(ws, batch);
        LastBlockForward(ws, batch);
        _model.Head(ws, batch);
    }

    /// <summary>
    /// What <see cref="Forward"/> gives, when ws already holds the model's full forward (<see cref="VitModel.Forward"/>) of
    /// these images with the current weights (the mask's forward): blocks below the last one ran the same code on the
    /// same inputs, so only the last block's [CLS] rows and the head run (nothing, when that forward ran them already).
    /// </summary>
    public void ForwardFromFullForward(VitWorkspace ws, int batch)
    {
        CheckBatch(ws, batch);
        if (ws.CachedBatch != batch)
            throw new InvalidOperationException($"edit forward (batch {batch}): the workspace holds a forward for batch {ws.CachedBatch}");
        CacheFirstBlock(ws, batch);
        if (ws.LastBlockRanClsOnly) return;   // that forward already ran the last block's [CLS]-only path and the head
        LastBlockForward(ws, batch);
        _model.Head(ws, batch);
    }

    /// <summary>
    /// Blocks first…depth−2 in full, the last block for [CLS] only, and the head: ws.Logits. Rows other than [CLS] of
    /// the last block's output are not written.
    /// </summary>
    public void ForwardFrom(VitWorkspace ws, int batch)
    {
        CheckBatch(ws, batch);
        var c = _model.Config;
        if (ws.CachedBatch != batch)
            throw new InvalidOperationException($"edit forward (batch {batch}): the workspace caches block inputs for batch {ws.CachedBatch}; run Forward on these images first");
        int last = c.Depth - 1;
        for (int i = _first; i < last; i++)
        {
            if (i == _first && _firstCached)
            {
                if (_firstBatch != batch) throw new InvalidOperationException($"edit forward (batch {batch}): the first edited block is cached for batch {_firstBatch}; run Forward first");
                FirstBlockForward(ws, batch);
            }
            else _model.Blocks[i].Forward(ws.BlockInput[i], ws.BlockInput[i + 1], ws.Blocks[i], batch, c.Tokens);
        }
        LastBlockForward(ws, batch);
        _model.Head(ws, batch);
    }

    private void LastBlockForward(VitWorkspace ws, int batch)
    {
        int last = _model.Config.Depth - 1;
        _model.Blocks[last].ForwardCls(_kernels, ws.BlockInput[last], ws.BlockInput[last + 1], ws.Blocks[last], ws.LastBlockCls, batch, _model.Config.Tokens);
        ws.LastBlockRanClsOnly = true;
    }

    /// <summary>
    /// From ws.DLogits (set by a loss) back to the first edited block, after a <see cref="ForwardFrom"/> on the same batch:
    /// the edited weights' gradients (selected units overwritten; whole matrices accumulated). No other gradient is computed.
    /// </summary>
    public void Backward(VitWorkspace ws, int batch)
    {
        CheckBatch(ws, batch);
        var c = _model.Config;
        _model.UsePlan(_plan);
        var wants = _model.WantsDelegate;
        _model.HeadBackward(ws, batch);

        int last = c.Depth - 1;
        int t = c.Tokens;
        var s = ws.BlockScratch;
        _model.Blocks[last].BackwardCls(_kernels, ws.BlockInput[last], ws.Blocks[last], ws.LastBlockCls, ws.DClsRaw, ws.DResidual, s,
            batch, t, wants, needInputGrad: last > _first, this);
        if (last == _first) return;

        for (int i = last - 1; i >= _first; i--)
        {
            if (i == _first && _firstCached) FirstBlockBackward(ws, batch);
            else _model.Blocks[i].Backward(ws.BlockInput[i], ws.Blocks[i], ws.DResidual, s, batch, t, wants, needInputGrad: i > _first, this);
        }
    }

    /// <summary>
    /// After a full forward of the blocks below the last one with the current weights: base and the compact buffers of the
    /// first block's MLP for the current selection, when it can be cached (see the class summary).
    /// </summary>
    private void CacheFirstBlock(VitWorkspace ws, int batch)
    {
        _firstCached = false;
        var c = _model.Config;
        int last = c.Depth - 1;
        if (_first == last) return;   // the last block has its own [CLS]-only path
        int[]? s1 = _firstFc1 >= 0 ? _selected[_firstFc1] : [], s2 = _firstFc2 >= 0 ? _selected[_firstFc2] : [];
        if (s1 is null || s2 is null) return;   // whole matrices (FT): every hidden unit changes
        var a = ws.Blocks[_first];
        if (a.Fc1PerSample is not null || a.Fc2PerSample is not null) return;
        var be = _be;
        var blk = _model.Blocks[_first];
        int rows = batch * c.Tokens, d = c.EmbedDim, h = c.MlpHidden;
        // U = S1 ∪ S2, sorted, and where S1's and S2's units sit in it (allocated per edit, not per step).
        _union = s1.Union(s2).Order().ToArray();
        _s1InUnion = s1.Select(j => Array.BinarySearch(_union, j)).ToArray();
        _s2InUnion = s2.Select(j => Array.BinarySearch(_union, j)).ToArray();
        int u = _union.Length, k1 = s1.Length, k2 = s2.Length;
        Scratch(ref _base, "edit.first.base", (long)rows * d);
        Scratch(ref _gU, "edit.first.gelu.union", (long)rows * u);
        Scratch(ref _h1, "edit.first.fc1.selected", (long)rows * k1);
        Scratch(ref _g1, "edit.first.gelu.selected", (long)rows * k1);
        Scratch(ref _dh1, "edit.first.fc1.selected.grad", (long)rows * k1);
        Scratch(ref _g2, "edit.first.gelu.fc2", (long)rows * k2);
        Scratch(ref _w1s, "edit.first.fc1.rows", (long)k1 * d);
        Scratch(ref _w2u, "edit.first.fc2.columns", (long)d * u);
        Scratch(ref _w2s1, "edit.first.fc2.columns.fc1", (long)d * k1);
        Scratch(ref _b1s, "edit.first.fc1.bias", k1);
        // base = out₀ − gelu(h₀_U)·W2₀[:, U]ᵀ: the block's output without the units that can change.
        be.Copy(ws.BlockInput[_first + 1], 0, _base!, 0, (long)rows * d);
        if (u > 0)
        {
            _kernels.GatherColumns(a.Gelu, rows, h, _union, _gU!);
            _kernels.GatherColumns(blk.Fc2Weight.Value, d, h, _union, _w2u!);
            be.Gemm(false, true, rows, d, u, -1f, _gU!, 0, u, _w2u!, 0, u, 1f, _base!, 0, d);
        }
        // h_S1 of the original forward, for a backward before the next forward; b1 is not edited.
        if (k1 > 0) _kernels.GatherColumns(a.Fc1, rows, h, s1, _h1!);
        if (k1 > 0 && blk.Fc1Bias is not null) _kernels.GatherColumns(blk.Fc1Bias.Value, 1, h, s1, _b1s!);
        _firstBatch = batch;
        _firstCached = true;
    }

    /// <summary>The first edited block's output from its cache: h of the S1 units, out = base + gelu(h_U)·W2[:, U]ᵀ.</summary>
    private void FirstBlockForward(VitWorkspace ws, int batch)
    {
        var c = _model.Config;
        var be = _be;
        var blk = _model.Blocks[_first];
        var a = ws.Blocks[_first];
        var output = ws.BlockInput[_first + 1];
        int rows = batch * c.Tokens, d = c.EmbedDim, h = c.MlpHidden, u = _union.Length, k1 = _s1InUnion.Length;
        be.Copy(_base!, 0, output, 0, (long)rows * d);
        if (u == 0) return;
        if (k1 > 0)
        {
            // h_S1 = ln2·W1[S1, :]ᵀ + b1[S1] (ln2 unchanged: cached by the original forward), into U's columns of gelu(h_U).
            _kernels.GatherRows(blk.Fc1Weight.Value, _selected[_firstFc1]!, d, _w1s!);
            be.Gemm(false, true, rows, k1, d, 1f, a.Ln2, 0, d, _w1s!, 0, d, 0f, _h1!, 0, k1);
            if (blk.Fc1Bias is not null) be.AddBias(_h1!, _b1s!, rows, k1);
            be.GeluForward(_h1!, _g1!, (long)rows * k1);
            _kernels.ScatterColumns(_g1!, rows, _s1InUnion, u, _gU!);
        }
        _kernels.GatherColumns(blk.Fc2Weight.Value, d, h, _union, _w2u!);
        be.Gemm(false, true, rows, d, u, 1f, _gU!, 0, u, _w2u!, 0, u, 1f, output, 0, d);
    }

    /// <summary>
    /// The first edited block's backward from ws.DResidual (the gradient of its output) after <see cref="FirstBlockForward"/>:
    /// the selected units' weight gradients only (overwritten), as the gather-GEMM would give them; no input gradient.
    /// </summary>
    private void FirstBlockBackward(VitWorkspace ws, int batch)
    {
        var c = _model.Config;
        var be = _be;
        var blk = _model.Blocks[_first];
        var a = ws.Blocks[_first];
        var dOut = ws.DResidual;
        int rows = batch * c.Tokens, d = c.EmbedDim, h = c.MlpHidden, u = _union.Length, k1 = _s1InUnion.Length, k2 = _s2InUnion.Length;
        if (k2 > 0)
        {
            // fc2 [dim, hidden]: dW[:, j] = Σ_r dOut[r, :]ᵀ·gelu(h_j)[r] for j ∈ S2.
            _kernels.GatherColumns(_gU!, rows, u, _s2InUnion, _g2!);
            var dw2 = CompactGradients ? UnitGradient(_firstFc2) : _compact;
            be.Gemm(true, false, d, k2, rows, 1f, dOut, 0, d, _g2!, 0, k2, 0f, dw2, 0, k2);
            if (!CompactGradients) _kernels.ScatterColumns(_compact, d, _selected[_firstFc2]!, h, blk.Fc2Weight.Grad);
        }
        if (k1 > 0)
        {
            // fc1 [hidden, dim]: dh_j = gelu'(h_j)·(dOut·W2[:, j]), dW[j, :] = Σ_r dh_j[r]·ln2[r, :] for j ∈ S1.
            var s1 = _selected[_firstFc1]!;
            // W2[:, S1] from the forward's compact W2[:, U] (unchanged since): no second pass over the strided columns of W2.
            _kernels.GatherColumns(_w2u!, d, u, _s1InUnion, _w2s1!);
            be.Gemm(false, false, rows, k1, d, 1f, dOut, 0, d, _w2s1!, 0, k1, 0f, _dh1!, 0, k1);
            be.GeluBackward(_h1!, _dh1!, _dh1!, (long)rows * k1);
            var dw1 = CompactGradients ? UnitGradient(_firstFc1) : _compact;
            be.Gemm(true, false, k1, d, rows, 1f, _dh1!, 0, k1, a.Ln2, 0, d, 0f, dw1, 0, d);
            if (!CompactGradients) _kernels.ScatterRows(_compact, s1, d, blk.Fc1Weight.Grad);
        }
    }

    /// <summary>Unit i's compact gradient buffer, grown to its selection (kept across steps and edits).</summary>
    private Tensor UnitGradient(int unit)
    {
        long length = (long)_selected[unit]!.Length * _model.Config.EmbedDim;
        var t = _unitGrads[unit];
        if (t is null || t.Length < Math.Max(1, length)) Scratch(ref _unitGrads[unit], $"edit.compact.grad.{unit}", length);   // the name only then: steps allocate nothing
        return _unitGrads[unit]!;
    }

    private void Scratch(ref Tensor? t, string name, long length)
    {
        if (t is not null && t.Length >= Math.Max(1, length)) return;
        t?.Dispose();
        t = _be.Allocate(name, checked((int)Math.Max(1, length)));
    }

    /// <summary>The gather-GEMM for a unit with selected hidden units (see the class summary).</summary>
    bool IWeightGradients.TryWeightGradient(Parameter weight, Tensor dy, Tensor x, int rows, int inFeatures, int outFeatures)
    {
        int unit = -1;
        for (int i = 0; i < _weights.Length; i++)
            if (ReferenceEquals(_weights[i], weight)) { unit = i; break; }
        if (unit < 0) return false;
        var selected = _selected[unit];
        if (selected is null) return false;
        int k = selected.Length;
        if (k == 0) return true;
        var dw = CompactGradients ? UnitGradient(unit) : _compact;
        if (_axes[unit] == MaskAxis.Rows)
        {
            // fc1 [hidden, dim]: dW[j, :] = Σ_r dy[r, j]·x[r, :] for the selected j.
            _kernels.GatherColumns(dy, rows, outFeatures, selected, _gathered);
            _be.Gemm(true, false, k, inFeatures, rows, 1f, _gathered, 0, k, x, 0, inFeatures, 0f, dw, 0, inFeatures);
            if (!CompactGradients) _kernels.ScatterRows(_compact, selected, inFeatures, weight.Grad);
        }
        else
        {
            // fc2 [dim, hidden]: dW[:, j] = Σ_r dy[r, :]ᵀ·x[r, j] for the selected j.
            _kernels.GatherColumns(x, rows, inFeatures, selected, _gathered);
            _be.Gemm(true, false, outFeatures, k, rows, 1f, dy, 0, outFeatures, _gathered, 0, k, 0f, dw, 0, k);
            if (!CompactGradients) _kernels.ScatterColumns(_compact, outFeatures, selected, inFeatures, weight.Grad);
        }
        return true;
    }

    private void CheckBatch(VitWorkspace ws, int batch)
    {
        ArgumentNullException.ThrowIfNull(ws);
        if (ws.Config != _model.Config) throw new ArgumentException("the workspace was created for a different ViT config");
        if (batch <= 0 || batch > Math.Min(Capacity, ws.Capacity))
            throw new ArgumentOutOfRangeException(nameof(batch), batch, $"batch must be in [1, {Math.Min(Capacity, ws.Capacity)}]");
    }

    public void Dispose()
    {
        _gathered.Dispose();
        _compact.Dispose();
        foreach (var t in new[] { _base, _gU, _h1, _g1, _dh1, _g2, _w1s, _w2u, _w2s1, _b1s }.Concat(_unitGrads)) t?.Dispose();
    }
}

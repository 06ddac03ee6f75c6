using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Models;

/// <summary>
/// The forward from the first edited block and the truncated backward of an edit, without the work whose result the
/// loss never reads: the last block runs for the [CLS] row only (its other tokens only feed keys and values: K and V
/// are computed for every token, everything after the attention for [CLS] alone, forward and backward), and the
/// weight gradient of a masked matrix is computed for its selected hidden units only — a gather-GEMM over the
/// selected columns of dy (fc1, row mask) or x (fc2, column mask), scattered into the selected rows or columns of the
/// gradient. Only the gradients of the edited fc1/fc2 weights are computed; the gradient outside the selected units
/// is left as it was (the masked optimizer step never reads it). Needs a backend with <see cref="IEditKernels"/>;
/// buffers are allocated once per capacity, steps allocate nothing.
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
    // The last block's [CLS] rows: activations and gradients, [capacity, ·].
    private readonly Tensor _attnOut, _probs, _mid, _ln2, _ln2Mean, _ln2Rstd, _fc1, _gelu, _out, _dMid, _dTemp, _dHidden;
    // Gather-GEMM scratch: the gathered columns [rows, K ≤ hidden] and the compact gradient [K·dim].
    private readonly Tensor _gathered, _compact;

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
        }
        _plan = BackwardOptions.Truncated(firstBlock, units.Select(u => u.Parameter));
        int d = c.EmbedDim, h = c.MlpHidden;
        Capacity = capacity;
        _attnOut = _be.Allocate("edit.cls.attn.out", capacity, d);
        _probs = _be.Allocate("edit.cls.attn.probs", capacity, c.NumHeads, c.Tokens);
        _mid = _be.Allocate("edit.cls.mid", capacity, d);
        _ln2 = _be.Allocate("edit.cls.ln2", capacity, d);
        _ln2Mean = _be.Allocate("edit.cls.ln2.mean", capacity);
        _ln2Rstd = _be.Allocate("edit.cls.ln2.rstd", capacity);
        _fc1 = _be.Allocate("edit.cls.fc1", capacity, h);
        _gelu = _be.Allocate("edit.cls.gelu", capacity, h);
        _out = _be.Allocate("edit.cls.out", capacity, d);
        _dMid = _be.Allocate("edit.cls.mid.grad", capacity, d);
        _dTemp = _be.Allocate("edit.cls.temp.grad", capacity, d);
        _dHidden = _be.Allocate("edit.cls.hidden.grad", capacity, h);
        _gathered = _be.Allocate("edit.gathered", capacity * c.Tokens, h);
        _compact = _be.Allocate("edit.compact.grad", h, d);
    }

    public int Capacity { get; }

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
    }

    /// <summary>Embeddings and blocks below the first edited one, then <see cref="ForwardFrom"/>: the cache later steps restart from.</summary>
    public void Forward(VitWorkspace ws, Tensor images, int batch)
    {
        CheckBatch(ws, batch);
        _model.ForwardUpTo(ws, images, batch, _first);
        ForwardFrom(ws, batch);
    }

    /// <summary>
    /// What <see cref="Forward"/> gives, when ws already holds the model's full forward (<see cref="VitModel.Forward"/>) of
    /// these images with the current weights (the mask's forward): blocks below the last one ran the same code on the
    /// same inputs, so only the last block's [CLS] rows and the head run.
    /// </summary>
    public void ForwardFromFullForward(VitWorkspace ws, int batch)
    {
        CheckBatch(ws, batch);
        if (ws.CachedBatch != batch)
            throw new InvalidOperationException($"edit forward (batch {batch}): the workspace holds a forward for batch {ws.CachedBatch}");
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
            _model.Blocks[i].Forward(ws.BlockInput[i], ws.BlockInput[i + 1], ws.Blocks[i], batch, c.Tokens);
        LastBlockForward(ws, batch);
        _model.Head(ws, batch);
    }

    private void LastBlockForward(VitWorkspace ws, int batch)
    {
        var c = _model.Config;
        var be = _be;
        var blk = _model.Blocks[c.Depth - 1];
        var a = ws.Blocks[c.Depth - 1];
        var x = ws.BlockInput[c.Depth - 1];
        int t = c.Tokens, d = c.EmbedDim, h = c.MlpHidden, rows = batch * t;
        be.LayerNormForward(x, blk.Norm1Weight.Value, blk.Norm1Bias.Value, a.Ln1, a.Ln1Mean, a.Ln1Rstd, rows, d, blk.Eps);
        // k, v of every token (columns d..3d of qkv), q of [CLS] only.
        be.Gemm(false, true, rows, 2 * d, d, 1f, a.Ln1, 0, d, blk.QkvWeight.Value, (long)d * d, d, 0f, a.Qkv, d, 3 * d);
        be.Gemm(false, true, batch, d, d, 1f, a.Ln1, 0, t * d, blk.QkvWeight.Value, 0, d, 0f, a.Qkv, 0, 3 * t * d);
        if (blk.QkvBias is not null)
        {
            be.CopyRows(blk.QkvBias.Value, d, 0, a.Qkv, d, 3 * d, rows, 2 * d, accumulate: true);
            be.CopyRows(blk.QkvBias.Value, 0, 0, a.Qkv, 0, 3 * t * d, batch, d, accumulate: true);
        }
        _kernels.ClsAttentionForward(a.Qkv, _attnOut, _probs, batch, t, blk.Heads, blk.HeadDim);
        TransformerBlock.Linear(be, _attnOut, blk.ProjWeight, blk.ProjBias, _mid, batch, d, d);
        be.CopyRows(x, 0, t * d, _mid, 0, d, batch, d, accumulate: true);
        be.LayerNormForward(_mid, blk.Norm2Weight.Value, blk.Norm2Bias.Value, _ln2, _ln2Mean, _ln2Rstd, batch, d, blk.Eps);
        TransformerBlock.Linear(be, _ln2, blk.Fc1Weight, blk.Fc1Bias, _fc1, batch, d, h);
        be.GeluForward(_fc1, _gelu, (long)batch * h);
        TransformerBlock.Linear(be, _gelu, blk.Fc2Weight, blk.Fc2Bias, _out, batch, h, d);
        be.Add(_out, _mid, _out, (long)batch * d);
        be.CopyRows(_out, 0, d, ws.BlockInput[c.Depth], 0, t * d, batch, d, accumulate: false);
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

        // The last block, [CLS] rows only: out = mid + fc2(gelu(fc1(ln2(mid)))), mid = x + proj(attn(ln1(x))).
        var be = _be;
        int last = c.Depth - 1;
        var blk = _model.Blocks[last];
        var a = ws.Blocks[last];
        var x = ws.BlockInput[last];
        var s = ws.BlockScratch;
        int t = c.Tokens, d = c.EmbedDim, h = c.MlpHidden, rows = batch * t;
        TransformerBlock.LinearBackward(be, ws.DClsRaw, _gelu, blk.Fc2Weight, blk.Fc2Bias, _dHidden, batch, h, d, wants, this);
        be.GeluBackward(_fc1, _dHidden, _dHidden, (long)batch * h);
        TransformerBlock.LinearBackward(be, _dHidden, _ln2, blk.Fc1Weight, blk.Fc1Bias, _dTemp, batch, d, h, wants, this);
        if (last == _first) return;
        be.Copy(ws.DClsRaw, 0, _dMid, 0, (long)batch * d);
        be.LayerNormBackward(_dTemp, _mid, blk.Norm2Weight.Value, _ln2Mean, _ln2Rstd, _dMid, null, null, batch, d, accumulateDx: true);
        TransformerBlock.LinearBackward(be, _dMid, _attnOut, blk.ProjWeight, blk.ProjBias, _dTemp, batch, d, d, wants, this);
        _kernels.ClsAttentionBackward(_dTemp, a.Qkv, _probs, s.DQkv, batch, t, blk.Heads, blk.HeadDim);
        // d ln1 = dqkv·Wqkv: the k, v part for every token, the q part for [CLS] only.
        be.Gemm(false, false, rows, d, 2 * d, 1f, s.DQkv, d, 3 * d, blk.QkvWeight.Value, (long)d * d, d, 0f, s.DTemp, 0, d);
        be.Gemm(false, false, batch, d, d, 1f, s.DQkv, 0, 3 * t * d, blk.QkvWeight.Value, 0, d, 1f, s.DTemp, 0, t * d);
        be.Fill(ws.DResidual, 0f);
        be.CopyRows(_dMid, 0, d, ws.DResidual, 0, t * d, batch, d, accumulate: false);
        be.LayerNormBackward(s.DTemp, x, blk.Norm1Weight.Value, a.Ln1Mean, a.Ln1Rstd, ws.DResidual, null, null, rows, d, accumulateDx: true);

        for (int i = last - 1; i >= _first; i--)
            _model.Blocks[i].Backward(ws.BlockInput[i], ws.Blocks[i], ws.DResidual, s, batch, t, wants, needInputGrad: i > _first, this);
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
        if (_axes[unit] == MaskAxis.Rows)
        {
            // fc1 [hidden, dim]: dW[j, :] = Σ_r dy[r, j]·x[r, :] for the selected j.
            _kernels.GatherColumns(dy, rows, outFeatures, selected, _gathered);
            _be.Gemm(true, false, k, inFeatures, rows, 1f, _gathered, 0, k, x, 0, inFeatures, 0f, _compact, 0, inFeatures);
            _kernels.ScatterRows(_compact, selected, inFeatures, weight.Grad);
        }
        else
        {
            // fc2 [dim, hidden]: dW[:, j] = Σ_r dy[r, :]ᵀ·x[r, j] for the selected j.
            _kernels.GatherColumns(x, rows, inFeatures, selected, _gathered);
            _be.Gemm(true, false, outFeatures, k, rows, 1f, dy, 0, outFeatures, _gathered, 0, k, 0f, _compact, 0, k);
            _kernels.ScatterColumns(_compact, outFeatures, selected, inFeatures, weight.Grad);
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
        foreach (var t in new[] { _attnOut, _probs, _mid, _ln2, _ln2Mean, _ln2Rstd, _fc1, _gelu, _out, _dMid, _dTemp, _dHidden, _gathered, _compact })
            t.Dispose();
    }
}

using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends;

/// <summary>
/// Optional ops of a backend that let an edit skip work (see <see cref="Models.EditPass"/>): gathers and scatters of
/// selected rows or columns (weight gradients for the masked hidden units only, a gather-GEMM) and the attention of
/// the [CLS] query alone (the last block, whose other tokens the loss never reads). A backend without them runs the
/// full edit path.
/// </summary>
public interface IEditKernels
{
    /// <summary>dst[r, i] = src[r·ld + columns[i]] for r &lt; rows; dst is [rows, columns.Length], contiguous.</summary>
    void GatherColumns(Tensor src, int rows, int ld, ReadOnlySpan<int> columns, Tensor dst);

    /// <summary>dst[i·cols + c] = src[rowIndex[i]·cols + c]: the selected rows of a [*, cols] matrix as a compact [K, cols] one.</summary>
    void GatherRows(Tensor src, ReadOnlySpan<int> rowIndex, int cols, Tensor dst);

    /// <summary>dst[rowIndex[i]·cols + c] = src[i·cols + c]: the rows of a compact [K, cols] matrix into a [*, cols] one.</summary>
    void ScatterRows(Tensor src, ReadOnlySpan<int> rowIndex, int cols, Tensor dst);

    /// <summary>dst[r·ld + columns[i]] = src[r·K + i] for r &lt; rows: the columns of a compact [rows, K] matrix into a [rows, ld] one.</summary>
    void ScatterColumns(Tensor src, int rows, ReadOnlySpan<int> columns, int ld, Tensor dst);

    /// <summary>
    /// <see cref="IBackend.RmsPropStep"/> (no weight decay) on the selected rows (<see cref="MaskAxis.Rows"/>) or columns
    /// (<see cref="MaskAxis.Columns"/>) of param [rows, cols], from a compact gradient and a compact state: [K, cols] or
    /// [rows, K] for K = units.Length (units sorted). The same operations per element as the masked
    /// <see cref="IBackend.RmsPropStep"/> on the full-size gradient and state, so the same parameter bits, without
    /// scattering the gradient or touching the state outside the selection.
    /// </summary>
    void CompactRmsPropStep(Tensor param, Tensor compactGrad, Tensor compactSquareAvg, ReadOnlySpan<int> units, MaskAxis axis,
                            int rows, int cols, float lr, float alpha, float eps);

    /// <summary>
    /// <see cref="IBackend.AttentionForward"/> for the [CLS] query (token 0) only: output [batch, heads·headDim] (one row per
    /// sample), probs [batch, heads, tokens] = softmax(q₀·kᵀ/√headDim). qkv is read for q of token 0 and k, v of every token.
    /// </summary>
    void ClsAttentionForward(Tensor qkv, Tensor output, Tensor probs, int batch, int tokens, int heads, int headDim);

    /// <summary>
    /// The backward of <see cref="ClsAttentionForward"/>: from doutput [batch, heads·headDim] writes dq of token 0 and dk, dv
    /// of every token into dqkv [batch, tokens, 3·heads·headDim]; dq of the other tokens is left as it was (it is zero).
    /// </summary>
    void ClsAttentionBackward(Tensor doutput, Tensor qkv, Tensor probs, Tensor dqkv, int batch, int tokens, int heads, int headDim);
}

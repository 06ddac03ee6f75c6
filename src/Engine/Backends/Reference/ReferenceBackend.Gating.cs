using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Reference;

// Per-sample gated weights W'_b = W + g_b ⊙ Δ_b (gates on rows for fc1, on columns for fc2) and the gradient that
// reaches the gates through that product.
internal sealed partial class ReferenceBackend
{
    public void GatedCombine(Tensor weight, Tensor gates, long gatesOffset, long gatesStride, Tensor delta, Tensor output,
                             int batch, int rows, int cols, MaskAxis axis)
    {
        int length = OpChecks.GateLength(axis, rows, cols, "gated combine");
        if (batch <= 0 || rows <= 0 || cols <= 0) throw new ArgumentException($"gated combine: batch {batch}, rows {rows}, cols {cols} must be positive");
        long matrix = (long)rows * cols;
        float[] W = D(weight, matrix, "gated-combine weight"), Delta = D(delta, batch * matrix, "gated-combine delta");
        float[] Out = D(output, batch * matrix, "gated-combine output"), G = D(gates, "gated-combine gates");
        OpChecks.Gates(gates, gatesOffset, gatesStride, batch, length, "gated-combine gates");
        for (int b = 0; b < batch; b++)
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++)
                {
                    float g = G[gatesOffset + b * gatesStride + (axis == MaskAxis.Rows ? r : c)];
                    long at = b * matrix + (long)r * cols + c;
                    Out[at] = W[(long)r * cols + c] + g * Delta[at];
                }
    }

    // ∂L/∂g_b[j] = Σ over row j (Rows) or column j (Columns) of ∂L/∂W'_b ⊙ Δ_b, plus the addend.
    public void GateGradient(Tensor dweights, Tensor delta, Tensor output, long outputOffset, long outputStride,
                             int batch, int rows, int cols, MaskAxis axis, float addend)
    {
        int length = OpChecks.GateLength(axis, rows, cols, "gate gradient");
        if (batch <= 0 || rows <= 0 || cols <= 0) throw new ArgumentException($"gate gradient: batch {batch}, rows {rows}, cols {cols} must be positive");
        long matrix = (long)rows * cols;
        float[] dW = D(dweights, batch * matrix, "gate-gradient weight gradient"), Delta = D(delta, batch * matrix, "gate-gradient delta");
        float[] Out = D(output, "gate-gradient output");
        OpChecks.Gates(output, outputOffset, outputStride, batch, length, "gate-gradient output");
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < length; j++)
            {
                double sum = 0;
                int count = axis == MaskAxis.Rows ? cols : rows;
                for (int i = 0; i < count; i++)
                {
                    long at = b * matrix + (axis == MaskAxis.Rows ? (long)j * cols + i : (long)i * cols + j);
                    sum += (double)dW[at] * Delta[at];
                }
                Out[outputOffset + b * outputStride + j] = (float)(addend + sum);
            }
    }
}

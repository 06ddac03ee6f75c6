namespace WhereToEdit.Engine.Tensors;

/// <summary>Argument checks shared by every backend, so CPU and GPU refuse the same calls with the same messages.</summary>
internal static class OpChecks
{
    /// <summary>
    /// Validates the sizes and the three operands of <see cref="IBackend.Gemm"/>; false when there is nothing to do
    /// (m, n or batch is 0). Messages are formatted only on failure (no allocation per call).
    /// </summary>
    public static bool Gemm(bool transA, bool transB, int m, int n, int k, Tensor a, long aOffset, int lda, Tensor b, long bOffset, int ldb,
                            Tensor c, long cOffset, int ldc, int batch, long strideA, long strideB, long strideC)
    {
        if (m < 0 || n < 0 || k < 0 || batch < 0)
            throw new ArgumentException($"GEMM sizes must be non-negative: m={m}, n={n}, k={k}, batch={batch}");
        if (m == 0 || n == 0 || batch == 0) return false;
        GemmOperand(a, aOffset, lda, transA ? k : m, transA ? m : k, batch, strideA, "A");
        GemmOperand(b, bOffset, ldb, transB ? n : k, transB ? k : n, batch, strideB, "B");
        GemmOperand(c, cOffset, ldc, m, n, batch, strideC, "C");
        return true;
    }

    private static void GemmOperand(Tensor t, long offset, int ld, int rows, int cols, int batch, long stride, string role)
    {
        if (ld < Math.Max(1, cols))
            throw new ArgumentException($"GEMM {role} ('{t.Name}'): leading dimension {ld} < {cols} columns");
        if (rows == 0 || cols == 0) return;
        long extent = (long)(rows - 1) * ld + cols + (long)(batch - 1) * stride;
        if (offset < 0 || offset + extent > t.Length)
            t.ExpectRange(offset, extent, $"GEMM {role} ({rows}×{cols}, ld {ld}, batch {batch})");
    }

    /// <summary>Gates per sample of a gated op: rows for <see cref="MaskAxis.Rows"/>, columns for <see cref="MaskAxis.Columns"/>.</summary>
    public static int GateLength(MaskAxis axis, int rows, int cols, string op) => axis switch
    {
        MaskAxis.Rows => rows,
        MaskAxis.Columns => cols,
        _ => throw new ArgumentException($"{op}: the gate axis must be Rows or Columns, not {axis}"),
    };

    /// <summary>batch strided runs of length values starting at offset must lie inside the tensor.</summary>
    public static void Gates(Tensor gates, long offset, long stride, int batch, int length, string role)
    {
        if (offset < 0 || stride < 0) throw new ArgumentException($"{role} ('{gates.Name}'): offset {offset} and stride {stride} must be non-negative");
        long extent = (batch - 1) * stride + length;
        if (offset + extent > gates.Length)
            gates.ExpectRange(offset, extent, $"{role} ({batch} samples of {length}, stride {stride})");
    }
}

using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Reference;

// GEMM and the linear layer's bias ops.
internal sealed partial class ReferenceBackend
{
    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha,
                     Tensor a, long aOffset, int lda, Tensor b, long bOffset, int ldb,
                     float beta, Tensor c, long cOffset, int ldc,
                     int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0)
    {
        if (!OpChecks.Gemm(transA, transB, m, n, k, a, aOffset, lda, b, bOffset, ldb, c, cOffset, ldc, batch, strideA, strideB, strideC)) return;
        float[] A = D(a, "GEMM A"), B = D(b, "GEMM B"), C = D(c, "GEMM C");
        for (int item = 0; item < batch; item++)
        {
            long a0 = aOffset + item * strideA, b0 = bOffset + item * strideB, c0 = cOffset + item * strideC;
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double sum = 0;
                    for (int p = 0; p < k; p++)
                    {
                        float aip = transA ? A[a0 + (long)p * lda + i] : A[a0 + (long)i * lda + p];   // op(A)[i, p]
                        float bpj = transB ? B[b0 + (long)j * ldb + p] : B[b0 + (long)p * ldb + j];   // op(B)[p, j]
                        sum += (double)aip * bpj;
                    }
                    long at = c0 + (long)i * ldc + j;
                    // BLAS semantics: with beta = 0, C is written without being read (it may hold NaN).
                    C[at] = beta == 0 ? (float)(alpha * sum) : (float)(alpha * sum + (double)beta * C[at]);
                }
        }
    }

    public void AddBias(Tensor y, Tensor bias, int rows, int cols)
    {
        float[] Y = D(y, (long)rows * cols, "bias-add output"), bs = D(bias, cols, "bias");
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                Y[(long)r * cols + c] += bs[c];
    }

    public void BiasGradient(Tensor dy, Tensor dbias, int rows, int cols)
    {
        float[] g = D(dy, (long)rows * cols, "bias-gradient input"), db = D(dbias, cols, "bias gradient");
        for (int c = 0; c < cols; c++)
        {
            double sum = 0;
            for (int r = 0; r < rows; r++) sum += g[(long)r * cols + c];
            db[c] = (float)(db[c] + sum);
        }
    }
}

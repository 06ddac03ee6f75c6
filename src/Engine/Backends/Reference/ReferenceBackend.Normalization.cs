using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Reference;

// LayerNorm forward/backward and the row softmax.
internal sealed partial class ReferenceBackend
{
    public void LayerNormForward(Tensor x, Tensor gamma, Tensor beta, Tensor y, Tensor mean, Tensor rstd, int rows, int cols, float eps)
    {
        long n = (long)rows * cols;
        float[] X = D(x, n, "LayerNorm input"), Y = D(y, n, "LayerNorm output");
        float[] G = D(gamma, cols, "LayerNorm weight"), B = D(beta, cols, "LayerNorm bias");
        float[] M = D(mean, rows, "LayerNorm mean"), R = D(rstd, rows, "LayerNorm rstd");
        for (int r = 0; r < rows; r++)
        {
            long row = (long)r * cols;
            double mu = 0;
            for (int c = 0; c < cols; c++) mu += X[row + c];
            mu /= cols;
            double variance = 0;   // biased, like torch
            for (int c = 0; c < cols; c++) variance += (X[row + c] - mu) * (X[row + c] - mu);
            variance /= cols;
            double rs = 1 / Math.Sqrt(variance + eps);
            M[r] = (float)mu;
            R[r] = (float)rs;
            for (int c = 0; c < cols; c++) Y[row + c] = (float)((X[row + c] - mu) * rs * G[c] + B[c]);
        }
    }

    // With x̂ = (x − mean)·rstd and dx̂ = dy·gamma: dx = rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)); dgamma += Σ_rows dy·x̂;
    // dbeta += Σ_rows dy. The saved mean and rstd are used as given.
    public void LayerNormBackward(Tensor dy, Tensor x, Tensor gamma, Tensor mean, Tensor rstd,
                                  Tensor dx, Tensor? dgamma, Tensor? dbeta, int rows, int cols, bool accumulateDx)
    {
        long n = (long)rows * cols;
        float[] dY = D(dy, n, "LayerNorm output gradient"), X = D(x, n, "LayerNorm input"), dX = D(dx, n, "LayerNorm input gradient");
        float[] G = D(gamma, cols, "LayerNorm weight"), M = D(mean, rows, "LayerNorm mean"), R = D(rstd, rows, "LayerNorm rstd");
        float[]? dG = dgamma is null ? null : D(dgamma, cols, "LayerNorm weight gradient");
        float[]? dB = dbeta is null ? null : D(dbeta, cols, "LayerNorm bias gradient");
        for (int r = 0; r < rows; r++)
        {
            long row = (long)r * cols;
            double meanDxhat = 0, meanDxhatXhat = 0;
            for (int c = 0; c < cols; c++)
            {
                double xhat = (X[row + c] - (double)M[r]) * R[r], dxhat = (double)dY[row + c] * G[c];
                meanDxhat += dxhat;
                meanDxhatXhat += dxhat * xhat;
            }
            meanDxhat /= cols;
            meanDxhatXhat /= cols;
            for (int c = 0; c < cols; c++)
            {
                double xhat = (X[row + c] - (double)M[r]) * R[r], dxhat = (double)dY[row + c] * G[c];
                float value = (float)(R[r] * (dxhat - meanDxhat - xhat * meanDxhatXhat));
                dX[row + c] = accumulateDx ? dX[row + c] + value : value;
            }
        }
        for (int c = 0; c < cols; c++)
        {
            double sumDyXhat = 0, sumDy = 0;
            for (int r = 0; r < rows; r++)
            {
                long at = (long)r * cols + c;
                sumDyXhat += dY[at] * ((X[at] - (double)M[r]) * R[r]);
                sumDy += dY[at];
            }
            if (dG is not null) dG[c] = (float)(dG[c] + sumDyXhat);
            if (dB is not null) dB[c] = (float)(dB[c] + sumDy);
        }
    }

    public void Softmax(Tensor x, Tensor y, int rows, int cols, float temperature = 1f)
    {
        if (!(temperature > 0) || float.IsInfinity(temperature))
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "softmax temperature must be positive and finite");
        long n = (long)rows * cols;
        float[] X = D(x, n, "softmax input"), Y = D(y, n, "softmax output");
        for (int r = 0; r < rows; r++) SoftmaxRow(X, Y, (long)r * cols, cols, temperature);
    }

    /// <summary>y[at..at+cols) = softmax(x[at..at+cols) / T), shifted by the row max for range; x and y may be the same array.</summary>
    private static void SoftmaxRow(float[] x, float[] y, long at, int cols, double temperature)
    {
        double max = double.NegativeInfinity;
        for (int c = 0; c < cols; c++) max = Math.Max(max, x[at + c]);
        double sum = 0;
        for (int c = 0; c < cols; c++) sum += Math.Exp((x[at + c] - max) / temperature);
        for (int c = 0; c < cols; c++) y[at + c] = (float)(Math.Exp((x[at + c] - max) / temperature) / sum);
    }
}

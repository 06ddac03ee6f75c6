using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Reference;

// Elementwise ops: add, axpy, the L1 penalty's subgradient, exact GELU and the clamped sigmoid.
internal sealed partial class ReferenceBackend
{
    public void Add(Tensor a, Tensor b, Tensor y, long n)
    {
        float[] A = D(a, n, "add input a"), B = D(b, n, "add input b"), Y = D(y, n, "add output");
        for (long i = 0; i < n; i++) Y[i] = A[i] + B[i];
    }

    public void Axpy(float alpha, Tensor x, Tensor y, long n)
    {
        float[] X = D(x, n, "axpy input"), Y = D(y, n, "axpy output");
        for (long i = 0; i < n; i++) Y[i] += alpha * X[i];
    }

    public void L1PenaltyGradient(Tensor grad, Tensor w, Tensor w0, float c, long n)
    {
        float[] g = D(grad, n, "L1 penalty gradient"), W = D(w, n, "L1 penalty weights"), W0 = D(w0, n, "L1 penalty original weights");
        for (long i = 0; i < n; i++)
        {
            float diff = W[i] - W0[i];
            if (diff > 0) g[i] += c;
            else if (diff < 0) g[i] -= c;   // sign(0) = 0: an unmoved weight gets no push
        }
    }

    // GELU(x) = x·Φ(x), Φ the standard normal CDF, evaluated in double from erf.
    public void GeluForward(Tensor x, Tensor y, long n)
    {
        float[] X = D(x, n, "GELU input"), Y = D(y, n, "GELU output");
        for (long i = 0; i < n; i++) Y[i] = (float)(X[i] * NormalCdf(X[i]));
    }

    // GELU'(x) = Φ(x) + x·φ(x), φ the standard normal density.
    public void GeluBackward(Tensor x, Tensor dy, Tensor dx, long n)
    {
        float[] X = D(x, n, "GELU input"), dY = D(dy, n, "GELU output gradient"), dX = D(dx, n, "GELU input gradient");
        for (long i = 0; i < n; i++)
        {
            double xi = X[i];
            dX[i] = (float)(dY[i] * (NormalCdf(xi) + xi * NormalDensity(xi)));
        }
    }

    internal static double NormalCdf(double x) => 0.5 * (1 + Erf(x / Math.Sqrt(2)));

    internal static double NormalDensity(double x) => Math.Exp(-0.5 * x * x) / Math.Sqrt(2 * Math.PI);

    /// <summary>
    /// erf(z) = 2/√π · e^(−z²) · Σ_n 2ⁿ z^(2n+1) / (1·3·5···(2n+1)) — a series of positive terms (no cancellation),
    /// summed until the terms stop mattering; beyond |z| = 6, erf is ±1 to double precision.
    /// </summary>
    internal static double Erf(double z)
    {
        if (double.IsNaN(z)) return double.NaN;
        double a = Math.Abs(z);
        if (a >= 6) return Math.Sign(z);
        double term = a, sum = a;
        for (int n = 1; term > 1e-17 * sum; n++)
        {
            term *= 2 * a * a / (2 * n + 1);
            sum += term;
        }
        return Math.Sign(z) * 2 / Math.Sqrt(Math.PI) * Math.Exp(-a * a) * sum;
    }

    // y = clamp(σ(scale·x), lo, hi).
    public void SigmoidForward(Tensor x, Tensor y, long n, float scale, float lo, float hi)
    {
        float[] X = D(x, n, "sigmoid input"), Y = D(y, n, "sigmoid output");
        for (long i = 0; i < n; i++)
        {
            float s = 1f / (1f + MathF.Exp(-scale * X[i]));
            Y[i] = Math.Clamp(s, lo, hi);
        }
    }

    // The clamp passes no gradient where it was active (y on a bound); inside, σ' = scale·y·(1 − y).
    public void SigmoidBackward(Tensor y, Tensor dy, Tensor dx, long n, float scale, float lo, float hi)
    {
        float[] Y = D(y, n, "sigmoid output"), dY = D(dy, n, "sigmoid output gradient"), dX = D(dx, n, "sigmoid input gradient");
        for (long i = 0; i < n; i++)
        {
            float s = Y[i];
            dX[i] = s > lo && s < hi ? dY[i] * scale * s * (1f - s) : 0f;
        }
    }
}

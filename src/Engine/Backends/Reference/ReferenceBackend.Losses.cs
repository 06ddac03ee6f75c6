using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Reference;

// Cross-entropy, temperature-scaled KL distillation and binary cross-entropy, each with its gradient.
internal sealed partial class ReferenceBackend
{
    /// <summary>log Σ_c exp(x[at + c] / T), shifted by the row max.</summary>
    private static double LogSumExp(float[] x, long at, int cols, double temperature)
    {
        double max = double.NegativeInfinity;
        for (int c = 0; c < cols; c++) max = Math.Max(max, x[at + c]);
        double sum = 0;
        for (int c = 0; c < cols; c++) sum += Math.Exp((x[at + c] - max) / temperature);
        return max / temperature + Math.Log(sum);
    }

    // loss = −log softmax(z)[label]; dz = gradScale·(softmax(z) − onehot(label)).
    public void CrossEntropy(Tensor logits, Tensor labels, Tensor losses, Tensor? dlogits, int rows, int classes, float gradScale)
    {
        float[] Z = D(logits, (long)rows * classes, "logits"), Y = D(labels, rows, "labels"), L = D(losses, rows, "losses");
        float[]? dZ = dlogits is null ? null : D(dlogits, (long)rows * classes, "logit gradient");
        for (int r = 0; r < rows; r++)
        {
            float label = Y[r];
            int target = (int)label;
            if (target != label || target < 0 || target >= classes)
                throw new ArgumentOutOfRangeException(nameof(labels), $"tensor '{labels.Name}': label {label} at row {r} is not a class index in [0, {classes})");
            long at = (long)r * classes;
            double logSumExp = LogSumExp(Z, at, classes, 1);
            L[r] = (float)(logSumExp - Z[at + target]);
            if (dZ is null) continue;
            for (int c = 0; c < classes; c++)
                dZ[at + c] = (float)(gradScale * (Math.Exp(Z[at + c] - logSumExp) - (c == target ? 1 : 0)));
        }
    }

    // loss = T²·Σ_c p·(log p − log q), q = softmax(z/T), 0·log 0 = 0; dz = gradScale·T·(q − p).
    public void KlDivergence(Tensor logits, Tensor targetProbs, Tensor losses, Tensor? dlogits, int rows, int classes, float temperature, float gradScale)
    {
        if (!(temperature > 0) || float.IsInfinity(temperature))
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "KL temperature must be positive and finite");
        float[] Z = D(logits, (long)rows * classes, "logits"), P = D(targetProbs, (long)rows * classes, "target probabilities"), L = D(losses, rows, "losses");
        float[]? dZ = dlogits is null ? null : D(dlogits, (long)rows * classes, "logit gradient");
        double t = temperature;
        for (int r = 0; r < rows; r++)
        {
            long at = (long)r * classes;
            double logSumExp = LogSumExp(Z, at, classes, t);
            double kl = 0;
            for (int c = 0; c < classes; c++)
            {
                double p = P[at + c], logQ = Z[at + c] / t - logSumExp;
                if (p > 0) kl += p * (Math.Log(p) - logQ);
                if (dZ is not null) dZ[at + c] = (float)(gradScale * t * (Math.Exp(logQ) - p));
            }
            L[r] = (float)(t * t * kl);
        }
    }

    // torch's binary_cross_entropy, reduction 'mean', times scale; logs clamped at −100; dp = scale·(p − y)/max(p(1 − p), 1e-12)/n.
    public void BinaryCrossEntropy(Tensor probs, Tensor targets, Tensor loss, Tensor? dprobs, long n, float scale)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n), n, "binary cross-entropy needs at least one element");
        float[] P = D(probs, n, "BCE probabilities"), Y = D(targets, n, "BCE targets"), L = D(loss, 1, "BCE loss");
        float[]? dP = dprobs is null ? null : D(dprobs, n, "BCE gradient");
        double sum = 0;
        for (long i = 0; i < n; i++)
        {
            double p = P[i], y = Y[i];
            double logP = Math.Max(Math.Log(p), -100), log1mP = Math.Max(Math.Log(1 - p), -100);
            sum -= y * logP + (1 - y) * log1mP;
            if (dP is not null) dP[i] = (float)(scale * (p - y) / Math.Max(p * (1 - p), 1e-12) / n);
        }
        L[0] = (float)(scale * sum / n);
    }
}

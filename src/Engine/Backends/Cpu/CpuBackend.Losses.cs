using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Cpu;

// Cross-entropy and temperature-scaled KL distillation, each computing loss and logit gradient in one pass;
// binary cross-entropy (the hypernetwork's distillation loss) with torch's log clamp.
public sealed unsafe partial class CpuBackend
{
    public void CrossEntropy(Tensor logits, Tensor labels, Tensor losses, Tensor? dlogits, int rows, int classes, float gradScale)
    {
        Need(logits, (long)rows * classes, "logits"); Need(labels, rows, "labels"); Need(losses, rows, "losses");
        if (dlogits is not null) Need(dlogits, (long)rows * classes, "logit gradient");
        float[] z = Cpu(logits, "logits").Data, y = Cpu(labels, "labels").Data, l = Cpu(losses, "losses").Data;
        float[]? dz = dlogits is null ? null : Cpu(dlogits, "dlogits").Data;
        for (int r = 0; r < rows; r++)
        {
            float label = y[r];
            int target = (int)label;
            if (target != label || target < 0 || target >= classes)
                throw new ArgumentOutOfRangeException(nameof(labels), $"tensor '{labels.Name}': label {label} at row {r} is not a class index in [0, {classes})");
            var row = z.AsSpan(r * classes, classes);
            float max = TensorPrimitives.Max(row);
            double sum = 0;
            foreach (float v in row) sum += Math.Exp(v - max);
            float logSumExp = max + (float)Math.Log(sum);
            l[r] = logSumExp - row[target];
            if (dz is not null)
            {
                var g = dz.AsSpan(r * classes, classes);
                for (int c = 0; c < classes; c++) g[c] = MathF.Exp(row[c] - logSumExp) * gradScale;
                g[target] -= gradScale;
            }
        }
    }

    public void KlDivergence(Tensor logits, Tensor targetProbs, Tensor losses, Tensor? dlogits, int rows, int classes, float temperature, float gradScale)
    {
        if (!(temperature > 0) || float.IsInfinity(temperature))
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "KL temperature must be positive and finite");
        Need(logits, (long)rows * classes, "logits"); Need(targetProbs, (long)rows * classes, "target probabilities"); Need(losses, rows, "losses");
        if (dlogits is not null) Need(dlogits, (long)rows * classes, "logit gradient");
        float[] z = Cpu(logits, "logits").Data, pt = Cpu(targetProbs, "targets").Data, l = Cpu(losses, "losses").Data;
        float[]? dz = dlogits is null ? null : Cpu(dlogits, "dlogits").Data;
        float invT = 1f / temperature, t2 = temperature * temperature;
        for (int r = 0; r < rows; r++)
        {
            var row = z.AsSpan(r * classes, classes);
            var p = pt.AsSpan(r * classes, classes);
            float max = TensorPrimitives.Max(row);
            double sum = 0;
            foreach (float v in row) sum += Math.Exp((v - max) * invT);
            float logSumExp = (float)Math.Log(sum);
            double kl = 0;
            for (int c = 0; c < classes; c++)
            {
                float logQ = (row[c] - max) * invT - logSumExp;
                if (p[c] > 0) kl += p[c] * (Math.Log(p[c]) - logQ);   // 0·log 0 = 0, as torch.kl_div
                if (dz is not null) dz[r * classes + c] = gradScale * temperature * (MathF.Exp(logQ) - p[c]);
            }
            l[r] = (float)(t2 * kl);
        }
    }

    private double[] _bcePartials = [];

    /// <summary>Elements per work item of the BCE sum: partial sums are per fixed block, then added in block order.</summary>
    private const int BceBlock = 4096;

    private struct BceArgs { public float* P, Y, D; public double* Partials; public long N; public float GradFactor; }

    public void BinaryCrossEntropy(Tensor probs, Tensor targets, Tensor loss, Tensor? dprobs, long n, float scale)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n), n, "binary cross-entropy needs at least one element");
        Need(probs, n, "BCE probabilities"); Need(targets, n, "BCE targets"); Need(loss, 1, "BCE loss");
        if (dprobs is not null) Need(dprobs, n, "BCE gradient");
        int blocks = checked((int)((n + BceBlock - 1) / BceBlock));
        if (_bcePartials.Length < blocks) _bcePartials = new double[blocks];
        float[] d = dprobs is null ? [] : Cpu(dprobs, "dprobs").Data;
        fixed (float* pp = Cpu(probs, "probs").Data, py = Cpu(targets, "targets").Data, pd = d)
        fixed (double* partials = _bcePartials)
        {
            var args = new BceArgs { P = pp, Y = py, D = dprobs is null ? null : pd, Partials = partials, N = n, GradFactor = (float)(scale / (double)n) };
            _pool.For(blocks, 1, &args, &BceChunk);
        }
        double sum = 0;
        for (int i = 0; i < blocks; i++) sum += _bcePartials[i];
        Cpu(loss, "loss").Data[0] = (float)(scale * sum / n);
    }

    private static void BceChunk(void* p, int start, int end)
    {
        ref var a = ref *(BceArgs*)p;
        for (int block = start; block < end; block++)
        {
            long from = (long)block * BceBlock, to = Math.Min(a.N, from + BceBlock);
            double sum = 0;
            for (long i = from; i < to; i++)
            {
                float x = a.P[i], y = a.Y[i];
                float logX = Math.Max(MathF.Log(x), -100f), log1mX = Math.Max(MathF.Log(1f - x), -100f);
                sum -= y * logX + (1f - y) * log1mX;
                if (a.D is not null) a.D[i] = a.GradFactor * (x - y) / Math.Max(x * (1f - x), 1e-12f);
            }
            a.Partials[block] = sum;
        }
    }
}

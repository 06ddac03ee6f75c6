using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Cpu;

// Cross-entropy and temperature-scaled KL distillation, each computing loss and logit gradient in one pass.
public sealed partial class CpuBackend
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
}

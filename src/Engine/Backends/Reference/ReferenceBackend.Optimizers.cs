using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Reference;

// SGD, RMSprop and Adam/AdamW with torch.optim's formulas, one element at a time, in float like torch. A row or
// column mask limits the step: elements outside it, and their optimizer state, are never written.
internal sealed partial class ReferenceBackend
{
    public void SgdStep(Tensor param, Tensor grad, float lr, float weightDecay, UpdateMask mask)
    {
        float[] p = D(param, "parameter"), g = Same(grad, param, "gradient");
        foreach (long i in Updated(param, mask))
        {
            float gi = g[i] + weightDecay * p[i];
            p[i] -= lr * gi;
        }
    }

    public void RmsPropStep(Tensor param, Tensor grad, Tensor squareAvg, float lr, float alpha, float eps, float weightDecay, UpdateMask mask)
    {
        float[] p = D(param, "parameter"), g = Same(grad, param, "gradient"), v = Same(squareAvg, param, "optimizer state");
        foreach (long i in Updated(param, mask))
        {
            float gi = g[i] + weightDecay * p[i];
            v[i] = alpha * v[i] + (1 - alpha) * gi * gi;
            p[i] -= lr * gi / (MathF.Sqrt(v[i]) + eps);
        }
    }

    public void AdamStep(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
                         float weightDecay, bool decoupled, int step, UpdateMask mask)
    {
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), step, "Adam step count is 1-based");
        float[] p = D(param, "parameter"), g = Same(grad, param, "gradient");
        float[] m1 = Same(m, param, "optimizer state"), v2 = Same(v, param, "optimizer state");
        // Bias corrections of the step'th update.
        double correction1 = 1 - Math.Pow(beta1, step), correction2 = 1 - Math.Pow(beta2, step);
        foreach (long i in Updated(param, mask))
        {
            float gi = g[i];
            if (decoupled) p[i] *= 1 - lr * weightDecay;   // AdamW: decay the weight itself
            else gi += weightDecay * p[i];                  // Adam: L2 term in the gradient
            m1[i] = beta1 * m1[i] + (1 - beta1) * gi;
            v2[i] = beta2 * v2[i] + (1 - beta2) * gi * gi;
            double denominator = Math.Sqrt(v2[i]) / Math.Sqrt(correction2) + eps;
            p[i] = (float)(p[i] - lr / correction1 * m1[i] / denominator);
        }
    }

    /// <summary>The array of a tensor that must have the parameter's shape (gradient, optimizer state).</summary>
    private static float[] Same(Tensor t, Tensor param, string role)
    {
        t.ExpectShape(param.Shape);
        return D(t, role);
    }

    /// <summary>Flat indices an optimizer step may write: all, or those of the rows/columns whose mask entry is non-zero.</summary>
    private static IEnumerable<long> Updated(Tensor param, UpdateMask mask)
    {
        if (mask.Axis == MaskAxis.None)
        {
            for (long i = 0; i < param.Length; i++) yield return i;
            yield break;
        }
        if ((long)mask.Rows * mask.Cols != param.Length)
            throw new ArgumentException($"mask for '{param.Name}' {param.ShapeText}: given as {mask.Rows}×{mask.Cols}");
        if (mask.Mask is null) throw new ArgumentException($"mask for '{param.Name}': {mask.Axis} mask without a mask tensor");
        int length = mask.Axis == MaskAxis.Rows ? mask.Rows : mask.Cols;
        if (mask.Mask.Length != length)
            throw new ArgumentException($"mask '{mask.Mask.Name}' for '{param.Name}' {param.ShapeText}: expected {length} {mask.Axis.ToString().ToLowerInvariant()} entries, got {mask.Mask.Length}");
        float[] keep = D(mask.Mask, "mask");
        for (int r = 0; r < mask.Rows; r++)
            for (int c = 0; c < mask.Cols; c++)
                if (keep[mask.Axis == MaskAxis.Rows ? r : c] != 0) yield return (long)r * mask.Cols + c;
    }
}

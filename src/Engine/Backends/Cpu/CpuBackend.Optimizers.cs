using System.Numerics;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Cpu;

// SGD, RMSprop and Adam/AdamW steps with torch.optim semantics, optionally restricted to a row or column
// mask. Elements outside the mask, and their optimizer state, are never written.
public sealed partial class CpuBackend
{
    private int[] _maskIndices = [];

    private enum Rule { Sgd, RmsProp, Adam }

    private readonly struct StepParams
    {
        public Rule Rule { get; init; }
        public float Lr { get; init; }
        public float WeightDecay { get; init; }
        public float Alpha { get; init; }       // RMSprop smoothing
        public float Beta1 { get; init; }
        public float Beta2 { get; init; }
        public float Eps { get; init; }
        public bool Decoupled { get; init; }
        public float StepSize { get; init; }    // Adam: lr / (1 − β1^t)
        public float SqrtBias2 { get; init; }   // Adam: √(1 − β2^t)
    }

    public void SgdStep(Tensor param, Tensor grad, float lr, float weightDecay, UpdateMask mask)
        => Step(param, grad, null, null, mask, new StepParams { Rule = Rule.Sgd, Lr = lr, WeightDecay = weightDecay });

    public void RmsPropStep(Tensor param, Tensor grad, Tensor squareAvg, float lr, float alpha, float eps, float weightDecay, UpdateMask mask)
        => Step(param, grad, squareAvg, null, mask, new StepParams { Rule = Rule.RmsProp, Lr = lr, Alpha = alpha, Eps = eps, WeightDecay = weightDecay });

    public void AdamStep(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
                         float weightDecay, bool decoupled, int step, UpdateMask mask)
    {
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), step, "Adam step count is 1-based");
        Step(param, grad, m, v, mask, new StepParams
        {
            Rule = Rule.Adam, Lr = lr, Beta1 = beta1, Beta2 = beta2, Eps = eps, WeightDecay = weightDecay, Decoupled = decoupled,
            StepSize = (float)(lr / (1 - Math.Pow(beta1, step))), SqrtBias2 = (float)Math.Sqrt(1 - Math.Pow(beta2, step)),
        });
    }

    private void Step(Tensor param, Tensor grad, Tensor? state1, Tensor? state2, UpdateMask mask, in StepParams sp)
    {
        long n = param.Length;
        grad.ExpectShape(param.Shape);
        if (state1 is not null) state1.ExpectShape(param.Shape);
        if (state2 is not null) state2.ExpectShape(param.Shape);
        float[] p = Cpu(param, "parameter").Data, g = Cpu(grad, "gradient").Data;
        float[] s1 = state1 is null ? [] : Cpu(state1, "optimizer state").Data;
        float[] s2 = state2 is null ? [] : Cpu(state2, "optimizer state").Data;
        switch (mask.Axis)
        {
            case MaskAxis.None:
                Update(p, g, s1, s2, 0, (int)n, sp);
                break;
            case MaskAxis.Rows:
            {
                float[] rowMask = CheckMask(param, mask, mask.Rows);
                for (int r = 0; r < mask.Rows; r++)
                    if (rowMask[r] != 0) Update(p, g, s1, s2, r * mask.Cols, mask.Cols, sp);
                break;
            }
            case MaskAxis.Columns:
            {
                float[] colMask = CheckMask(param, mask, mask.Cols);
                int count = 0;
                if (_maskIndices.Length < mask.Cols) _maskIndices = new int[mask.Cols];
                for (int c = 0; c < mask.Cols; c++)
                    if (colMask[c] != 0) _maskIndices[count++] = c;
                for (int r = 0; r < mask.Rows; r++)
                {
                    int rowStart = r * mask.Cols;
                    for (int i = 0; i < count; i++) UpdateOne(p, g, s1, s2, rowStart + _maskIndices[i], sp);
                }
                break;
            }
        }
    }

    private static float[] CheckMask(Tensor param, UpdateMask mask, int length)
    {
        if ((long)mask.Rows * mask.Cols != param.Length)
            throw new ArgumentException($"mask for '{param.Name}' {param.ShapeText}: given as {mask.Rows}×{mask.Cols}");
        if (mask.Mask is null) throw new ArgumentException($"mask for '{param.Name}': {mask.Axis} mask without a mask tensor");
        if (mask.Mask.Length != length)
            throw new ArgumentException($"mask '{mask.Mask.Name}' for '{param.Name}' {param.ShapeText}: expected {length} {mask.Axis.ToString().ToLowerInvariant()} entries, got {mask.Mask.Length}");
        return Cpu(mask.Mask, "mask").Data;
    }

    // Dense update of [start, start + count): Vector<float> body, identical scalar arithmetic in the tail.
    private static void Update(float[] p, float[] g, float[] s1, float[] s2, int start, int count, in StepParams sp)
    {
        int i = start, end = start + count;
        int width = Vector<float>.Count;
        switch (sp.Rule)
        {
            case Rule.Sgd:
                for (; i + width <= end; i += width)
                {
                    var pv = new Vector<float>(p, i);
                    var gv = new Vector<float>(g, i) + pv * sp.WeightDecay;
                    (pv - gv * sp.Lr).CopyTo(p, i);
                }
                break;
            case Rule.RmsProp:
                for (; i + width <= end; i += width)
                {
                    var pv = new Vector<float>(p, i);
                    var gv = new Vector<float>(g, i) + pv * sp.WeightDecay;
                    var v = new Vector<float>(s1, i) * sp.Alpha + gv * gv * (1f - sp.Alpha);
                    v.CopyTo(s1, i);
                    (pv - gv * sp.Lr / (Vector.SquareRoot(v) + new Vector<float>(sp.Eps))).CopyTo(p, i);
                }
                break;
            case Rule.Adam:
                for (; i + width <= end; i += width)
                {
                    var pv = new Vector<float>(p, i);
                    var gv = new Vector<float>(g, i);
                    if (sp.Decoupled) pv *= 1f - sp.Lr * sp.WeightDecay;
                    else gv += pv * sp.WeightDecay;
                    var m = new Vector<float>(s1, i) * sp.Beta1 + gv * (1f - sp.Beta1);
                    var v = new Vector<float>(s2, i) * sp.Beta2 + gv * gv * (1f - sp.Beta2);
                    m.CopyTo(s1, i);
                    v.CopyTo(s2, i);
                    (pv - m * sp.StepSize / (Vector.SquareRoot(v) / sp.SqrtBias2 + new Vector<float>(sp.Eps))).CopyTo(p, i);
                }
                break;
        }
        for (; i < end; i++) UpdateOne(p, g, s1, s2, i, sp);
    }

    private static void UpdateOne(float[] p, float[] g, float[] s1, float[] s2, int i, in StepParams sp)
    {
        float pv = p[i], gv = g[i];
        switch (sp.Rule)
        {
            case Rule.Sgd:
                gv += pv * sp.WeightDecay;
                p[i] = pv - gv * sp.Lr;
                break;
            case Rule.RmsProp:
            {
                gv += pv * sp.WeightDecay;
                float v = s1[i] * sp.Alpha + gv * gv * (1f - sp.Alpha);
                s1[i] = v;
                p[i] = pv - gv * sp.Lr / (MathF.Sqrt(v) + sp.Eps);
                break;
            }
            case Rule.Adam:
            {
                if (sp.Decoupled) pv *= 1f - sp.Lr * sp.WeightDecay;
                else gv += pv * sp.WeightDecay;
                float m = s1[i] * sp.Beta1 + gv * (1f - sp.Beta1);
                float v = s2[i] * sp.Beta2 + gv * gv * (1f - sp.Beta2);
                s1[i] = m;
                s2[i] = v;
                p[i] = pv - m * sp.StepSize / (MathF.Sqrt(v) / sp.SqrtBias2 + sp.Eps);
                break;
            }
        }
    }
}

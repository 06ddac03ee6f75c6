using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Reference;

// Multi-head self-attention: S = q·kᵀ/√d, P = softmax(S), O = P·v per (sample, head), and its backward.
internal sealed partial class ReferenceBackend
{
    /// <summary>Index of qkv[b, t, part, h, i] in timm's layout [batch, tokens, 3, heads, headDim] (part 0 = q, 1 = k, 2 = v).</summary>
    private static long QkvIndex(int b, int t, int part, int h, int i, int tokens, int heads, int headDim)
        => (((long)b * tokens + t) * 3 + part) * heads * headDim + (long)h * headDim + i;

    /// <summary>Index of out[b, t, h·headDim + i] in [batch, tokens, heads·headDim].</summary>
    private static long OutIndex(int b, int t, int h, int i, int tokens, int heads, int headDim)
        => ((long)b * tokens + t) * heads * headDim + (long)h * headDim + i;

    public void AttentionForward(Tensor qkv, Tensor output, Tensor probs, int batch, int tokens, int heads, int headDim)
    {
        long dim = (long)heads * headDim;
        float[] Q = D(qkv, batch * tokens * 3 * dim, "attention qkv"), O = D(output, batch * tokens * dim, "attention output");
        float[] P = D(probs, (long)batch * heads * tokens * tokens, "attention probabilities");
        double scale = 1 / Math.Sqrt(headDim);
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
            {
                long pBase = ((long)b * heads + h) * tokens * tokens;
                for (int t = 0; t < tokens; t++)
                {
                    // Scores of query t against every key, then softmax in place.
                    for (int s = 0; s < tokens; s++)
                    {
                        double dot = 0;
                        for (int i = 0; i < headDim; i++)
                            dot += (double)Q[QkvIndex(b, t, 0, h, i, tokens, heads, headDim)] * Q[QkvIndex(b, s, 1, h, i, tokens, heads, headDim)];
                        P[pBase + (long)t * tokens + s] = (float)(dot * scale);
                    }
                    SoftmaxRow(P, P, pBase + (long)t * tokens, tokens, 1);
                    for (int i = 0; i < headDim; i++)
                    {
                        double sum = 0;
                        for (int s = 0; s < tokens; s++)
                            sum += (double)P[pBase + (long)t * tokens + s] * Q[QkvIndex(b, s, 2, h, i, tokens, heads, headDim)];
                        O[OutIndex(b, t, h, i, tokens, heads, headDim)] = (float)sum;
                    }
                }
            }
    }

    // dV = Pᵀ·dO; dP = dO·Vᵀ; dS = P ⊙ (dP − rowsum(P ⊙ dP)); dQ = scale·dS·K; dK = scale·dSᵀ·Q.
    public void AttentionBackward(Tensor doutput, Tensor qkv, Tensor probs, Tensor dqkv, int batch, int tokens, int heads, int headDim)
    {
        long dim = (long)heads * headDim;
        float[] dO = D(doutput, batch * tokens * dim, "attention output gradient"), Q = D(qkv, batch * tokens * 3 * dim, "attention qkv");
        float[] P = D(probs, (long)batch * heads * tokens * tokens, "attention probabilities"), dQ = D(dqkv, batch * tokens * 3 * dim, "attention qkv gradient");
        double scale = 1 / Math.Sqrt(headDim);
        var dS = new double[tokens, tokens];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
            {
                long pBase = ((long)b * heads + h) * tokens * tokens;
                double Prob(int t, int s) => P[pBase + (long)t * tokens + s];
                for (int t = 0; t < tokens; t++)
                {
                    double rowDot = 0;
                    for (int s = 0; s < tokens; s++)
                    {
                        double dp = 0;
                        for (int i = 0; i < headDim; i++)
                            dp += (double)dO[OutIndex(b, t, h, i, tokens, heads, headDim)] * Q[QkvIndex(b, s, 2, h, i, tokens, heads, headDim)];
                        dS[t, s] = dp;
                        rowDot += Prob(t, s) * dp;
                    }
                    for (int s = 0; s < tokens; s++) dS[t, s] = Prob(t, s) * (dS[t, s] - rowDot);
                }
                for (int t = 0; t < tokens; t++)
                    for (int i = 0; i < headDim; i++)
                    {
                        double dq = 0, dk = 0, dv = 0;
                        for (int s = 0; s < tokens; s++)
                        {
                            dq += dS[t, s] * Q[QkvIndex(b, s, 1, h, i, tokens, heads, headDim)];
                            dk += dS[s, t] * Q[QkvIndex(b, s, 0, h, i, tokens, heads, headDim)];
                            dv += Prob(s, t) * dO[OutIndex(b, s, h, i, tokens, heads, headDim)];
                        }
                        dQ[QkvIndex(b, t, 0, h, i, tokens, heads, headDim)] = (float)(scale * dq);
                        dQ[QkvIndex(b, t, 1, h, i, tokens, heads, headDim)] = (float)(scale * dk);
                        dQ[QkvIndex(b, t, 2, h, i, tokens, heads, headDim)] = (float)dv;
                    }
            }
    }
}

using WhereToEdit.Engine.Backends.Reference;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Tests.Conformance;

/// <summary>The reference backend behind overridable members: tests derive from it to break one op on purpose.</summary>
internal abstract class ForwardingBackend : IBackend
{
    private readonly ReferenceBackend _inner = new();

    public string Name => "forwarding " + _inner.Name;
    public int Threads => 1;
    public void Dispose() => _inner.Dispose();

    public virtual Tensor Allocate(string name, params int[] shape) => _inner.Allocate(name, shape);
    public virtual Tensor FromHost(string name, ReadOnlySpan<float> data, params int[] shape) => _inner.FromHost(name, data, shape);
    public virtual void Fill(Tensor t, float value) => _inner.Fill(t, value);
    public virtual void Copy(Tensor src, long srcOffset, Tensor dst, long dstOffset, long count) => _inner.Copy(src, srcOffset, dst, dstOffset, count);
    public virtual void CopyRows(Tensor src, long srcOffset, int srcStride, Tensor dst, long dstOffset, int dstStride, int rows, int cols, bool accumulate)
        => _inner.CopyRows(src, srcOffset, srcStride, dst, dstOffset, dstStride, rows, cols, accumulate);
    public virtual void Synchronize() => _inner.Synchronize();
    public virtual void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, Tensor a, long aOffset, int lda, Tensor b, long bOffset, int ldb,
                             float beta, Tensor c, long cOffset, int ldc, int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0)
        => _inner.Gemm(transA, transB, m, n, k, alpha, a, aOffset, lda, b, bOffset, ldb, beta, c, cOffset, ldc, batch, strideA, strideB, strideC);
    public virtual void LinearForward(Tensor x, Tensor weight, Tensor? bias, Tensor y, int rows, int inFeatures, int outFeatures)
        => ((IBackend)_inner).LinearForward(x, weight, bias, y, rows, inFeatures, outFeatures);
    public virtual void AddBias(Tensor y, Tensor bias, int rows, int cols) => _inner.AddBias(y, bias, rows, cols);
    public virtual void BiasGradient(Tensor dy, Tensor dbias, int rows, int cols) => _inner.BiasGradient(dy, dbias, rows, cols);
    public virtual void Add(Tensor a, Tensor b, Tensor y, long n) => _inner.Add(a, b, y, n);
    public virtual void Axpy(float alpha, Tensor x, Tensor y, long n) => _inner.Axpy(alpha, x, y, n);
    public virtual void L1PenaltyGradient(Tensor grad, Tensor w, Tensor w0, float c, long n) => _inner.L1PenaltyGradient(grad, w, w0, c, n);
    public virtual void GeluForward(Tensor x, Tensor y, long n) => _inner.GeluForward(x, y, n);
    public virtual void GeluBackward(Tensor x, Tensor dy, Tensor dx, long n) => _inner.GeluBackward(x, dy, dx, n);
    public virtual void SigmoidForward(Tensor x, Tensor y, long n, float scale, float lo, float hi) => _inner.SigmoidForward(x, y, n, scale, lo, hi);
    public virtual void SigmoidBackward(Tensor y, Tensor dy, Tensor dx, long n, float scale, float lo, float hi) => _inner.SigmoidBackward(y, dy, dx, n, scale, lo, hi);
    public virtual void GatedCombine(Tensor weight, Tensor gates, long gatesOffset, long gatesStride, Tensor delta, Tensor output, int batch, int rows, int cols, MaskAxis axis)
        => _inner.GatedCombine(weight, gates, gatesOffset, gatesStride, delta, output, batch, rows, cols, axis);
    public virtual void GateGradient(Tensor dweights, Tensor delta, Tensor output, long outputOffset, long outputStride, int batch, int rows, int cols, MaskAxis axis, float addend)
        => _inner.GateGradient(dweights, delta, output, outputOffset, outputStride, batch, rows, cols, axis, addend);
    public virtual void LayerNormForward(Tensor x, Tensor gamma, Tensor beta, Tensor y, Tensor mean, Tensor rstd, int rows, int cols, float eps)
        => _inner.LayerNormForward(x, gamma, beta, y, mean, rstd, rows, cols, eps);
    public virtual void LayerNormBackward(Tensor dy, Tensor x, Tensor gamma, Tensor mean, Tensor rstd, Tensor dx, Tensor? dgamma, Tensor? dbeta, int rows, int cols, bool accumulateDx)
        => _inner.LayerNormBackward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, rows, cols, accumulateDx);
    public virtual void Softmax(Tensor x, Tensor y, int rows, int cols, float temperature = 1f) => _inner.Softmax(x, y, rows, cols, temperature);
    public virtual void AttentionForward(Tensor qkv, Tensor output, Tensor probs, int batch, int tokens, int heads, int headDim)
        => _inner.AttentionForward(qkv, output, probs, batch, tokens, heads, headDim);
    public virtual void AttentionBackward(Tensor doutput, Tensor qkv, Tensor probs, Tensor dqkv, int batch, int tokens, int heads, int headDim)
        => _inner.AttentionBackward(doutput, qkv, probs, dqkv, batch, tokens, heads, headDim);
    public virtual void Im2Col(Tensor image, Tensor columns, int batch, int channels, int height, int width, int patch)
        => _inner.Im2Col(image, columns, batch, channels, height, width, patch);
    public virtual void Col2Im(Tensor dcolumns, Tensor dimage, int batch, int channels, int height, int width, int patch)
        => _inner.Col2Im(dcolumns, dimage, batch, channels, height, width, patch);
    public virtual void AssembleTokens(Tensor patchTokens, Tensor cls, Tensor pos, Tensor x, int batch, int patches, int dim)
        => _inner.AssembleTokens(patchTokens, cls, pos, x, batch, patches, dim);
    public virtual void AssembleTokensBackward(Tensor dx, Tensor dpatchTokens, Tensor? dcls, Tensor? dpos, int batch, int patches, int dim)
        => _inner.AssembleTokensBackward(dx, dpatchTokens, dcls, dpos, batch, patches, dim);
    public virtual void CrossEntropy(Tensor logits, Tensor labels, Tensor losses, Tensor? dlogits, int rows, int classes, float gradScale)
        => _inner.CrossEntropy(logits, labels, losses, dlogits, rows, classes, gradScale);
    public virtual void KlDivergence(Tensor logits, Tensor targetProbs, Tensor losses, Tensor? dlogits, int rows, int classes, float temperature, float gradScale)
        => _inner.KlDivergence(logits, targetProbs, losses, dlogits, rows, classes, temperature, gradScale);
    public virtual void BinaryCrossEntropy(Tensor probs, Tensor targets, Tensor loss, Tensor? dprobs, long n, float scale)
        => _inner.BinaryCrossEntropy(probs, targets, loss, dprobs, n, scale);
    public virtual void SgdStep(Tensor param, Tensor grad, float lr, float weightDecay, UpdateMask mask) => _inner.SgdStep(param, grad, lr, weightDecay, mask);
    public virtual void RmsPropStep(Tensor param, Tensor grad, Tensor squareAvg, float lr, float alpha, float eps, float weightDecay, UpdateMask mask)
        => _inner.RmsPropStep(param, grad, squareAvg, lr, alpha, eps, weightDecay, mask);
    public virtual void AdamStep(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps, float weightDecay, bool decoupled, int step, UpdateMask mask)
        => _inner.AdamStep(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, decoupled, step, mask);
}

namespace WhereToEdit.Engine.Tensors;

/// <summary>Which rows or columns of a weight matrix [rows, cols] an optimizer step may touch.</summary>
public enum MaskAxis
{
    /// <summary>Every element is updated.</summary>
    None,
    /// <summary>mask[rows]: row r is updated iff mask[r] != 0 (fc1 of an edited MLP: input weights of hidden neuron r).</summary>
    Rows,
    /// <summary>mask[cols]: column c is updated iff mask[c] != 0 (fc2 of an edited MLP: output weights of hidden neuron c).</summary>
    Columns,
}

/// <summary>
/// A row or column mask for an optimizer step. Elements outside the mask (and their optimizer state)
/// are never written, so they stay bit-identical. Mask values are 0 or 1 (anything non-zero counts as 1).
/// </summary>
public readonly record struct UpdateMask(MaskAxis Axis, Tensor? Mask, int Rows, int Cols)
{
    public static UpdateMask None(long length) => new(MaskAxis.None, null, 1, checked((int)length));
    public static UpdateMask RowMask(Tensor mask, int rows, int cols) => new(MaskAxis.Rows, mask, rows, cols);
    public static UpdateMask ColumnMask(Tensor mask, int rows, int cols) => new(MaskAxis.Columns, mask, rows, cols);
}

/// <summary>
/// The one op interface every backend implements (CPU: managed SIMD + OpenBLAS/managed GEMM; GPU: ILGPU).
/// Conventions: row-major; offsets and sizes in elements; "rows × cols" means a [rows, cols] matrix.
/// Forward ops overwrite their outputs. Backward ops ACCUMULATE (+=) into parameter gradients (the
/// caller zeroes them once per step) and overwrite input gradients unless stated otherwise.
/// Ops are issued in order on one logical stream; <see cref="Synchronize"/> waits for completion.
/// </summary>
public interface IBackend : IDisposable
{
    string Name { get; }

    /// <summary>Worker threads (CPU) or 1 (GPU: one stream).</summary>
    int Threads { get; }

    // ---- memory -------------------------------------------------------------------------------

    /// <summary>A zero-filled tensor.</summary>
    Tensor Allocate(string name, params int[] shape);

    /// <summary>A tensor holding a copy of <paramref name="data"/>.</summary>
    Tensor FromHost(string name, ReadOnlySpan<float> data, params int[] shape);

    void Fill(Tensor t, float value);

    /// <summary>dst[dstOffset + i] = src[srcOffset + i] for i in [0, count).</summary>
    void Copy(Tensor src, long srcOffset, Tensor dst, long dstOffset, long count);

    /// <summary>
    /// Copies (or adds, when <paramref name="accumulate"/>) <paramref name="rows"/> rows of <paramref name="cols"/> elements:
    /// dst[dstOffset + r·dstStride + c] (+)= src[srcOffset + r·srcStride + c]. Gathers the [CLS] rows and scatters their gradient.
    /// A stride may be 0: srcStride 0 broadcasts one row (bias add on strided rows); dstStride 0 with accumulate sums the
    /// rows into one (bias gradient of strided rows) — so implementations parallelise over columns and add rows in order.
    /// </summary>
    void CopyRows(Tensor src, long srcOffset, int srcStride, Tensor dst, long dstOffset, int dstStride, int rows, int cols, bool accumulate);

    void Synchronize();

    // ---- dense linear algebra ------------------------------------------------------------------

    /// <summary>
    /// C[m×n] = alpha·op(A)·op(B) + beta·C, row-major, op(X) = Xᵀ when trans. A is m×k (k×m stored when transA),
    /// B is k×n (n×k stored when transB). Leading dimensions are row strides in elements. Repeated
    /// <paramref name="batch"/> times with the given element strides between consecutive A, B and C matrices.
    /// </summary>
    void Gemm(bool transA, bool transB, int m, int n, int k, float alpha,
              Tensor a, long aOffset, int lda,
              Tensor b, long bOffset, int ldb,
              float beta, Tensor c, long cOffset, int ldc,
              int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0);

    /// <summary>
    /// A linear layer's forward, y[rows, out] = x[rows, in]·W[out, in]ᵀ + bias (bias optional): the same result bits as
    /// <see cref="Gemm"/> then <see cref="AddBias"/>, which is what a backend without a fused version runs.
    /// </summary>
    void LinearForward(Tensor x, Tensor weight, Tensor? bias, Tensor y, int rows, int inFeatures, int outFeatures)
        => GemmThenBias(this, x, weight, bias, y, rows, inFeatures, outFeatures);

    /// <summary>The unfused <see cref="LinearForward"/>: the default, and the fallback of a backend that fuses only some calls.</summary>
    public static void GemmThenBias(IBackend be, Tensor x, Tensor weight, Tensor? bias, Tensor y, int rows, int inFeatures, int outFeatures)
    {
        be.Gemm(false, true, rows, outFeatures, inFeatures, 1f, x, 0, inFeatures, weight, 0, inFeatures, 0f, y, 0, outFeatures);
        if (bias is not null) be.AddBias(y, bias, rows, outFeatures);
    }

    /// <summary>y[r, c] += bias[c].</summary>
    void AddBias(Tensor y, Tensor bias, int rows, int cols);

    /// <summary>dbias[c] += Σ_r dy[r, c].</summary>
    void BiasGradient(Tensor dy, Tensor dbias, int rows, int cols);

    // ---- elementwise ---------------------------------------------------------------------------

    /// <summary>y = a + b over the first n elements.</summary>
    void Add(Tensor a, Tensor b, Tensor y, long n);

    /// <summary>y += alpha·x over the first n elements.</summary>
    void Axpy(float alpha, Tensor x, Tensor y, long n);

    /// <summary>grad += c·sign(w − w0) over the first n elements, sign(0) = 0 (the subgradient of c·‖w − w0‖₁ torch uses).</summary>
    void L1PenaltyGradient(Tensor grad, Tensor w, Tensor w0, float c, long n);

    /// <summary>y = 0.5·x·(1 + erf(x/√2)) (exact GELU).</summary>
    void GeluForward(Tensor x, Tensor y, long n);

    /// <summary>dx = dy·GELU'(x) (overwrites dx).</summary>
    void GeluBackward(Tensor x, Tensor dy, Tensor dx, long n);

    /// <summary>y = clamp(σ(scale·x), lo, hi) with σ the logistic sigmoid (the hypernetwork's mask head).</summary>
    void SigmoidForward(Tensor x, Tensor y, long n, float scale, float lo, float hi);

    /// <summary>dx = dy·scale·y·(1 − y) where lo &lt; y &lt; hi, else 0 (the clamp was active); y is the forward's output.</summary>
    void SigmoidBackward(Tensor y, Tensor dy, Tensor dx, long n, float scale, float lo, float hi);

    // ---- per-sample gated weights (meta-training, method.md §4) ---------------------------------

    /// <summary>
    /// Per-sample gated weights: output[b] = weight + g_b ⊙ delta[b] for b in [0, batch). weight is [rows, cols];
    /// delta and output are [batch, rows, cols] (contiguous). g_b = gates[gatesOffset + b·gatesStride + j]: with
    /// <see cref="MaskAxis.Rows"/> gate j (j &lt; rows) scales row j (fc1), with <see cref="MaskAxis.Columns"/> gate j
    /// (j &lt; cols) scales column j (fc2). <see cref="MaskAxis.None"/> is refused.
    /// </summary>
    void GatedCombine(Tensor weight, Tensor gates, long gatesOffset, long gatesStride, Tensor delta, Tensor output,
                      int batch, int rows, int cols, MaskAxis axis);

    /// <summary>
    /// The gradient reaching the gates through W' = W + g ⊙ delta (the reduction of <see cref="GatedCombine"/>'s
    /// backward): output[outputOffset + b·outputStride + j] = addend + Σ dweights[b]⊙delta[b] over row j
    /// (<see cref="MaskAxis.Rows"/>) or column j (<see cref="MaskAxis.Columns"/>); dweights and delta are
    /// [batch, rows, cols]. Overwrites the output; <paramref name="addend"/> is added to every entry (a penalty's
    /// constant gradient, e.g. λ/numel of λ·mean(g)). Each sum runs in a fixed order (deterministic).
    /// </summary>
    void GateGradient(Tensor dweights, Tensor delta, Tensor output, long outputOffset, long outputStride,
                      int batch, int rows, int cols, MaskAxis axis, float addend);

    // ---- normalisation -------------------------------------------------------------------------

    /// <summary>y = (x − mean)·rstd·gamma + beta per row; saves mean[rows] and rstd[rows] for the backward.</summary>
    void LayerNormForward(Tensor x, Tensor gamma, Tensor beta, Tensor y, Tensor mean, Tensor rstd, int rows, int cols, float eps);

    /// <summary>dx (+)= ∂/∂x, dgamma += Σ dy·x̂, dbeta += Σ dy. dgamma/dbeta may be null (frozen parameters).</summary>
    void LayerNormBackward(Tensor dy, Tensor x, Tensor gamma, Tensor mean, Tensor rstd,
                           Tensor dx, Tensor? dgamma, Tensor? dbeta, int rows, int cols, bool accumulateDx);

    /// <summary>y = softmax(x / temperature) per row.</summary>
    void Softmax(Tensor x, Tensor y, int rows, int cols, float temperature = 1f);

    // ---- attention -----------------------------------------------------------------------------

    /// <summary>
    /// Multi-head self-attention core. qkv: [batch, tokens, 3, heads, headDim] (timm's qkv layout),
    /// output: [batch, tokens, heads·headDim], probs: [batch, heads, tokens, tokens] = softmax(q·kᵀ/√headDim), saved for the backward.
    /// </summary>
    void AttentionForward(Tensor qkv, Tensor output, Tensor probs, int batch, int tokens, int heads, int headDim);

    /// <summary>dqkv (overwritten) from doutput, the saved qkv and probs.</summary>
    void AttentionBackward(Tensor doutput, Tensor qkv, Tensor probs, Tensor dqkv, int batch, int tokens, int heads, int headDim);

    // ---- patch embedding and tokens ------------------------------------------------------------

    /// <summary>
    /// image [batch, channels, height, width] → columns [batch·gridH·gridW, channels·patch·patch], patches in
    /// row-major grid order, each row ordered (channel, ky, kx) like a conv weight [dim, channels, patch, patch].
    /// </summary>
    void Im2Col(Tensor image, Tensor columns, int batch, int channels, int height, int width, int patch);

    /// <summary>Inverse scatter of <see cref="Im2Col"/> (patches do not overlap): dimage is overwritten.</summary>
    void Col2Im(Tensor dcolumns, Tensor dimage, int batch, int channels, int height, int width, int patch);

    /// <summary>x[b, 0] = cls + pos[0]; x[b, 1 + p] = patchTokens[b, p] + pos[1 + p]. x: [batch, 1 + patches, dim].</summary>
    void AssembleTokens(Tensor patchTokens, Tensor cls, Tensor pos, Tensor x, int batch, int patches, int dim);

    /// <summary>dpatchTokens = dx[:, 1:] (overwritten); dcls += Σ_b dx[b, 0]; dpos += Σ_b dx[b]. dcls/dpos may be null.</summary>
    void AssembleTokensBackward(Tensor dx, Tensor dpatchTokens, Tensor? dcls, Tensor? dpos, int batch, int patches, int dim);

    // ---- losses --------------------------------------------------------------------------------

    /// <summary>
    /// Cross-entropy per row: losses[r] = −log softmax(logits[r])[labels[r]] (labels hold class indices as floats).
    /// When dlogits is given it is overwritten with gradScale·(softmax − onehot).
    /// </summary>
    void CrossEntropy(Tensor logits, Tensor labels, Tensor losses, Tensor? dlogits, int rows, int classes, float gradScale);

    /// <summary>
    /// Temperature-scaled distillation KL per row: losses[r] = T²·Σ_c p·(log p − log q), q = softmax(logits/T),
    /// p = targetProbs[r] (already softmax(teacher/T)). dlogits (overwritten when given) = gradScale·T·(q − p).
    /// </summary>
    void KlDivergence(Tensor logits, Tensor targetProbs, Tensor losses, Tensor? dlogits, int rows, int classes, float temperature, float gradScale);

    /// <summary>
    /// torch.nn.functional.binary_cross_entropy with reduction 'mean', scaled: loss[0] = scale·(1/n)·Σ_i
    /// −[y_i·max(log p_i, −100) + (1 − y_i)·max(log(1 − p_i), −100)] over the first n elements (summed in double, in a
    /// fixed order). When dprobs is given it is overwritten with torch's backward: scale·(p − y)/max(p·(1 − p), 1e-12)/n.
    /// </summary>
    void BinaryCrossEntropy(Tensor probs, Tensor targets, Tensor loss, Tensor? dprobs, long n, float scale);

    // ---- optimizers (PyTorch semantics; masked elements and their state are never touched) -----

    /// <summary>p −= lr·(g + weightDecay·p).</summary>
    void SgdStep(Tensor param, Tensor grad, float lr, float weightDecay, UpdateMask mask);

    /// <summary>v = α·v + (1−α)·g², p −= lr·g/(√v + eps) with g = grad + weightDecay·p (torch.optim.RMSprop, centered=false, momentum 0).</summary>
    void RmsPropStep(Tensor param, Tensor grad, Tensor squareAvg, float lr, float alpha, float eps, float weightDecay, UpdateMask mask);

    /// <summary>
    /// torch.optim.Adam (decoupled=false: g += wd·p) or AdamW (decoupled=true: p ·= 1 − lr·wd); <paramref name="step"/> is
    /// the 1-based step count used for bias correction.
    /// </summary>
    void AdamStep(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
                  float weightDecay, bool decoupled, int step, UpdateMask mask);
}

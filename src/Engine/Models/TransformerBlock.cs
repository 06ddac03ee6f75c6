using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Models;

/// <summary>
/// A pre-norm Transformer block — x += attn(norm1(x)); x += mlp(norm2(x)) — with timm's parameter names
/// (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2) under a prefix. Shared by the ViT and the
/// hypernetwork; explicit forward and backward over preallocated <see cref="Activations"/>.
/// </summary>
public sealed class TransformerBlock
{
    /// <summary>What a block's forward saves for its backward, for a batch capacity and token count.</summary>
    public sealed class Activations(IBackend be, string p, int batch, int tokens, int dim, int heads, int hidden)
    {
        public readonly Tensor Ln1 = be.Allocate(p + "ln1", batch * tokens, dim);
        public readonly Tensor Ln1Mean = be.Allocate(p + "ln1.mean", batch * tokens);
        public readonly Tensor Ln1Rstd = be.Allocate(p + "ln1.rstd", batch * tokens);
        public readonly Tensor Qkv = be.Allocate(p + "qkv", batch * tokens, 3 * dim);
        public readonly Tensor Probs = be.Allocate(p + "attn.probs", batch, heads, tokens, tokens);
        public readonly Tensor AttnOut = be.Allocate(p + "attn.out", batch * tokens, dim);
        public readonly Tensor Mid = be.Allocate(p + "mid", batch * tokens, dim);
        public readonly Tensor Ln2 = be.Allocate(p + "ln2", batch * tokens, dim);
        public readonly Tensor Ln2Mean = be.Allocate(p + "ln2.mean", batch * tokens);
        public readonly Tensor Ln2Rstd = be.Allocate(p + "ln2.rstd", batch * tokens);
        public readonly Tensor Fc1 = be.Allocate(p + "fc1", batch * tokens, hidden);
        public readonly Tensor Gelu = be.Allocate(p + "gelu", batch * tokens, hidden);

        /// <summary>Opt-in per-sample weights for mlp.fc1 (null: the shared parameter). See <see cref="PerSampleWeights"/>.</summary>
        public PerSampleWeights? Fc1PerSample { get; set; }

        /// <summary>Opt-in per-sample weights for mlp.fc2 (null: the shared parameter).</summary>
        public PerSampleWeights? Fc2PerSample { get; set; }

        public bool HasPerSampleWeights => Fc1PerSample is not null || Fc2PerSample is not null;

        public IEnumerable<Tensor> All() => [Ln1, Ln1Mean, Ln1Rstd, Qkv, Probs, AttnOut, Mid, Ln2, Ln2Mean, Ln2Rstd, Fc1, Gelu];
    }

    /// <summary>
    /// What <see cref="ForwardCls"/> saves past the attention, for the [CLS] rows only ([batch, ·]), and the gradient
    /// buffers of <see cref="BackwardCls"/>.
    /// </summary>
    public sealed class ClsActivations(IBackend be, string p, int batch, int tokens, int dim, int heads, int hidden)
    {
        public readonly Tensor AttnOut = be.Allocate(p + "cls.attn.out", batch, dim);
        public readonly Tensor Probs = be.Allocate(p + "cls.attn.probs", batch, heads, tokens);
        public readonly Tensor Mid = be.Allocate(p + "cls.mid", batch, dim);
        public readonly Tensor Ln2 = be.Allocate(p + "cls.ln2", batch, dim);
        public readonly Tensor Ln2Mean = be.Allocate(p + "cls.ln2.mean", batch);
        public readonly Tensor Ln2Rstd = be.Allocate(p + "cls.ln2.rstd", batch);
        public readonly Tensor Fc1 = be.Allocate(p + "cls.fc1", batch, hidden);
        public readonly Tensor Gelu = be.Allocate(p + "cls.gelu", batch, hidden);
        public readonly Tensor Out = be.Allocate(p + "cls.out", batch, dim);
        public readonly Tensor DMid = be.Allocate(p + "cls.mid.grad", batch, dim);
        public readonly Tensor DTemp = be.Allocate(p + "cls.temp.grad", batch, dim);
        public readonly Tensor DHidden = be.Allocate(p + "cls.hidden.grad", batch, hidden);

        public IEnumerable<Tensor> All() => [AttnOut, Probs, Mid, Ln2, Ln2Mean, Ln2Rstd, Fc1, Gelu, Out, DMid, DTemp, DHidden];
    }

    /// <summary>Backward scratch shared by all blocks of one model: [rows, dim], [rows, hidden], [rows, 3·dim].</summary>
    public sealed class Scratch(IBackend be, string p, int rows, int dim, int hidden)
    {
        public readonly Tensor DTemp = be.Allocate(p + "temp.grad", rows, dim);
        public readonly Tensor DHidden = be.Allocate(p + "hidden.grad", rows, hidden);
        public readonly Tensor DQkv = be.Allocate(p + "qkv.grad", rows, 3 * dim);

        public IEnumerable<Tensor> All() => [DTemp, DHidden, DQkv];
    }

    public TransformerBlock(IBackend backend, string prefix, int dim, int heads, int hidden, bool qkvBias, float eps, Action<Parameter> register)
    {
        if (dim % heads != 0) throw new ArgumentException($"{prefix}: width {dim} is not divisible by {heads} heads");
        Backend = backend;
        Dim = dim; Heads = heads; Hidden = hidden; Eps = eps;
        Parameter New(string name, params int[] shape)
        {
            var p = new Parameter(backend, prefix + name, shape);
            register(p);
            return p;
        }
        Norm1Weight = New("norm1.weight", dim); Norm1Bias = New("norm1.bias", dim);
        QkvWeight = New("attn.qkv.weight", 3 * dim, dim);
        QkvBias = qkvBias ? New("attn.qkv.bias", 3 * dim) : null;
        ProjWeight = New("attn.proj.weight", dim, dim); ProjBias = New("attn.proj.bias", dim);
        Norm2Weight = New("norm2.weight", dim); Norm2Bias = New("norm2.bias", dim);
        Fc1Weight = New("mlp.fc1.weight", hidden, dim); Fc1Bias = New("mlp.fc1.bias", hidden);
        Fc2Weight = New("mlp.fc2.weight", dim, hidden); Fc2Bias = New("mlp.fc2.bias", dim);
    }

    public IBackend Backend { get; }
    public int Dim { get; }
    public int Heads { get; }
    public int Hidden { get; }
    public float Eps { get; }
    public int HeadDim => Dim / Heads;

    public Parameter Norm1Weight { get; }
    public Parameter Norm1Bias { get; }
    public Parameter QkvWeight { get; }
    public Parameter? QkvBias { get; }
    public Parameter ProjWeight { get; }
    public Parameter ProjBias { get; }
    public Parameter Norm2Weight { get; }
    public Parameter Norm2Bias { get; }
    public Parameter Fc1Weight { get; }
    public Parameter Fc1Bias { get; }
    public Parameter Fc2Weight { get; }
    public Parameter Fc2Bias { get; }

    public IEnumerable<Parameter> AttentionParameters()
    {
        yield return Norm1Weight; yield return Norm1Bias; yield return QkvWeight;
        if (QkvBias is not null) yield return QkvBias;
        yield return ProjWeight; yield return ProjBias;
    }

    public IEnumerable<Parameter> Parameters() =>
        AttentionParameters().Concat([Norm2Weight, Norm2Bias, Fc1Weight, Fc1Bias, Fc2Weight, Fc2Bias]);

    public Activations CreateActivations(string prefix, int batch, int tokens) => new(Backend, prefix, batch, tokens, Dim, Heads, Hidden);

    /// <summary>output = block(x) for x, output: [batch, tokens, dim]; saves activations in <paramref name="a"/>.</summary>
    public void Forward(Tensor x, Tensor output, Activations a, int batch, int tokens)
    {
        var be = Backend;
        int d = Dim, rows = batch * tokens;
        be.LayerNormForward(x, Norm1Weight.Value, Norm1Bias.Value, a.Ln1, a.Ln1Mean, a.Ln1Rstd, rows, d, Eps);
        Linear(be, a.Ln1, QkvWeight, QkvBias, a.Qkv, rows, d, 3 * d);
        be.AttentionForward(a.Qkv, a.AttnOut, a.Probs, batch, tokens, Heads, HeadDim);
        Linear(be, a.AttnOut, ProjWeight, ProjBias, a.Mid, rows, d, d);
        be.Add(a.Mid, x, a.Mid, (long)rows * d);
        be.LayerNormForward(a.Mid, Norm2Weight.Value, Norm2Bias.Value, a.Ln2, a.Ln2Mean, a.Ln2Rstd, rows, d, Eps);
        MlpLinear(be, a.Ln2, Fc1Weight, Fc1Bias, a.Fc1PerSample, a.Fc1, batch, tokens, d, Hidden);
        be.GeluForward(a.Fc1, a.Gelu, (long)rows * Hidden);
        MlpLinear(be, a.Gelu, Fc2Weight, Fc2Bias, a.Fc2PerSample, output, batch, tokens, Hidden, d);
        be.Add(output, a.Mid, output, (long)rows * d);
    }

    /// <summary>
    /// dResidual holds d loss / d output on entry and d loss / d x on return when <paramref name="needInputGrad"/>.
    /// Weight gradients are accumulated for the parameters <paramref name="wants"/> selects; per-sample weights
    /// (<see cref="Activations.Fc1PerSample"/>, <see cref="Activations.Fc2PerSample"/>) always get their gradients,
    /// overwritten. The attention branch is skipped when neither its parameters nor anything below need it.
    /// </summary>
    public void Backward(Tensor x, Activations a, Tensor dResidual, Scratch s, int batch, int tokens,
                         Func<Parameter?, bool> wants, bool needInputGrad, IWeightGradients? weightGradients = null)
    {
        var be = Backend;
        int d = Dim, h = Hidden, rows = batch * tokens;

        // MLP branch: out = mid + fc2(gelu(fc1(ln2(mid)))).
        MlpLinearBackward(be, dResidual, a.Gelu, Fc2Weight, Fc2Bias, a.Fc2PerSample, s.DHidden, batch, tokens, h, d, wants, weightGradients);
        be.GeluBackward(a.Fc1, s.DHidden, s.DHidden, (long)rows * h);
        bool attentionWanted = wants(Norm1Weight) || wants(Norm1Bias) || wants(QkvWeight) || wants(QkvBias) || wants(ProjWeight) || wants(ProjBias);
        bool needMid = needInputGrad || attentionWanted || wants(Norm2Weight) || wants(Norm2Bias);
        MlpLinearBackward(be, s.DHidden, a.Ln2, Fc1Weight, Fc1Bias, a.Fc1PerSample, needMid ? s.DTemp : null, batch, tokens, d, h, wants, weightGradients);
        if (!needMid) return;
        be.LayerNormBackward(s.DTemp, a.Mid, Norm2Weight.Value, a.Ln2Mean, a.Ln2Rstd, dResidual,
            wants(Norm2Weight) ? Norm2Weight.Grad : null, wants(Norm2Bias) ? Norm2Bias.Grad : null, rows, d, accumulateDx: true);
        if (!needInputGrad && !attentionWanted) return;

        // Attention branch: mid = x + proj(attn(qkv(ln1(x)))).
        LinearBackward(be, dResidual, a.AttnOut, ProjWeight, ProjBias, s.DTemp, rows, d, d, wants, weightGradients);
        be.AttentionBackward(s.DTemp, a.Qkv, a.Probs, s.DQkv, batch, tokens, Heads, HeadDim);
        LinearBackward(be, s.DQkv, a.Ln1, QkvWeight, QkvBias, s.DTemp, rows, d, 3 * d, wants, weightGradients);
        be.LayerNormBackward(s.DTemp, x, Norm1Weight.Value, a.Ln1Mean, a.Ln1Rstd, dResidual,
            wants(Norm1Weight) ? Norm1Weight.Grad : null, wants(Norm1Bias) ? Norm1Bias.Grad : null, rows, d, accumulateDx: true);
    }

    /// <summary>
    /// The block for a model whose loss reads only the [CLS] token of this block's output (the last block of a ViT): the
    /// other tokens only feed keys and values, so K and V are computed for every token and everything after the
    /// attention for [CLS] alone (about a sixth of the block's work). Writes the [CLS] rows of <paramref name="output"/>
    /// only. Saves LN1 and qkv in <paramref name="a"/>, the rest in <paramref name="cls"/>.
    /// </summary>
    public void ForwardCls(IEditKernels kernels, Tensor x, Tensor output, Activations a, ClsActivations cls, int batch, int tokens)
    {
        var be = Backend;
        int d = Dim, h = Hidden, rows = batch * tokens;
        be.LayerNormForward(x, Norm1Weight.Value, Norm1Bias.Value, a.Ln1, a.Ln1Mean, a.Ln1Rstd, rows, d, Eps);
        // k, v of every token (columns d..3d of qkv), q of [CLS] only.
        be.Gemm(false, true, rows, 2 * d, d, 1f, a.Ln1, 0, d, QkvWeight.Value, (long)d * d, d, 0f, a.Qkv, d, 3 * d);
        be.Gemm(false, true, batch, d, d, 1f, a.Ln1, 0, tokens * d, QkvWeight.Value, 0, d, 0f, a.Qkv, 0, 3 * tokens * d);
        if (QkvBias is not null)
        {
            be.CopyRows(QkvBias.Value, d, 0, a.Qkv, d, 3 * d, rows, 2 * d, accumulate: true);
            be.CopyRows(QkvBias.Value, 0, 0, a.Qkv, 0, 3 * tokens * d, batch, d, accumulate: true);
        }
        kernels.ClsAttentionForward(a.Qkv, cls.AttnOut, cls.Probs, batch, tokens, Heads, HeadDim);
        Linear(be, cls.AttnOut, ProjWeight, ProjBias, cls.Mid, batch, d, d);
        be.CopyRows(x, 0, tokens * d, cls.Mid, 0, d, batch, d, accumulate: true);
        be.LayerNormForward(cls.Mid, Norm2Weight.Value, Norm2Bias.Value, cls.Ln2, cls.Ln2Mean, cls.Ln2Rstd, batch, d, Eps);
        Linear(be, cls.Ln2, Fc1Weight, Fc1Bias, cls.Fc1, batch, d, h);
        be.GeluForward(cls.Fc1, cls.Gelu, (long)batch * h);
        Linear(be, cls.Gelu, Fc2Weight, Fc2Bias, cls.Out, batch, h, d);
        be.Add(cls.Out, cls.Mid, cls.Out, (long)batch * d);
        be.CopyRows(cls.Out, 0, d, output, 0, tokens * d, batch, d, accumulate: false);
    }

    /// <summary>
    /// The backward of <see cref="ForwardCls"/>: from <paramref name="dOut"/> = d loss / d output[:, 0] ([batch, dim]), the
    /// gradients <paramref name="wants"/> selects (accumulated, or <paramref name="weightGradients"/>' way) and, when
    /// <paramref name="needInputGrad"/>, <paramref name="dx"/> = d loss / d x for every token (overwritten). Equal to
    /// <see cref="Backward"/> with d output zero outside [CLS]: the work skipped multiplies those zeros.
    /// </summary>
    public void BackwardCls(IEditKernels kernels, Tensor x, Activations a, ClsActivations cls, Tensor dOut, Tensor dx, Scratch s,
                            int batch, int tokens, Func<Parameter?, bool> wants, bool needInputGrad, IWeightGradients? weightGradients = null)
    {
        var be = Backend;
        int d = Dim, h = Hidden, rows = batch * tokens;
        LinearBackward(be, dOut, cls.Gelu, Fc2Weight, Fc2Bias, cls.DHidden, batch, h, d, wants, weightGradients);
        be.GeluBackward(cls.Fc1, cls.DHidden, cls.DHidden, (long)batch * h);
        bool ln1Wanted = wants(Norm1Weight) || wants(Norm1Bias);
        bool qkvWanted = wants(QkvWeight) || wants(QkvBias);
        bool attentionWanted = ln1Wanted || qkvWanted || wants(ProjWeight) || wants(ProjBias);
        bool needMid = needInputGrad || attentionWanted || wants(Norm2Weight) || wants(Norm2Bias);
        LinearBackward(be, cls.DHidden, cls.Ln2, Fc1Weight, Fc1Bias, needMid ? cls.DTemp : null, batch, d, h, wants, weightGradients);
        if (!needMid) return;
        be.Copy(dOut, 0, cls.DMid, 0, (long)batch * d);
        be.LayerNormBackward(cls.DTemp, cls.Mid, Norm2Weight.Value, cls.Ln2Mean, cls.Ln2Rstd, cls.DMid,
            wants(Norm2Weight) ? Norm2Weight.Grad : null, wants(Norm2Bias) ? Norm2Bias.Grad : null, batch, d, accumulateDx: true);
        if (!needInputGrad && !attentionWanted) return;

        LinearBackward(be, cls.DMid, cls.AttnOut, ProjWeight, ProjBias, cls.DTemp, batch, d, d, wants, weightGradients);
        // The attention backward writes dq of [CLS] and dk, dv of every token; the dense qkv gradient also reads the other
        // tokens' dq, which is zero.
        if (qkvWanted) be.Fill(s.DQkv, 0f);
        kernels.ClsAttentionBackward(cls.DTemp, a.Qkv, cls.Probs, s.DQkv, batch, tokens, Heads, HeadDim);
        if (qkvWanted) LinearBackward(be, s.DQkv, a.Ln1, QkvWeight, QkvBias, null, rows, d, 3 * d, wants, weightGradients);
        if (!needInputGrad && !ln1Wanted) return;
        // d ln1 = dqkv·Wqkv: the k, v part for every token, the q part for [CLS] only.
        be.Gemm(false, false, rows, d, 2 * d, 1f, s.DQkv, d, 3 * d, QkvWeight.Value, (long)d * d, d, 0f, s.DTemp, 0, d);
        be.Gemm(false, false, batch, d, d, 1f, s.DQkv, 0, 3 * tokens * d, QkvWeight.Value, 0, d, 1f, s.DTemp, 0, tokens * d);
        be.LayerNormBackward(s.DTemp, x, Norm1Weight.Value, a.Ln1Mean, a.Ln1Rstd, dx,
            wants(Norm1Weight) ? Norm1Weight.Grad : null, wants(Norm1Bias) ? Norm1Bias.Grad : null, rows, d, accumulateDx: false);
        be.CopyRows(cls.DMid, 0, d, dx, 0, tokens * d, batch, d, accumulate: true);
    }

    /// <summary>An MLP Linear layer: shared weights, or sample b's own weights for its tokens (one batched GEMM).</summary>
    private static void MlpLinear(IBackend be, Tensor x, Parameter weight, Parameter? bias, PerSampleWeights? perSample, Tensor y,
                                  int batch, int tokens, int inFeatures, int outFeatures)
    {
        if (perSample is null)
        {
            Linear(be, x, weight, bias, y, batch * tokens, inFeatures, outFeatures);
            return;
        }
        perSample.Check(weight, batch);
        // y[b] = x[b]·W_bᵀ: [tokens, in]·[in, out] per sample.
        be.Gemm(false, true, tokens, outFeatures, inFeatures, 1f, x, 0, inFeatures, perSample.Values, 0, inFeatures, 0f, y, 0, outFeatures,
                batch, (long)tokens * inFeatures, (long)outFeatures * inFeatures, (long)tokens * outFeatures);
        if (bias is not null) be.AddBias(y, bias.Value, batch * tokens, outFeatures);
    }

    private static void MlpLinearBackward(IBackend be, Tensor dy, Tensor x, Parameter weight, Parameter? bias, PerSampleWeights? perSample, Tensor? dx,
                                          int batch, int tokens, int inFeatures, int outFeatures, Func<Parameter?, bool> wants,
                                          IWeightGradients? weightGradients)
    {
        if (perSample is null)
        {
            LinearBackward(be, dy, x, weight, bias, dx, batch * tokens, inFeatures, outFeatures, wants, weightGradients);
            return;
        }
        perSample.Check(weight, batch);
        // dW_b = dy[b]ᵀ·x[b] (overwritten), db += Σ dy (shared bias, when wanted), dx[b] = dy[b]·W_b.
        be.Gemm(true, false, outFeatures, inFeatures, tokens, 1f, dy, 0, outFeatures, x, 0, inFeatures, 0f, perSample.Grads, 0, inFeatures,
                batch, (long)tokens * outFeatures, (long)tokens * inFeatures, (long)outFeatures * inFeatures);
        if (bias is not null && wants(bias))
            be.BiasGradient(dy, bias.Grad, batch * tokens, outFeatures);
        if (dx is not null)
            be.Gemm(false, false, tokens, inFeatures, outFeatures, 1f, dy, 0, outFeatures, perSample.Values, 0, inFeatures, 0f, dx, 0, inFeatures,
                    batch, (long)tokens * outFeatures, (long)outFeatures * inFeatures, (long)tokens * inFeatures);
    }

    /// <summary>y[rows, out] = x[rows, in]·Wᵀ + b.</summary>
    public static void Linear(IBackend be, Tensor x, Parameter weight, Parameter? bias, Tensor y, int rows, int inFeatures, int outFeatures)
        => be.LinearForward(x, weight.Value, bias?.Value, y, rows, inFeatures, outFeatures);

    /// <summary>
    /// For y = x·Wᵀ + b: dW += dyᵀ·x, db += Σ dy (when wanted), dx = dy·W (when dx is given; overwritten). A wanted weight
    /// gradient that <paramref name="weightGradients"/> takes is computed its way instead.
    /// </summary>
    public static void LinearBackward(IBackend be, Tensor dy, Tensor x, Parameter weight, Parameter? bias, Tensor? dx,
                                      int rows, int inFeatures, int outFeatures, Func<Parameter?, bool> wants,
                                      IWeightGradients? weightGradients = null)
    {
        if (wants(weight) && weightGradients?.TryWeightGradient(weight, dy, x, rows, inFeatures, outFeatures) != true)
            be.Gemm(true, false, outFeatures, inFeatures, rows, 1f, dy, 0, outFeatures, x, 0, inFeatures, 1f, weight.Grad, 0, inFeatures);
        if (bias is not null && wants(bias))
            be.BiasGradient(dy, bias.Grad, rows, outFeatures);
        if (dx is not null)
            be.Gemm(false, false, rows, inFeatures, outFeatures, 1f, dy, 0, outFeatures, weight.Value, 0, inFeatures, 0f, dx, 0, inFeatures);
    }
}

/// <summary>
/// Computes some weights' gradients another way than the dense dW += dyᵀ·x of
/// <see cref="TransformerBlock.LinearBackward"/> (the edit's gradients for the masked hidden units only).
/// </summary>
public interface IWeightGradients
{
    /// <summary>
    /// For y[rows, out] = x[rows, in]·Wᵀ: computes the gradient of <paramref name="weight"/> its own way and returns true,
    /// or returns false to leave it to the dense GEMM.
    /// </summary>
    bool TryWeightGradient(Parameter weight, Tensor dy, Tensor x, int rows, int inFeatures, int outFeatures);
}

/// <summary>
/// Per-sample weights for one Linear layer of a block (meta-training's edited fc1/fc2, W'_b = W + m_b ⊙ Δ_b):
/// <see cref="Values"/>[b] replaces the shared weight for sample b's tokens, and a backward pass OVERWRITES
/// <see cref="Grads"/>[b] with d loss / d W'_b (one batched GEMM per layer; the shared weight's gradient is not
/// touched). Both are [capacity, out, in]; the biases stay shared. Attach them to a workspace with
/// <see cref="VitWorkspace.SetPerSampleWeights"/>.
/// </summary>
public sealed class PerSampleWeights
{
    public PerSampleWeights(Tensor values, Tensor grads)
    {
        Values = values ?? throw new ArgumentNullException(nameof(values));
        Grads = grads ?? throw new ArgumentNullException(nameof(grads));
        if (!values.Shape.AsSpan().SequenceEqual(grads.Shape))
            throw new ArgumentException($"per-sample weights '{values.Name}' {values.ShapeText} and gradients '{grads.Name}' {grads.ShapeText} differ in shape");
        if (values.Rank != 3) throw new ArgumentException($"per-sample weights '{values.Name}' {values.ShapeText}: expected [samples, out, in]");
    }

    public Tensor Values { get; }
    public Tensor Grads { get; }

    /// <summary>Samples held.</summary>
    public int Capacity => Values.Shape[0];

    internal void Check(Parameter shared, int batch)
    {
        if (Values.Shape[1] != shared.Shape[0] || Values.Shape[2] != shared.Shape[1])
            throw new ShapeMismatchException(Values.Name, [batch, shared.Shape[0], shared.Shape[1]], Values.Shape);
        if (batch > Capacity)
            throw new ArgumentException($"per-sample weights '{Values.Name}' hold {Capacity} samples, the batch has {batch}");
    }
}

using System.Diagnostics;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends;

/// <summary>
/// Wraps a backend and accumulates wall time and call counts per op (synchronising after each op so GPU
/// time is attributed to the op that queued it). Used by `wte bench --profile`. Create it with <see cref="Wrap"/>:
/// over a backend with <see cref="IEditKernels"/> it has them too, so a profiled edit runs the path users run.
/// </summary>
internal class ProfilingBackend : IBackend
{
    private protected ProfilingBackend(IBackend inner) => Inner = inner;

    /// <summary>The profiling wrapper of <paramref name="inner"/>, with its edit kernels where it has them.</summary>
    public static ProfilingBackend Wrap(IBackend inner) => inner is IEditKernels ? new WithEditKernels(inner) : new ProfilingBackend(inner);

    private readonly Dictionary<string, (long Ticks, long Calls)> _stats = [];

    public IBackend Inner { get; }
    public string Name => Inner.Name;
    public int Threads => Inner.Threads;

    public IReadOnlyDictionary<string, (TimeSpan Time, long Calls)> Stats =>
        _stats.ToDictionary(kv => kv.Key, kv => (TimeSpan.FromTicks(kv.Value.Ticks * TimeSpan.TicksPerSecond / Stopwatch.Frequency), kv.Value.Calls));

    public void Reset() => _stats.Clear();

    private protected void Time(string op, Action action)
    {
        long start = Stopwatch.GetTimestamp();
        action();
        Inner.Synchronize();
        long elapsed = Stopwatch.GetTimestamp() - start;
        _stats[op] = _stats.TryGetValue(op, out var s) ? (s.Ticks + elapsed, s.Calls + 1) : (elapsed, 1);
    }

    /// <summary>A table of ops by total time; "ms/call" divides it by the <paramref name="calls"/> of the profiled workload.</summary>
    public string Report(int calls = 1)
    {
        if (calls <= 0) throw new ArgumentOutOfRangeException(nameof(calls), calls, "must be positive");
        var rows = Stats.OrderByDescending(kv => kv.Value.Time).ToList();
        double total = rows.Sum(r => r.Value.Time.TotalMilliseconds);
        var lines = new List<string> { $"{"op",-26} {"calls",8} {"total ms",10} {"ms/call",9} {"share",7}" };
        foreach (var (op, (time, n)) in rows)
            lines.Add($"{op,-26} {n,8} {time.TotalMilliseconds,10:F1} {time.TotalMilliseconds / calls,9:F2} {time.TotalMilliseconds / Math.Max(total, 1e-9),7:P1}");
        lines.Add($"{"all ops",-26} {rows.Sum(r => r.Value.Calls),8} {total,10:F1} {total / calls,9:F2} {1,7:P1}");
        return string.Join(Environment.NewLine, lines);
    }

    public Tensor Allocate(string name, params int[] shape) => Inner.Allocate(name, shape);
    public Tensor FromHost(string name, ReadOnlySpan<float> data, params int[] shape) => Inner.FromHost(name, data, shape);
    public void Fill(Tensor t, float value) => Time("fill", () => Inner.Fill(t, value));
    public void Copy(Tensor src, long srcOffset, Tensor dst, long dstOffset, long count) => Time("copy", () => Inner.Copy(src, srcOffset, dst, dstOffset, count));
    public void CopyRows(Tensor src, long srcOffset, int srcStride, Tensor dst, long dstOffset, int dstStride, int rows, int cols, bool accumulate)
        => Time("copy_rows", () => Inner.CopyRows(src, srcOffset, srcStride, dst, dstOffset, dstStride, rows, cols, accumulate));
    public void Synchronize() => Inner.Synchronize();

    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, Tensor a, long aOffset, int lda, Tensor b, long bOffset, int ldb,
                     float beta, Tensor c, long cOffset, int ldc, int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0)
        => Time(transA ? "gemm (weight grad)" : transB ? "gemm (linear fwd)" : "gemm (input grad)",
            () => Inner.Gemm(transA, transB, m, n, k, alpha, a, aOffset, lda, b, bOffset, ldb, beta, c, cOffset, ldc, batch, strideA, strideB, strideC));

    public void LinearForward(Tensor x, Tensor weight, Tensor? bias, Tensor y, int rows, int inFeatures, int outFeatures)
        => Time("linear_fwd (gemm + bias)", () => Inner.LinearForward(x, weight, bias, y, rows, inFeatures, outFeatures));
    public void AddBias(Tensor y, Tensor bias, int rows, int cols) => Time("bias_add", () => Inner.AddBias(y, bias, rows, cols));
    public void BiasGradient(Tensor dy, Tensor dbias, int rows, int cols) => Time("bias_grad", () => Inner.BiasGradient(dy, dbias, rows, cols));
    public void Add(Tensor a, Tensor b, Tensor y, long n) => Time("residual_add", () => Inner.Add(a, b, y, n));
    public void Axpy(float alpha, Tensor x, Tensor y, long n) => Time("axpy", () => Inner.Axpy(alpha, x, y, n));
    public void L1PenaltyGradient(Tensor grad, Tensor w, Tensor w0, float c, long n) => Time("l1_penalty_grad", () => Inner.L1PenaltyGradient(grad, w, w0, c, n));
    public void GeluForward(Tensor x, Tensor y, long n) => Time("gelu_fwd", () => Inner.GeluForward(x, y, n));
    public void SigmoidForward(Tensor x, Tensor y, long n, float scale, float lo, float hi) => Time("sigmoid_fwd", () => Inner.SigmoidForward(x, y, n, scale, lo, hi));
    public void SigmoidBackward(Tensor y, Tensor dy, Tensor dx, long n, float scale, float lo, float hi) => Time("sigmoid_bwd", () => Inner.SigmoidBackward(y, dy, dx, n, scale, lo, hi));
    public void GeluBackward(Tensor x, Tensor dy, Tensor dx, long n) => Time("gelu_bwd", () => Inner.GeluBackward(x, dy, dx, n));

    public void GatedCombine(Tensor weight, Tensor gates, long gatesOffset, long gatesStride, Tensor delta, Tensor output, int batch, int rows, int cols, MaskAxis axis)
        => Time("gated_combine", () => Inner.GatedCombine(weight, gates, gatesOffset, gatesStride, delta, output, batch, rows, cols, axis));
    public void GateGradient(Tensor dweights, Tensor delta, Tensor output, long outputOffset, long outputStride, int batch, int rows, int cols, MaskAxis axis, float addend)
        => Time("gate_grad", () => Inner.GateGradient(dweights, delta, output, outputOffset, outputStride, batch, rows, cols, axis, addend));

    public void LayerNormForward(Tensor x, Tensor gamma, Tensor beta, Tensor y, Tensor mean, Tensor rstd, int rows, int cols, float eps)
        => Time("layernorm_fwd", () => Inner.LayerNormForward(x, gamma, beta, y, mean, rstd, rows, cols, eps));
    public void LayerNormBackward(Tensor dy, Tensor x, Tensor gamma, Tensor mean, Tensor rstd, Tensor dx, Tensor? dgamma, Tensor? dbeta, int rows, int cols, bool accumulateDx)
        => Time("layernorm_bwd", () => Inner.LayerNormBackward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, rows, cols, accumulateDx));
    public void Softmax(Tensor x, Tensor y, int rows, int cols, float temperature = 1f) => Time("softmax", () => Inner.Softmax(x, y, rows, cols, temperature));

    public void AttentionForward(Tensor qkv, Tensor output, Tensor probs, int batch, int tokens, int heads, int headDim)
        => Time("attention_fwd", () => Inner.AttentionForward(qkv, output, probs, batch, tokens, heads, headDim));
    public void AttentionBackward(Tensor doutput, Tensor qkv, Tensor probs, Tensor dqkv, int batch, int tokens, int heads, int headDim)
        => Time("attention_bwd", () => Inner.AttentionBackward(doutput, qkv, probs, dqkv, batch, tokens, heads, headDim));

    public void Im2Col(Tensor image, Tensor columns, int batch, int channels, int height, int width, int patch)
        => Time("im2col", () => Inner.Im2Col(image, columns, batch, channels, height, width, patch));
    public void Col2Im(Tensor dcolumns, Tensor dimage, int batch, int channels, int height, int width, int patch)
        => Time("col2im", () => Inner.Col2Im(dcolumns, dimage, batch, channels, height, width, patch));
    public void AssembleTokens(Tensor patchTokens, Tensor cls, Tensor pos, Tensor x, int batch, int patches, int dim)
        => Time("tokens_fwd", () => Inner.AssembleTokens(patchTokens, cls, pos, x, batch, patches, dim));
    public void AssembleTokensBackward(Tensor dx, Tensor dpatchTokens, Tensor? dcls, Tensor? dpos, int batch, int patches, int dim)
        => Time("tokens_bwd", () => Inner.AssembleTokensBackward(dx, dpatchTokens, dcls, dpos, batch, patches, dim));

    public void CrossEntropy(Tensor logits, Tensor labels, Tensor losses, Tensor? dlogits, int rows, int classes, float gradScale)
        => Time("cross_entropy", () => Inner.CrossEntropy(logits, labels, losses, dlogits, rows, classes, gradScale));
    public void KlDivergence(Tensor logits, Tensor targetProbs, Tensor losses, Tensor? dlogits, int rows, int classes, float temperature, float gradScale)
        => Time("kl_divergence", () => Inner.KlDivergence(logits, targetProbs, losses, dlogits, rows, classes, temperature, gradScale));

    public void BinaryCrossEntropy(Tensor probs, Tensor targets, Tensor loss, Tensor? dprobs, long n, float scale)
        => Time("binary_cross_entropy", () => Inner.BinaryCrossEntropy(probs, targets, loss, dprobs, n, scale));

    public void SgdStep(Tensor param, Tensor grad, float lr, float weightDecay, UpdateMask mask)
        => Time("sgd_step", () => Inner.SgdStep(param, grad, lr, weightDecay, mask));
    public void RmsPropStep(Tensor param, Tensor grad, Tensor squareAvg, float lr, float alpha, float eps, float weightDecay, UpdateMask mask)
        => Time("rmsprop_step", () => Inner.RmsPropStep(param, grad, squareAvg, lr, alpha, eps, weightDecay, mask));
    public void AdamStep(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps, float weightDecay, bool decoupled, int step, UpdateMask mask)
        => Time("adam_step", () => Inner.AdamStep(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, decoupled, step, mask));

    public void Dispose() => Inner.Dispose();

    private sealed class WithEditKernels(IBackend inner) : ProfilingBackend(inner), IEditKernels
    {
        private IEditKernels Edit => (IEditKernels)Inner;

        public void GatherColumns(Tensor src, int rows, int ld, ReadOnlySpan<int> columns, Tensor dst)
        {
            var cols = columns.ToArray();
            Time("gather_columns", () => Edit.GatherColumns(src, rows, ld, cols, dst));
        }
        public void GatherRows(Tensor src, ReadOnlySpan<int> rowIndex, int cols, Tensor dst)
        {
            var rowsIdx = rowIndex.ToArray();
            Time("gather_rows", () => Edit.GatherRows(src, rowsIdx, cols, dst));
        }
        public void ScatterRows(Tensor src, ReadOnlySpan<int> rowIndex, int cols, Tensor dst)
        {
            var rowsIdx = rowIndex.ToArray();
            Time("scatter_rows", () => Edit.ScatterRows(src, rowsIdx, cols, dst));
        }
        public void CompactRmsPropStep(Tensor param, Tensor compactGrad, Tensor compactSquareAvg, ReadOnlySpan<int> units, MaskAxis axis,
                                       int rows, int cols, float lr, float alpha, float eps)
        {
            var idx = units.ToArray();
            Time("rmsprop_step", () => Edit.CompactRmsPropStep(param, compactGrad, compactSquareAvg, idx, axis, rows, cols, lr, alpha, eps));
        }
        public void ScatterColumns(Tensor src, int rows, ReadOnlySpan<int> columns, int ld, Tensor dst)
        {
            var cols = columns.ToArray();
            Time("scatter_columns", () => Edit.ScatterColumns(src, rows, cols, ld, dst));
        }
        public void ClsAttentionForward(Tensor qkv, Tensor output, Tensor probs, int batch, int tokens, int heads, int headDim)
            => Time("cls_attention_fwd", () => Edit.ClsAttentionForward(qkv, output, probs, batch, tokens, heads, headDim));
        public void ClsAttentionBackward(Tensor doutput, Tensor qkv, Tensor probs, Tensor dqkv, int batch, int tokens, int heads, int headDim)
            => Time("cls_attention_bwd", () => Edit.ClsAttentionBackward(doutput, qkv, probs, dqkv, batch, tokens, heads, headDim));
    }
}

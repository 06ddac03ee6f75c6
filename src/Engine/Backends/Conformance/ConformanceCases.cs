using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Conformance;

/// <summary>
/// The shared case list: every <see cref="IBackend"/> op, forward and backward, with the argument variants the
/// engine uses (offsets, strides, accumulate/overwrite, null gradients, masks on both axes, clamps and edge values).
/// Inputs come from the context's seeded generator, so every backend sees the same numbers.
/// </summary>
internal static class ConformanceCases
{
    public static IReadOnlyList<ConformanceCase> All { get; } = Build();

    private static ConformanceCase Case(string name, string[] ops, Action<ConformanceContext> body) => new() { Name = name, Ops = ops, Body = body };

    private static List<ConformanceCase> Build()
    {
        var cases = new List<ConformanceCase>();
        Memory(cases);
        Linear(cases);
        Elementwise(cases);
        Gating(cases);
        Normalization(cases);
        Attention(cases);
        Patches(cases);
        Losses(cases);
        Optimizers(cases);
        return cases;
    }

    // ---- memory ---------------------------------------------------------------------------------------------------

    private static void Memory(List<ConformanceCase> cases)
    {
        cases.Add(Case("allocate, from-host, fill, synchronize", ["Allocate", "FromHost", "Fill", "Synchronize"], x =>
        {
            var s = x.Shapes;
            x.Output("allocate (zeros)", x.Zeros("zeros", s.Rows, s.Dim));
            x.Output("from-host (round trip)", x.Random("host", 3f, s.Rows, s.Dim));
            var filled = x.Random("filled", 1f, s.Rows, s.Hidden);
            x.Backend.Fill(filled, -2.5f);
            x.Backend.Synchronize();
            x.Output("fill", filled);
        }));
        cases.Add(Case("copy (offsets, overlapping both ways)", ["Copy"], x =>
        {
            int n = x.Shapes.Rows * x.Shapes.Dim;
            var a = x.Random("a", 1f, n);
            var b = x.Random("b", 1f, n);
            x.Backend.Copy(a, 3, b, 10, n - 20);
            x.Output("disjoint", b);
            x.Backend.Copy(a, 0, a, 7, n - 7);     // destination after the source: memmove semantics
            x.Output("overlap forward", a);
            x.Backend.Copy(b, 9, b, 2, n - 9);     // destination before the source
            x.Output("overlap backward", b);
        }));
        cases.Add(Case("copy rows: CLS gather, accumulate, broadcast, sum into one", ["CopyRows"], x =>
        {
            var s = x.Shapes;
            var tokens = x.Random("tokens", 1f, s.Batch, s.Tokens, s.Dim);
            var cls = x.Random("cls", 1f, s.Batch, s.Dim);
            x.Backend.CopyRows(tokens, 0, s.Tokens * s.Dim, cls, 0, s.Dim, s.Batch, s.Dim, accumulate: false);
            x.Output("gather", cls);
            x.Backend.CopyRows(tokens, s.Dim, s.Tokens * s.Dim, cls, 0, s.Dim, s.Batch, s.Dim, accumulate: true);
            x.Output("gather accumulate", cls);
            var bias = x.Random("bias", 1f, s.Dim);
            x.Backend.CopyRows(bias, 0, 0, tokens, s.Dim, s.Tokens * s.Dim, s.Batch, s.Dim, accumulate: true);   // srcStride 0: broadcast
            x.Output("broadcast accumulate", tokens);
            var sum = x.Random("sum", 1f, s.Dim);
            x.Backend.CopyRows(tokens, 0, s.Dim, sum, 0, 0, s.Rows, s.Dim, accumulate: true);                    // dstStride 0: sum rows
            x.Output("sum rows", sum);
        }));
    }

    // ---- GEMM and bias --------------------------------------------------------------------------------------------

    private static void Linear(List<ConformanceCase> cases)
    {
        foreach (var (ta, tb) in new[] { (false, false), (false, true), (true, false), (true, true) })
        {
            string op = $"{(ta ? 'T' : 'N')}{(tb ? 'T' : 'N')}";
            cases.Add(Case($"gemm {op} (alpha, beta, padded leading dimensions, offsets)", ["Gemm"], x =>
            {
                var s = x.Shapes;
                int m = s.Rows, n = s.Hidden, k = s.Dim, pad = 3;
                int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
                var a = x.Random("A", 1f, 5 + (ta ? k : m) * lda);
                var b = x.Random("B", 1f, 2 + (tb ? n : k) * ldb);
                var c = x.Random("C", 1f, 1 + m * ldc);
                x.Backend.Gemm(ta, tb, m, n, k, 0.75f, a, 5, lda, b, 2, ldb, 0.5f, c, 1, ldc);
                x.Output($"C = 0.75·op(A)·op(B) + 0.5·C [{m}×{n}×{k}]", c);
                var c0 = x.Random("C0", 1f, m * n);
                x.Backend.Gemm(ta, tb, m, n, k, 1f, a, 5, lda, b, 2, ldb, 0f, c0, 0, n);
                x.Output("beta 0 overwrites C", c0);
            }));
        }
        cases.Add(Case("gemm batched (attention-shaped, strided)", ["Gemm"], x =>
        {
            var s = x.Shapes;
            int bh = s.Batch * s.Heads, t = s.Tokens, hd = s.HeadDim;
            var q = x.Random("Q", 1f, bh * t * hd);
            var k = x.Random("K", 1f, bh * t * hd);
            var scores = x.Random("S", 1f, bh * t * t);
            x.Backend.Gemm(false, true, t, t, hd, 0.125f, q, 0, hd, k, 0, hd, 0f, scores, 0, t, bh, t * hd, t * hd, t * t);
            x.Output($"NT {bh}×({t}×{t}×{hd})", scores);
            var o = x.Random("O", 1f, bh * t * hd);
            x.Backend.Gemm(false, false, t, hd, t, 1f, scores, 0, t, k, 0, hd, 1f, o, 0, hd, bh, t * t, t * hd, t * hd);
            x.Output($"NN {bh}×({t}×{hd}×{t}) beta 1", o);
        }));
        cases.Add(Case("linear forward (x·Wᵀ + bias, and without a bias)", ["LinearForward"], x =>
        {
            var s = x.Shapes;
            var input = x.Random("x", 1f, s.Rows, s.Dim);
            var w = x.Random("W", 0.5f, s.Hidden, s.Dim);
            var bias = x.Random("bias", 1f, s.Hidden);
            var y = x.Random("y", 1f, s.Rows, s.Hidden);
            x.Backend.LinearForward(input, w, bias, y, s.Rows, s.Dim, s.Hidden);
            x.Output("x·Wᵀ + b", y);
            x.Backend.LinearForward(input, w, null, y, s.Rows, s.Dim, s.Hidden);
            x.Output("x·Wᵀ", y);
        }));
        cases.Add(Case("bias add and bias gradient (accumulating)", ["AddBias", "BiasGradient"], x =>
        {
            var s = x.Shapes;
            var y = x.Random("y", 1f, s.Rows, s.Hidden);
            var bias = x.Random("bias", 1f, s.Hidden);
            x.Backend.AddBias(y, bias, s.Rows, s.Hidden);
            x.Output("y += bias", y);
            x.Backend.BiasGradient(y, bias, s.Rows, s.Hidden);
            x.Output("dbias += Σ dy", bias);
        }));
    }

    // ---- elementwise ----------------------------------------------------------------------------------------------

    private static void Elementwise(List<ConformanceCase> cases)
    {
        cases.Add(Case("add, axpy", ["Add", "Axpy"], x =>
        {
            var s = x.Shapes;
            long n = (long)s.Rows * s.Hidden;
            var a = x.Random("a", 1f, s.Rows, s.Hidden);
            var b = x.Random("b", 1f, s.Rows, s.Hidden);
            var y = x.Random("y", 1f, s.Rows, s.Hidden);
            x.Backend.Add(a, b, y, n - 1);   // the last element stays
            x.Output("add", y);
            x.Backend.Axpy(-0.75f, a, y, n);
            x.Output("axpy", y);
        }));
        cases.Add(Case("L1 penalty gradient (sign(0) = 0)", ["L1PenaltyGradient"], x =>
        {
            var s = x.Shapes;
            long n = (long)s.Rows * s.Hidden;
            var w0 = x.Uniform(n);
            var w = x.Uniform(n);
            for (long i = 0; i < n; i += 3) w[i] = w0[i];   // unmoved weights get no push
            var g = x.Random("g", 1f, s.Rows, s.Hidden);
            x.Backend.L1PenaltyGradient(g, x.Tensor("w", w, s.Rows, s.Hidden), x.Tensor("w0", w0, s.Rows, s.Hidden), 0.25f, n);
            x.Output("grad += c·sign(w − w0)", g);
        }));
        cases.Add(Case("gelu forward and backward (separate and in place)", ["GeluForward", "GeluBackward"], x =>
        {
            var s = x.Shapes;
            long n = (long)s.Rows * s.Hidden;
            var v = x.Uniform(n, 6f);
            v[0] = 0f; v[1] = -12f; v[2] = 12f;
            var input = x.Tensor("x", v, s.Rows, s.Hidden);
            var y = x.Random("y", 1f, s.Rows, s.Hidden);
            x.Backend.GeluForward(input, y, n);
            x.Output("y = x·Φ(x)", y);
            var dy = x.Random("dy", 1f, s.Rows, s.Hidden);
            var dx = x.Random("dx", 1f, s.Rows, s.Hidden);
            x.Backend.GeluBackward(input, dy, dx, n);
            x.Output("dx = dy·GELU'(x)", dx);
            x.Backend.GeluBackward(input, dy, dy, n);
            x.Output("dx in place of dy", dy);
        }));
        cases.Add(Case("sigmoid forward and backward (scaled, clamped)", ["SigmoidForward", "SigmoidBackward"], x =>
        {
            var s = x.Shapes;
            long n = (long)s.Rows * s.Hidden;
            const float scale = 3f, lo = 1e-5f, hi = 1 - 1e-5f;
            var input = x.Random("x", 8f, s.Rows, s.Hidden);   // |3x| > 11.5 saturates: both clamps are hit
            var y = x.Random("y", 1f, s.Rows, s.Hidden);
            x.Backend.SigmoidForward(input, y, n, scale, lo, hi);
            x.Output("y = clamp(σ(scale·x))", y);
            var yValues = x.Uniform(n, 0.5f);
            for (long i = 0; i < n; i++) yValues[i] = i % 7 == 0 ? lo : i % 11 == 0 ? hi : yValues[i] + 0.5f;
            var dx = x.Random("dx", 1f, s.Rows, s.Hidden);
            x.Backend.SigmoidBackward(x.Tensor("y given", yValues, s.Rows, s.Hidden), x.Random("dy", 1f, s.Rows, s.Hidden), dx, n, scale, lo, hi);
            x.Output("dx (0 on the bounds)", dx);
        }));
    }

    // ---- per-sample gated weights ---------------------------------------------------------------------------------

    private static void Gating(List<ConformanceCase> cases)
    {
        foreach (var axis in new[] { MaskAxis.Rows, MaskAxis.Columns })
        {
            string which = axis == MaskAxis.Rows ? "rows (fc1)" : "columns (fc2)";
            cases.Add(Case($"gated combine and gate gradient, {which}", ["GatedCombine", "GateGradient"], x =>
            {
                var s = x.Shapes;
                int batch = s.Batch, rows = axis == MaskAxis.Rows ? s.Hidden : s.Dim, cols = axis == MaskAxis.Rows ? s.Dim : s.Hidden;
                int gateLength = axis == MaskAxis.Rows ? rows : cols, offset = 2, stride = gateLength + 5;
                var weight = x.Random("W", 1f, rows, cols);
                var gates = x.Random("gates", 1f, offset + batch * stride);
                var delta = x.Random("delta", 0.1f, batch, rows, cols);
                var output = x.Random("W'", 1f, batch, rows, cols);
                x.Backend.GatedCombine(weight, gates, offset, stride, delta, output, batch, rows, cols, axis);
                x.Output("W' = W + g ⊙ Δ", output);
                var dweights = x.Random("dW'", 1f, batch, rows, cols);
                var dgates = x.Random("dg", 1f, offset + batch * stride);
                x.Backend.GateGradient(dweights, delta, dgates, offset, stride, batch, rows, cols, axis, 0.125f);
                x.Output("dg = addend + Σ dW' ⊙ Δ", dgates);
            }));
        }
    }

    // ---- LayerNorm and softmax ------------------------------------------------------------------------------------

    private static void Normalization(List<ConformanceCase> cases)
    {
        cases.Add(Case("layernorm forward and backward (accumulate dx, with dgamma/dbeta)", ["LayerNormForward", "LayerNormBackward"], x =>
        {
            var s = x.Shapes;
            int rows = s.Rows, cols = s.Dim;
            var xv = x.Uniform((long)rows * cols, 3f);
            for (int c = 0; c < cols; c++) xv[c] += 5f;   // an offset row: the variance must be centred
            var input = x.Tensor("x", xv, rows, cols);
            var gamma = x.Random("gamma", 1f, cols);
            var beta = x.Random("beta", 1f, cols);
            var y = x.Random("y", 1f, rows, cols);
            var mean = x.Random("mean", 1f, rows);
            var rstd = x.Random("rstd", 1f, rows);
            x.Backend.LayerNormForward(input, gamma, beta, y, mean, rstd, rows, cols, 1e-6f);
            x.Output("y", y);
            x.Output("mean", mean);
            x.Output("rstd", rstd);
            var dy = x.Random("dy", 1f, rows, cols);
            var dx = x.Random("dx", 1f, rows, cols);
            var dgamma = x.Random("dgamma", 1f, cols);
            var dbeta = x.Random("dbeta", 1f, cols);
            x.Backend.LayerNormBackward(dy, input, gamma, mean, rstd, dx, dgamma, dbeta, rows, cols, accumulateDx: true);
            x.Output("dx += ∂/∂x", dx);
            x.Output("dgamma += Σ dy·x̂", dgamma);
            x.Output("dbeta += Σ dy", dbeta);
        }));
        cases.Add(Case("layernorm backward (overwrite dx, frozen gamma/beta)", ["LayerNormBackward"], x =>
        {
            var s = x.Shapes;
            int rows = s.Rows, cols = s.Dim;
            var input = x.Random("x", 2f, rows, cols);
            var gamma = x.Random("gamma", 1f, cols);
            var mean = x.Random("mean", 0.5f, rows);
            var rstdValues = x.Uniform(rows, 0.5f);
            for (int r = 0; r < rows; r++) rstdValues[r] += 1f;
            var dx = x.Random("dx", 1f, rows, cols);
            x.Backend.LayerNormBackward(x.Random("dy", 1f, rows, cols), input, gamma, mean, x.Tensor("rstd", rstdValues, rows), dx, null, null, rows, cols, accumulateDx: false);
            x.Output("dx", dx);
        }));
        foreach (float temperature in new[] { 1f, 2f })
            cases.Add(Case($"softmax T={temperature}", ["Softmax"], x =>
            {
                var s = x.Shapes;
                int rows = s.Batch * s.Heads * s.Tokens, cols = s.Tokens;
                var input = x.Random("x", 8f, rows, cols);
                var y = x.Random("y", 1f, rows, cols);
                x.Backend.Softmax(input, y, rows, cols, temperature);
                x.Output("y = softmax(x / T)", y);
            }));
    }

    // ---- attention ------------------------------------------------------------------------------------------------

    private static void Attention(List<ConformanceCase> cases)
    {
        cases.Add(Case("attention forward and backward", ["AttentionForward", "AttentionBackward"], x =>
        {
            var s = x.Shapes;
            int batch = s.Batch, t = s.Tokens, heads = s.Heads, hd = s.HeadDim;
            var qkv = x.Random("qkv", 2f, batch, t, 3 * s.Dim);
            var output = x.Random("out", 1f, batch, t, s.Dim);
            var probs = x.Random("probs", 1f, batch, heads, t, t);
            x.Backend.AttentionForward(qkv, output, probs, batch, t, heads, hd);
            x.Output("probs = softmax(q·kᵀ/√d)", probs);
            x.Output("out = probs·v", output);
            var dqkv = x.Random("dqkv", 1f, batch, t, 3 * s.Dim);
            x.Backend.AttentionBackward(x.Random("dout", 1f, batch, t, s.Dim), qkv, probs, dqkv, batch, t, heads, hd);
            x.Output("dqkv", dqkv);
        }));
    }

    // ---- patches and tokens ---------------------------------------------------------------------------------------

    private static void Patches(List<ConformanceCase> cases)
    {
        cases.Add(Case("im2col and col2im", ["Im2Col", "Col2Im"], x =>
        {
            var s = x.Shapes;
            int batch = s.Batch, size = s.ImageSize, patch = s.PatchSize, rowLength = 3 * patch * patch;
            var image = x.Random("image", 1f, batch, 3, size, size);
            var columns = x.Random("columns", 1f, batch * s.Patches, rowLength);
            x.Backend.Im2Col(image, columns, batch, 3, size, size, patch);
            x.Output("columns", columns);
            var dimage = x.Random("dimage", 1f, batch, 3, size, size);
            x.Backend.Col2Im(x.Random("dcolumns", 1f, batch * s.Patches, rowLength), dimage, batch, 3, size, size, patch);
            x.Output("dimage", dimage);
        }));
        cases.Add(Case("assemble tokens and backward (with and without dcls/dpos)", ["AssembleTokens", "AssembleTokensBackward"], x =>
        {
            var s = x.Shapes;
            int batch = s.Batch, p = s.Patches, dim = s.Dim;
            var patchTokens = x.Random("patch tokens", 1f, batch * p, dim);
            var cls = x.Random("cls", 1f, dim);
            var pos = x.Random("pos", 1f, s.Tokens, dim);
            var tokens = x.Random("x", 1f, batch, s.Tokens, dim);
            x.Backend.AssembleTokens(patchTokens, cls, pos, tokens, batch, p, dim);
            x.Output("x", tokens);
            var dx = x.Random("dx", 1f, batch, s.Tokens, dim);
            x.Backend.AssembleTokensBackward(dx, patchTokens, cls, pos, batch, p, dim);
            x.Output("dpatch", patchTokens);
            x.Output("dcls += Σ_b dx[b, 0]", cls);
            x.Output("dpos += Σ_b dx[b]", pos);
            var dpatch = x.Random("dpatch2", 1f, batch * p, dim);
            x.Backend.AssembleTokensBackward(dx, dpatch, null, null, batch, p, dim);
            x.Output("dpatch (frozen cls/pos)", dpatch);
        }));
    }

    // ---- losses ---------------------------------------------------------------------------------------------------

    private static void Losses(List<ConformanceCase> cases)
    {
        cases.Add(Case("cross-entropy (with and without dlogits)", ["CrossEntropy"], x =>
        {
            var s = x.Shapes;
            int rows = 4 * s.Batch, classes = s.Classes;
            var logits = x.Random("logits", 5f, rows, classes);
            var labelValues = new float[rows];
            for (int r = 0; r < rows; r++) labelValues[r] = x.Rng.NextInt(0, classes);
            var labels = x.Tensor("labels", labelValues, rows);
            var losses = x.Random("losses", 1f, rows);
            var dlogits = x.Random("dlogits", 1f, rows, classes);
            x.Backend.CrossEntropy(logits, labels, losses, dlogits, rows, classes, 1f / rows);
            x.Output("losses", losses);
            x.Output("dlogits", dlogits);
            var lossesOnly = x.Random("losses2", 1f, rows);
            x.Backend.CrossEntropy(logits, labels, lossesOnly, null, rows, classes, 1f);
            x.Output("losses (no gradient)", lossesOnly);
        }));
        cases.Add(Case("KL divergence T=2 (targets with zeros)", ["KlDivergence"], x =>
        {
            var s = x.Shapes;
            int rows = 4 * s.Batch, classes = s.Classes;
            var logits = x.Random("logits", 5f, rows, classes);
            var target = x.Uniform((long)rows * classes, 2f);
            for (int r = 0; r < rows; r++)
            {
                double sum = 0;
                for (int c = 0; c < classes; c++)
                {
                    float e = c == r % classes ? 0f : MathF.Exp(target[r * classes + c]);   // one exact zero per row: 0·log 0 = 0
                    target[r * classes + c] = e;
                    sum += e;
                }
                for (int c = 0; c < classes; c++) target[r * classes + c] = (float)(target[r * classes + c] / sum);
            }
            var losses = x.Random("losses", 1f, rows);
            var dlogits = x.Random("dlogits", 1f, rows, classes);
            x.Backend.KlDivergence(logits, x.Tensor("targets", target, rows, classes), losses, dlogits, rows, classes, 2f, 0.5f);
            x.Output("losses", losses);
            x.Output("dlogits", dlogits);
        }));
        cases.Add(Case("binary cross-entropy (log clamp at −100, edge probabilities)", ["BinaryCrossEntropy"], x =>
        {
            var s = x.Shapes;
            long n = (long)s.Rows * s.Hidden;
            var p = x.Uniform(n, 0.5f);
            var y = x.Uniform(n, 0.5f);
            for (long i = 0; i < n; i++)
            {
                p[i] += 0.5f;
                y[i] = y[i] > 0 ? 1f : 0f;
            }
            p[0] = 0f; y[0] = 0f;   // log(0) clamped, no gradient
            p[1] = 1f; y[1] = 1f;
            p[2] = 1e-30f; y[2] = 0.25f;
            var probs = x.Tensor("probs", p, (int)n);
            var targets = x.Tensor("targets", y, (int)n);
            var loss = x.Random("loss", 1f, 1);
            var dprobs = x.Random("dprobs", 1f, (int)n);
            x.Backend.BinaryCrossEntropy(probs, targets, loss, dprobs, n, 0.5f);
            x.Output("loss", loss);
            // The clamped entry's gradient is ~1e11: compared apart, so it does not swamp the normwise error of the rest.
            var gradient = dprobs.ToArray();
            x.Output("dprobs (edge probabilities 0, 1, 1e-30)", gradient[..3]);
            x.Output("dprobs", gradient[3..]);
            var lossOnly = x.Random("loss2", 1f, 1);
            x.Backend.BinaryCrossEntropy(probs, targets, lossOnly, null, n - 5, 1f);
            x.Output("loss (no gradient, prefix)", lossOnly);
        }));
    }

    // ---- optimizers -----------------------------------------------------------------------------------------------

    private static void Optimizers(List<ConformanceCase> cases)
    {
        foreach (string optimizer in new[] { "sgd", "rmsprop", "adam", "adamw" })
            foreach (var axis in new[] { MaskAxis.None, MaskAxis.Rows, MaskAxis.Columns })
            {
                string op = optimizer switch { "sgd" => "SgdStep", "rmsprop" => "RmsPropStep", _ => "AdamStep" };
                string mask = axis switch { MaskAxis.None => "unmasked", MaskAxis.Rows => "row mask", _ => "column mask" };
                cases.Add(Case($"{optimizer} {mask}", [op], x => OptimizerSteps(x, optimizer, axis)));
            }
    }

    /// <summary>
    /// Two steps on fc1-shaped [hidden, dim] (row mask) or fc2-shaped [dim, hidden] (column mask) weights keeping about
    /// 10 % of the hidden units. Besides the updated tensors, the entries outside the mask are compared exactly.
    /// </summary>
    private static void OptimizerSteps(ConformanceContext x, string optimizer, MaskAxis axis)
    {
        var s = x.Shapes;
        int rows = axis == MaskAxis.Columns ? s.Dim : s.Hidden, cols = axis == MaskAxis.Columns ? s.Hidden : s.Dim;
        int units = axis == MaskAxis.Rows ? rows : cols;
        var keep = new float[axis == MaskAxis.None ? 1 : units];
        for (int i = 0; i < keep.Length; i++) keep[i] = x.Rng.NextDouble() < 0.1 ? 1f : 0f;
        if (axis != MaskAxis.None) keep[units / 2] = 1f;
        var w = x.Random("w", 1f, rows, cols);
        var g = x.Random("g", 1f, rows, cols);
        var state1 = x.Uniform((long)rows * cols);
        var state2 = x.Uniform((long)rows * cols);
        for (long i = 0; i < state1.Length; i++)
        {
            state2[i] = state2[i] * state2[i] * 0.01f;   // second moments are non-negative
            if (optimizer == "rmsprop") state1[i] = state1[i] * state1[i] * 0.01f;
        }
        var s1 = x.Tensor("s1", state1, rows, cols);
        var s2 = x.Tensor("s2", state2, rows, cols);
        var maskTensor = x.Tensor("mask", keep, keep.Length);
        var update = axis switch
        {
            MaskAxis.None => UpdateMask.None((long)rows * cols),
            MaskAxis.Rows => UpdateMask.RowMask(maskTensor, rows, cols),
            _ => UpdateMask.ColumnMask(maskTensor, rows, cols),
        };
        float[] before = w.ToArray();
        for (int step = 1; step <= 2; step++)
            switch (optimizer)
            {
                case "sgd": x.Backend.SgdStep(w, g, 0.1f, 0.01f, update); break;
                case "rmsprop": x.Backend.RmsPropStep(w, g, s1, 1e-2f, 0.99f, 1e-8f, 0.01f, update); break;
                case "adam": x.Backend.AdamStep(w, g, s1, s2, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, false, step, update); break;
                default: x.Backend.AdamStep(w, g, s1, s2, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.05f, true, step, update); break;
            }
        x.Output("param", w);
        if (optimizer != "sgd") x.Output("state 1", s1);
        if (optimizer is "adam" or "adamw") x.Output("state 2", s2);
        if (axis == MaskAxis.None) return;
        // Outside the mask nothing may move: compared exactly (tolerance 0) against the reference, which never writes there.
        float[] after = w.ToArray(), after1 = s1.ToArray(), after2 = s2.ToArray();
        var outside = new List<float>();
        for (long i = 0; i < after.Length; i++)
        {
            long unit = axis == MaskAxis.Rows ? i / cols : i % cols;
            if (keep[unit] != 0) continue;
            outside.Add(after[i] - before[i]);
            outside.Add(after1[i] - state1[i]);
            outside.Add(after2[i] - state2[i]);
        }
        x.Output("change outside the mask (exact)", outside.ToArray(), tolerance: 0);
    }
}

using WhereToEdit.Engine.Tensors;
using Xunit;
using Xunit.Abstractions;
using static WhereToEdit.Tests.Gpu.GpuTestData;

namespace WhereToEdit.Tests.Gpu;

/// <summary>
/// Every <see cref="IBackend"/> op of the GPU backend, run on ILGPU's CPU accelerator at tiny shapes, against the
/// CPU backend (normwise relative error ≤ 1e-5).
/// </summary>
[Collection(GpuEmulatorCollection.Name)]
public sealed class GpuOpTests(GpuEmulatorFixture f, ITestOutputHelper output)
{
    private const double Tol = 1e-5;

    private Pair P(string name, float[] data, params int[] shape) => new(f, name, data, shape);

    private Pair Rand(string name, int seed, params int[] shape)
    {
        int n = 1;
        foreach (int d in shape) n *= d;
        return P(name, Random(seed, n), shape);
    }

    private void Same(string name, Pair t, double tol = Tol) => Compare.Check(output, name, t.Gpu.ToArray(), t.Cpu.ToArray(), tol);

    // ---- memory -------------------------------------------------------------------------------------

    [Fact]
    public void Allocate_is_zero_and_host_copies_round_trip_with_offsets()
    {
        using var t = f.Gpu.Allocate("t", 3, 5);
        Assert.Equal([3, 5], t.Shape);
        Assert.All(t.ToArray(), v => Assert.Equal(0f, v));
        var data = Random(1, 15);
        t.CopyFrom(data);
        Assert.Equal(data, t.ToArray());
        t.CopyFrom(new float[] { 7f, 8f }, offset: 13);
        var part = new float[4];
        t.CopyTo(part, offset: 11);
        Assert.Equal(new[] { data[11], data[12], 7f, 8f }, part);
        Assert.Throws<ArgumentException>(() => t.CopyFrom(new float[3], offset: 13));
        Assert.Throws<ArgumentException>(() => f.Gpu.FromHost("bad", new float[4], 5));
        using var empty = f.Gpu.Allocate("empty", 0, 4);
        Assert.Empty(empty.ToArray());
    }

    [Fact]
    public void Fill_copy_and_overlapping_copy_match_the_cpu_backend()
    {
        using var x = Rand("x", 2, 40);
        f.Cpu.Fill(x.Cpu, 2.5f); f.Gpu.Fill(x.Gpu, 2.5f);
        Same("fill", x);
        using var a = Rand("a", 3, 40);
        using var b = Rand("b", 4, 40);
        f.Cpu.Copy(a.Cpu, 3, b.Cpu, 10, 20); f.Gpu.Copy(a.Gpu, 3, b.Gpu, 10, 20);
        Same("copy", b);
        // Overlapping ranges of one tensor: memmove semantics in both directions.
        f.Cpu.Copy(a.Cpu, 0, a.Cpu, 5, 30); f.Gpu.Copy(a.Gpu, 0, a.Gpu, 5, 30);
        Same("copy overlapping forward", a);
        f.Cpu.Copy(a.Cpu, 7, a.Cpu, 2, 30); f.Gpu.Copy(a.Gpu, 7, a.Gpu, 2, 30);
        Same("copy overlapping backward", a);
        Assert.Throws<ArgumentException>(() => f.Gpu.Copy(a.Gpu, 30, b.Gpu, 0, 11));
        Assert.Throws<ArgumentException>(() => f.Gpu.Fill(a.Cpu, 0f));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void CopyRows_gathers_and_accumulates(bool accumulate)
    {
        using var src = Rand("src", 5, 4, 9);
        using var dst = Rand("dst", 6, 3, 7);
        f.Cpu.CopyRows(src.Cpu, 2, 9, dst.Cpu, 1, 7, 3, 5, accumulate);
        f.Gpu.CopyRows(src.Gpu, 2, 9, dst.Gpu, 1, 7, 3, 5, accumulate);
        Same($"copy rows (accumulate {accumulate})", dst);
        Assert.Throws<ArgumentException>(() => f.Gpu.CopyRows(src.Gpu, 2, 9, dst.Gpu, 3, 7, 3, 5, accumulate));
    }

    // ---- elementwise ----------------------------------------------------------------------------------

    [Fact]
    public void Add_and_axpy_match_including_aliasing()
    {
        using var a = Rand("a", 7, 37);
        using var b = Rand("b", 8, 37);
        using var y = Rand("y", 9, 40);
        f.Cpu.Add(a.Cpu, b.Cpu, y.Cpu, 37); f.Gpu.Add(a.Gpu, b.Gpu, y.Gpu, 37);
        Same("add", y);
        f.Cpu.Add(a.Cpu, b.Cpu, a.Cpu, 37); f.Gpu.Add(a.Gpu, b.Gpu, a.Gpu, 37);
        Same("add in place", a);
        f.Cpu.Axpy(-0.75f, b.Cpu, y.Cpu, 33); f.Gpu.Axpy(-0.75f, b.Gpu, y.Gpu, 33);
        Same("axpy", y);
        Assert.Throws<ArgumentException>(() => f.Gpu.Add(a.Gpu, b.Gpu, y.Gpu, 38));
    }

    [Fact]
    public void Gelu_forward_and_backward_match_over_a_wide_range()
    {
        var xs = Random(10, 301, 6f);
        xs[0] = 0f; xs[1] = -0f; xs[2] = 12f; xs[3] = -12f;
        using var x = P("x", xs, 301);
        using var y = Rand("y", 11, 301);
        f.Cpu.GeluForward(x.Cpu, y.Cpu, 301); f.Gpu.GeluForward(x.Gpu, y.Gpu, 301);
        Same("gelu", y);
        using var d = Rand("dy", 12, 301);
        // dy and dx alias, as in the ViT's MLP backward.
        f.Cpu.GeluBackward(x.Cpu, d.Cpu, d.Cpu, 301); f.Gpu.GeluBackward(x.Gpu, d.Gpu, d.Gpu, 301);
        Same("gelu backward (in place)", d);
    }

    // ---- GEMM --------------------------------------------------------------------------------------------

    public static IEnumerable<object[]> Transposes() => [[false, false], [false, true], [true, false], [true, true]];

    /// <summary>Two tiles each way in m and n, two K slices with a ragged tail, padded leading dimensions, offsets.</summary>
    [Theory, MemberData(nameof(Transposes))]
    public void Gemm_matches_for_every_transpose_with_offsets_and_leading_dimensions(bool transA, bool transB)
    {
        const int m = 67, n = 70, k = 19, pad = 3, aOff = 5, bOff = 2, cOff = 4;
        int lda = (transA ? m : k) + pad, ldb = (transB ? k : n) + pad, ldc = n + pad;
        using var a = Rand("A", 20, aOff + (transA ? k : m) * lda);
        using var b = Rand("B", 21, bOff + (transB ? n : k) * ldb);
        using var c = Rand("C", 22, cOff + m * ldc);
        f.Cpu.Gemm(transA, transB, m, n, k, 0.7f, a.Cpu, aOff, lda, b.Cpu, bOff, ldb, -0.4f, c.Cpu, cOff, ldc);
        f.Gpu.Gemm(transA, transB, m, n, k, 0.7f, a.Gpu, aOff, lda, b.Gpu, bOff, ldb, -0.4f, c.Gpu, cOff, ldc);
        Same($"gemm {(transA ? "T" : "N")}{(transB ? "T" : "N")}", c);
    }

    [Theory, MemberData(nameof(Transposes))]
    public void Batched_gemm_with_strides_matches(bool transA, bool transB)
    {
        const int m = 9, n = 13, k = 21, batch = 3;
        int lda = transA ? m : k, ldb = transB ? k : n, ldc = n + 1;
        long sa = (transA ? k : m) * lda + 2, sb = (transB ? n : k) * ldb + 1, sc = m * ldc + 3;
        using var a = Rand("A", 23, (int)(sa * batch));
        using var b = Rand("B", 24, (int)(sb * batch));
        using var c = Rand("C", 25, (int)(sc * batch));
        f.Cpu.Gemm(transA, transB, m, n, k, 1.3f, a.Cpu, 1, lda, b.Cpu, 0, ldb, 0.5f, c.Cpu, 2, ldc, batch, sa, sb, sc);
        f.Gpu.Gemm(transA, transB, m, n, k, 1.3f, a.Gpu, 1, lda, b.Gpu, 0, ldb, 0.5f, c.Gpu, 2, ldc, batch, sa, sb, sc);
        Same($"batched gemm {(transA ? "T" : "N")}{(transB ? "T" : "N")}", c);
    }

    [Fact]
    public void Gemm_with_beta_zero_overwrites_nan_and_k_zero_scales_c()
    {
        using var a = Rand("A", 26, 5 * 3);
        using var b = Rand("B", 27, 3 * 4);
        var nan = new float[5 * 4];
        Array.Fill(nan, float.NaN);
        using var c = P("C", nan, 5, 4);
        f.Cpu.Gemm(false, false, 5, 4, 3, 1f, a.Cpu, 0, 3, b.Cpu, 0, 4, 0f, c.Cpu, 0, 4);
        f.Gpu.Gemm(false, false, 5, 4, 3, 1f, a.Gpu, 0, 3, b.Gpu, 0, 4, 0f, c.Gpu, 0, 4);
        Same("gemm beta 0 over NaN", c);
        f.Cpu.Gemm(false, false, 5, 4, 0, 1f, a.Cpu, 0, 1, b.Cpu, 0, 4, 0.5f, c.Cpu, 0, 4);
        f.Gpu.Gemm(false, false, 5, 4, 0, 1f, a.Gpu, 0, 1, b.Gpu, 0, 4, 0.5f, c.Gpu, 0, 4);
        Same("gemm k = 0", c);
        Assert.Throws<ArgumentException>(() => f.Gpu.Gemm(false, false, 5, 4, 3, 1f, a.Gpu, 0, 2, b.Gpu, 0, 4, 0f, c.Gpu, 0, 4));
        Assert.Throws<ArgumentException>(() => f.Gpu.Gemm(false, false, 5, 4, 3, 1f, a.Gpu, 1, 3, b.Gpu, 0, 4, 0f, c.Gpu, 0, 4));
    }

    [Fact]
    public void Bias_add_and_bias_gradient_match()
    {
        using var y = Rand("y", 30, 11, 37);
        using var bias = Rand("bias", 31, 37);
        f.Cpu.AddBias(y.Cpu, bias.Cpu, 11, 37); f.Gpu.AddBias(y.Gpu, bias.Gpu, 11, 37);
        Same("add bias", y);
        using var db = Rand("dbias", 32, 37);
        f.Cpu.BiasGradient(y.Cpu, db.Cpu, 11, 37); f.Gpu.BiasGradient(y.Gpu, db.Gpu, 11, 37);
        Same("bias gradient (accumulated)", db);
    }

    // ---- normalisation --------------------------------------------------------------------------------

    [Fact]
    public void LayerNorm_forward_matches_with_saved_statistics()
    {
        const int rows = 6, cols = 37;
        var xs = Random(40, rows * cols, 3f);
        for (int i = 0; i < cols; i++) xs[i] += 50f;   // a row far from zero mean
        using var x = P("x", xs, rows, cols);
        using var g = Rand("gamma", 41, cols);
        using var b = Rand("beta", 42, cols);
        using var y = Rand("y", 43, rows, cols);
        using var mean = Rand("mean", 44, rows);
        using var rstd = Rand("rstd", 45, rows);
        f.Cpu.LayerNormForward(x.Cpu, g.Cpu, b.Cpu, y.Cpu, mean.Cpu, rstd.Cpu, rows, cols, 1e-6f);
        f.Gpu.LayerNormForward(x.Gpu, g.Gpu, b.Gpu, y.Gpu, mean.Gpu, rstd.Gpu, rows, cols, 1e-6f);
        Same("layernorm y", y);
        Same("layernorm mean", mean);
        Same("layernorm rstd", rstd);
    }

    [Theory]
    [InlineData(false, true, true)]
    [InlineData(true, true, false)]
    [InlineData(true, false, true)]
    [InlineData(false, false, false)]
    public void LayerNorm_backward_matches(bool accumulateDx, bool withGamma, bool withBeta)
    {
        const int rows = 5, cols = 300;   // more columns than a group has threads
        using var x = Rand("x", 50, rows, cols);
        using var g = Rand("gamma", 51, cols);
        using var b = Rand("beta", 52, cols);
        using var y = Rand("y", 53, rows, cols);
        using var mean = Rand("mean", 54, rows);
        using var rstd = Rand("rstd", 55, rows);
        f.Cpu.LayerNormForward(x.Cpu, g.Cpu, b.Cpu, y.Cpu, mean.Cpu, rstd.Cpu, rows, cols, 1e-5f);
        f.Gpu.LayerNormForward(x.Gpu, g.Gpu, b.Gpu, y.Gpu, mean.Gpu, rstd.Gpu, rows, cols, 1e-5f);
        Same("layernorm y (300 cols)", y);
        using var dy = Rand("dy", 56, rows, cols);
        using var dx = Rand("dx", 57, rows, cols);
        using var dg = Rand("dgamma", 58, cols);
        using var db = Rand("dbeta", 59, cols);
        f.Cpu.LayerNormBackward(dy.Cpu, x.Cpu, g.Cpu, mean.Cpu, rstd.Cpu, dx.Cpu, withGamma ? dg.Cpu : null, withBeta ? db.Cpu : null, rows, cols, accumulateDx);
        f.Gpu.LayerNormBackward(dy.Gpu, x.Gpu, g.Gpu, mean.Gpu, rstd.Gpu, dx.Gpu, withGamma ? dg.Gpu : null, withBeta ? db.Gpu : null, rows, cols, accumulateDx);
        Same("layernorm dx", dx);
        Same("layernorm dgamma", dg);
        Same("layernorm dbeta", db);
        if (!withGamma) Assert.Equal(dg.Host, dg.Gpu.ToArray());
        if (!withBeta) Assert.Equal(db.Host, db.Gpu.ToArray());
    }

    [Theory]
    [InlineData(1f)]
    [InlineData(2.5f)]
    public void Softmax_matches_including_in_place(float temperature)
    {
        using var x = P("x", Random(60, 4 * 290, 8f), 4, 290);
        using var y = Rand("y", 61, 4, 290);
        f.Cpu.Softmax(x.Cpu, y.Cpu, 4, 290, temperature); f.Gpu.Softmax(x.Gpu, y.Gpu, 4, 290, temperature);
        Same($"softmax T={temperature}", y);
        f.Cpu.Softmax(x.Cpu, x.Cpu, 4, 290, temperature); f.Gpu.Softmax(x.Gpu, x.Gpu, 4, 290, temperature);
        Same($"softmax in place T={temperature}", x);
        Assert.Throws<ArgumentOutOfRangeException>(() => f.Gpu.Softmax(x.Gpu, y.Gpu, 4, 290, 0f));
    }

    // ---- attention --------------------------------------------------------------------------------------

    [Fact]
    public void Attention_forward_and_backward_match()
    {
        const int batch = 2, tokens = 5, heads = 2, headDim = 4, dim = heads * headDim;
        using var qkv = P("qkv", Random(70, batch * tokens * 3 * dim, 2f), batch, tokens, 3 * dim);
        using var o = Rand("out", 71, batch, tokens, dim);
        using var probs = Rand("probs", 72, batch, heads, tokens, tokens);
        f.Cpu.AttentionForward(qkv.Cpu, o.Cpu, probs.Cpu, batch, tokens, heads, headDim);
        f.Gpu.AttentionForward(qkv.Gpu, o.Gpu, probs.Gpu, batch, tokens, heads, headDim);
        Same("attention probs", probs);
        Same("attention output", o);
        using var dout = Rand("dout", 73, batch, tokens, dim);
        using var dqkv = Rand("dqkv", 74, batch, tokens, 3 * dim);
        f.Cpu.AttentionBackward(dout.Cpu, qkv.Cpu, probs.Cpu, dqkv.Cpu, batch, tokens, heads, headDim);
        f.Gpu.AttentionBackward(dout.Gpu, qkv.Gpu, probs.Gpu, dqkv.Gpu, batch, tokens, heads, headDim);
        Same("attention dqkv", dqkv);
        Same("attention probs unchanged by backward", probs);
        Assert.Throws<ArgumentException>(() => f.Gpu.AttentionForward(qkv.Gpu, o.Gpu, probs.Gpu, batch, tokens + 1, heads, headDim));
    }

    // ---- patches and tokens --------------------------------------------------------------------------------

    [Fact]
    public void Im2col_and_col2im_match()
    {
        const int batch = 2, channels = 3, h = 8, w = 12, patch = 4;
        int patches = batch * (h / patch) * (w / patch), rowLen = channels * patch * patch;
        using var image = Rand("image", 80, batch, channels, h, w);
        using var cols = Rand("cols", 81, patches, rowLen);
        f.Cpu.Im2Col(image.Cpu, cols.Cpu, batch, channels, h, w, patch);
        f.Gpu.Im2Col(image.Gpu, cols.Gpu, batch, channels, h, w, patch);
        Assert.Equal(cols.Cpu.ToArray(), cols.Gpu.ToArray());
        using var dcols = Rand("dcols", 82, patches, rowLen);
        using var dimage = Rand("dimage", 83, batch, channels, h, w);
        f.Cpu.Col2Im(dcols.Cpu, dimage.Cpu, batch, channels, h, w, patch);
        f.Gpu.Col2Im(dcols.Gpu, dimage.Gpu, batch, channels, h, w, patch);
        Assert.Equal(dimage.Cpu.ToArray(), dimage.Gpu.ToArray());
        Assert.Throws<ArgumentException>(() => f.Gpu.Im2Col(image.Gpu, cols.Gpu, batch, channels, h, w, 5));
    }

    [Theory]
    [InlineData(true, true)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    public void Token_assembly_and_its_backward_match(bool withCls, bool withPos)
    {
        const int batch = 3, patches = 4, dim = 6, tokens = patches + 1;
        using var pt = Rand("patch tokens", 90, batch * patches, dim);
        using var cls = Rand("cls", 91, dim);
        using var pos = Rand("pos", 92, tokens, dim);
        using var x = Rand("x", 93, batch, tokens, dim);
        f.Cpu.AssembleTokens(pt.Cpu, cls.Cpu, pos.Cpu, x.Cpu, batch, patches, dim);
        f.Gpu.AssembleTokens(pt.Gpu, cls.Gpu, pos.Gpu, x.Gpu, batch, patches, dim);
        Same("assembled tokens", x);
        using var dpt = Rand("dpatch", 94, batch * patches, dim);
        using var dcls = Rand("dcls", 95, dim);
        using var dpos = Rand("dpos", 96, tokens, dim);
        f.Cpu.AssembleTokensBackward(x.Cpu, dpt.Cpu, withCls ? dcls.Cpu : null, withPos ? dpos.Cpu : null, batch, patches, dim);
        f.Gpu.AssembleTokensBackward(x.Gpu, dpt.Gpu, withCls ? dcls.Gpu : null, withPos ? dpos.Gpu : null, batch, patches, dim);
        Same("dpatch tokens", dpt);
        Same("dcls (accumulated)", dcls);
        Same("dpos (accumulated)", dpos);
    }

    // ---- losses --------------------------------------------------------------------------------------------

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Cross_entropy_matches(bool withGradient)
    {
        const int rows = 4, classes = 7;
        using var z = P("logits", Random(100, rows * classes, 5f), rows, classes);
        using var labels = P("labels", [3f, 0f, 6f, 2f], rows);
        using var losses = Rand("losses", 101, rows);
        using var dz = Rand("dz", 102, rows, classes);
        f.Cpu.CrossEntropy(z.Cpu, labels.Cpu, losses.Cpu, withGradient ? dz.Cpu : null, rows, classes, 0.25f);
        f.Gpu.CrossEntropy(z.Gpu, labels.Gpu, losses.Gpu, withGradient ? dz.Gpu : null, rows, classes, 0.25f);
        Same("ce losses", losses);
        Same("ce dlogits", dz);
    }

    [Fact]
    public void Cross_entropy_with_an_invalid_label_gives_nan_on_the_device()
    {
        using var z = Rand("logits", 103, 2, 3);
        using var labels = P("labels", [1f, 3f], 2);
        using var losses = Rand("losses", 104, 2);
        using var dz = Rand("dz", 105, 2, 3);
        Assert.Throws<ArgumentOutOfRangeException>(() => f.Cpu.CrossEntropy(z.Cpu, labels.Cpu, losses.Cpu, dz.Cpu, 2, 3, 1f));
        f.Gpu.CrossEntropy(z.Gpu, labels.Gpu, losses.Gpu, dz.Gpu, 2, 3, 1f);
        var l = losses.Gpu.ToArray();
        Assert.True(float.IsFinite(l[0]));
        Assert.True(float.IsNaN(l[1]));
        Assert.All(dz.Gpu.ToArray().AsSpan(3, 3).ToArray(), v => Assert.True(float.IsNaN(v)));
    }

    [Theory]
    [InlineData(1f, true)]
    [InlineData(3f, true)]
    [InlineData(2f, false)]
    public void Kl_divergence_matches(float temperature, bool withGradient)
    {
        const int rows = 3, classes = 6;
        var target = Random(110, rows * classes, 2f);
        for (int r = 0; r < rows; r++)
        {
            double sum = 0;
            for (int c = 0; c < classes; c++) sum += target[r * classes + c] = MathF.Exp(target[r * classes + c]);
            for (int c = 0; c < classes; c++) target[r * classes + c] = (float)(target[r * classes + c] / sum);
        }
        target[1] = 0f;   // 0·log 0 = 0
        using var p = P("targets", target, rows, classes);
        using var z = P("logits", Random(111, rows * classes, 4f), rows, classes);
        using var losses = Rand("losses", 112, rows);
        using var dz = Rand("dz", 113, rows, classes);
        f.Cpu.KlDivergence(z.Cpu, p.Cpu, losses.Cpu, withGradient ? dz.Cpu : null, rows, classes, temperature, 0.5f);
        f.Gpu.KlDivergence(z.Gpu, p.Gpu, losses.Gpu, withGradient ? dz.Gpu : null, rows, classes, temperature, 0.5f);
        Same($"kl losses T={temperature}", losses);
        Same($"kl dlogits T={temperature}", dz);
    }

    // ---- optimizers ----------------------------------------------------------------------------------------

    public static IEnumerable<object[]> OptimizerCases()
    {
        foreach (string opt in new[] { "sgd", "rmsprop", "adam", "adamw" })
            foreach (var axis in new[] { MaskAxis.None, MaskAxis.Rows, MaskAxis.Columns })
                yield return [opt, axis];
    }

    /// <summary>Three steps on a 6×10 weight; outside the mask, weights and state stay bit-identical.</summary>
    [Theory, MemberData(nameof(OptimizerCases))]
    public void Masked_optimizer_steps_match_and_leave_the_rest_bit_identical(string optimizer, MaskAxis axis)
    {
        const int rows = 6, cols = 10;
        using var param = Rand("w", 120, rows, cols);
        using var grad = Rand("g", 121, rows, cols);
        using var s1 = P("s1", Random(122, rows * cols).Select(v => optimizer == "sgd" ? v : v * v * 0.01f).ToArray(), rows, cols);
        using var s2 = P("s2", Random(123, rows * cols).Select(v => v * v * 0.01f).ToArray(), rows, cols);
        float[] maskValues = axis == MaskAxis.Rows ? [1, 0, 0, 1, 1, 0] : [0, 1, 1, 0, 0, 0, 2, 0, 1, 0];
        using var mask = P("mask", maskValues, maskValues.Length);
        UpdateMask Mask(bool gpu) => axis switch
        {
            MaskAxis.None => UpdateMask.None(rows * cols),
            MaskAxis.Rows => UpdateMask.RowMask(gpu ? mask.Gpu : mask.Cpu, rows, cols),
            _ => UpdateMask.ColumnMask(gpu ? mask.Gpu : mask.Cpu, rows, cols),
        };
        for (int step = 1; step <= 3; step++)
        {
            foreach (bool gpu in new[] { false, true })
            {
                var be = gpu ? (IBackend)f.Gpu : f.Cpu;
                Tensor p = gpu ? param.Gpu : param.Cpu, g = gpu ? grad.Gpu : grad.Cpu, a = gpu ? s1.Gpu : s1.Cpu, b = gpu ? s2.Gpu : s2.Cpu;
                switch (optimizer)
                {
                    case "sgd": be.SgdStep(p, g, 0.1f, 0.01f, Mask(gpu)); break;
                    case "rmsprop": be.RmsPropStep(p, g, a, 1e-2f, 0.99f, 1e-8f, 0.01f, Mask(gpu)); break;
                    case "adam": be.AdamStep(p, g, a, b, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, false, step, Mask(gpu)); break;
                    default: be.AdamStep(p, g, a, b, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.05f, true, step, Mask(gpu)); break;
                }
            }
        }
        Same($"{optimizer}/{axis} weights", param);
        if (optimizer != "sgd") Same($"{optimizer}/{axis} state 1", s1);
        if (optimizer is "adam" or "adamw") Same($"{optimizer}/{axis} state 2", s2);
        var after = param.Gpu.ToArray();
        var state1 = s1.Gpu.ToArray();
        var state2 = s2.Gpu.ToArray();
        int untouched = 0;
        for (int i = 0; i < after.Length; i++)
        {
            bool selected = axis switch
            {
                MaskAxis.None => true,
                MaskAxis.Rows => maskValues[i / cols] != 0,
                _ => maskValues[i % cols] != 0,
            };
            if (selected)
            {
                Assert.False(BitEqual(after[i], param.Host[i]), $"{optimizer}: element {i} inside the mask did not move");
                continue;
            }
            untouched++;
            Assert.True(BitEqual(after[i], param.Host[i]), $"{optimizer}: weight {i} outside the mask changed");
            Assert.True(BitEqual(state1[i], s1.Host[i]), $"{optimizer}: state 1 at {i} outside the mask changed");
            Assert.True(BitEqual(state2[i], s2.Host[i]), $"{optimizer}: state 2 at {i} outside the mask changed");
        }
        Assert.Equal(axis == MaskAxis.None, untouched == 0);
    }

    [Fact]
    public void Optimizer_validation_matches_the_cpu_backend()
    {
        using var w = Rand("w", 130, 4, 5);
        using var g = Rand("g", 131, 5, 4);
        using var g2 = Rand("g2", 132, 4, 5);
        using var mask = Rand("mask", 133, 3);
        Assert.Throws<ShapeMismatchException>(() => f.Gpu.SgdStep(w.Gpu, g.Gpu, 0.1f, 0f, UpdateMask.None(20)));
        Assert.Throws<ArgumentException>(() => f.Gpu.SgdStep(w.Gpu, g2.Gpu, 0.1f, 0f, UpdateMask.RowMask(mask.Gpu, 4, 5)));
        Assert.Throws<ArgumentException>(() => f.Gpu.SgdStep(w.Gpu, g2.Gpu, 0.1f, 0f, UpdateMask.ColumnMask(mask.Gpu, 5, 4)));
        Assert.Throws<ArgumentOutOfRangeException>(() => f.Gpu.AdamStep(w.Gpu, g2.Gpu, g2.Gpu, g2.Gpu, 0.1f, 0.9f, 0.99f, 1e-8f, 0f, false, 0, UpdateMask.None(20)));
    }

    // ---- ops added for the hypernetwork and FT-L1 -----------------------------------------------------

    [Fact]
    public void Clamped_sigmoid_l1_penalty_and_strided_row_sums_match_the_cpu_backend()
    {
        var xs = Random(11, 64).Select(v => v * 6).ToArray();
        xs[0] = 9; xs[1] = -9;
        using var x = P("x", xs, 64);
        using var y = Rand("y", 12, 64);
        f.Cpu.SigmoidForward(x.Cpu, y.Cpu, 64, 3f, 1e-5f, 1 - 1e-5f); f.Gpu.SigmoidForward(x.Gpu, y.Gpu, 64, 3f, 1e-5f, 1 - 1e-5f);
        Same("sigmoid(3x) clamped", y);
        using var dy = Rand("dy", 13, 64);
        using var dx = Rand("dx", 14, 64);
        f.Cpu.SigmoidBackward(y.Cpu, dy.Cpu, dx.Cpu, 64, 3f, 1e-5f, 1 - 1e-5f); f.Gpu.SigmoidBackward(y.Gpu, dy.Gpu, dx.Gpu, 64, 3f, 1e-5f, 1 - 1e-5f);
        Same("sigmoid backward", dx);

        using var g = Rand("g", 15, 50);
        using var w = Rand("w", 16, 50);
        var w0Host = w.Host.ToArray();
        for (int i = 0; i < 50; i += 3) w0Host[i] += 0.1f;
        using var w0 = P("w0", w0Host, 50);
        f.Cpu.L1PenaltyGradient(g.Cpu, w.Cpu, w0.Cpu, 0.25f, 50); f.Gpu.L1PenaltyGradient(g.Gpu, w.Gpu, w0.Gpu, 0.25f, 50);
        Same("L1 penalty gradient", g);

        // dstStride 0 + accumulate sums strided rows into one (the hypernetwork's per-head bias gradient); srcStride 0 broadcasts.
        using var src = Rand("src", 17, 5, 12);
        using var sum = Rand("sum", 18, 4);
        f.Cpu.CopyRows(src.Cpu, 2, 12, sum.Cpu, 0, 0, 5, 4, accumulate: true); f.Gpu.CopyRows(src.Gpu, 2, 12, sum.Gpu, 0, 0, 5, 4, accumulate: true);
        Same("row sum via dstStride 0", sum);
        using var dst = Rand("dst", 19, 3, 12);
        f.Cpu.CopyRows(sum.Cpu, 0, 0, dst.Cpu, 1, 12, 3, 4, accumulate: true); f.Gpu.CopyRows(sum.Gpu, 0, 0, dst.Gpu, 1, 12, 3, 4, accumulate: true);
        Same("broadcast via srcStride 0", dst);
    }

    [Fact]
    public void Gated_combine_gate_gradient_and_bce_match_the_cpu_backend()
    {
        const int batch = 2, rows = 5, cols = 7;
        using var w = Rand("w", 21, rows, cols);
        using var delta = Rand("delta", 22, batch, rows, cols);
        using var gates = Rand("gates", 23, 3 * 9);
        foreach (var axis in new[] { MaskAxis.Rows, MaskAxis.Columns })
        {
            using var output = Rand("out", 24, batch, rows, cols);
            f.Cpu.GatedCombine(w.Cpu, gates.Cpu, 2, 9, delta.Cpu, output.Cpu, batch, rows, cols, axis);
            f.Gpu.GatedCombine(w.Gpu, gates.Gpu, 2, 9, delta.Gpu, output.Gpu, batch, rows, cols, axis);
            Same($"gated combine ({axis})", output);
            using var grad = Rand("grad", 25, 3 * 9);
            f.Cpu.GateGradient(output.Cpu, delta.Cpu, grad.Cpu, 1, 9, batch, rows, cols, axis, 0.125f);
            f.Gpu.GateGradient(output.Gpu, delta.Gpu, grad.Gpu, 1, 9, batch, rows, cols, axis, 0.125f);
            Same($"gate gradient ({axis})", grad);
        }
        var probs = Random(26, 3000).Select(v => 0.02f + 0.96f * (v * 0.5f + 0.5f) % 1f).Select(v => Math.Clamp(v, 1e-5f, 1 - 1e-5f)).ToArray();
        using var p = P("p", probs, 3000);
        using var y = P("y", Random(27, 3000).Select(v => Math.Clamp(v * 0.5f + 0.5f, 0f, 1f)).ToArray(), 3000);
        using var loss = Rand("loss", 28, 1);
        using var dp = Rand("dp", 29, 3000);
        f.Cpu.BinaryCrossEntropy(p.Cpu, y.Cpu, loss.Cpu, dp.Cpu, 3000, 0.1f); f.Gpu.BinaryCrossEntropy(p.Gpu, y.Gpu, loss.Gpu, dp.Gpu, 3000, 0.1f);
        Same("bce loss", loss);
        Same("bce gradient", dp);
    }
}

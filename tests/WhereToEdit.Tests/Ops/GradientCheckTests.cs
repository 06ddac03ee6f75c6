using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Tensors;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Ops;

/// <summary>
/// Finite-difference checks of every op's backward on random tiny shapes: the scalar L = Σ w·forward(x) with
/// fixed random w is differentiated numerically (central differences in double over fp32 forwards) and
/// compared with the op's backward.
/// </summary>
public sealed class GradientCheckTests(ITestOutputHelper output) : IDisposable
{
    private readonly CpuBackend _be = Backends.Cpu(GemmKind.Managed);
    private readonly Rng _rng = new(7);

    public void Dispose() => _be.Dispose();

    private float[] Random(int n, double scale = 1) => TestMath.Normal(_rng, n, scale);

    /// <summary>Numerical d L / d x where L(x) = Σ w·f(x).</summary>
    private static float[] Numerical(float[] x, float[] w, Func<float[], float[]> f, float eps = 1e-2f)
    {
        var g = new float[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            float keep = x[i];
            x[i] = keep + eps; double plus = TestMath.Dot(w, f(x));
            x[i] = keep - eps; double minus = TestMath.Dot(w, f(x));
            x[i] = keep;
            g[i] = (float)((plus - minus) / (2 * eps));
        }
        return g;
    }


    private Tensor T(string name, float[] data) => _be.FromHost(name, data, data.Length);

    private void Check(string name, float[] analytic, float[] numerical) => Compare.Check(output, name, analytic, numerical, 2e-3);

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void Gemm_gradients(bool transA, bool transB)
    {
        const int m = 3, n = 4, k = 5;
        float[] a = Random(m * k), b = Random(k * n), w = Random(m * n);
        int lda = transA ? m : k, ldb = transB ? k : n;
        float[] Forward(float[] av, float[] bv)
        {
            var c = _be.Allocate("c", m * n);
            _be.Gemm(transA, transB, m, n, k, 1f, T("a", av), 0, lda, T("b", bv), 0, ldb, 0f, c, 0, n);
            return c.ToArray();
        }
        // C = op(A)·op(B): dop(A) = dC·op(B)ᵀ, dop(B) = op(A)ᵀ·dC, written in A's / B's storage layout.
        var dc = T("dc", w);
        var da = _be.Allocate("da", m * k);
        var db = _be.Allocate("db", k * n);
        if (!transA) _be.Gemm(false, !transB, m, k, n, 1f, dc, 0, n, T("b", b), 0, ldb, 0f, da, 0, k);
        else _be.Gemm(transB, true, k, m, n, 1f, T("b", b), 0, ldb, dc, 0, n, 0f, da, 0, m);
        if (!transB) _be.Gemm(!transA, false, k, n, m, 1f, T("a", a), 0, lda, dc, 0, n, 0f, db, 0, n);
        else _be.Gemm(true, transA, n, k, m, 1f, dc, 0, n, T("a", a), 0, lda, 0f, db, 0, k);
        Check("gemm dA", da.ToArray(), Numerical(a, w, av => Forward(av, b)));
        Check("gemm dB", db.ToArray(), Numerical(b, w, bv => Forward(a, bv)));
    }

    [Fact]
    public void Bias_gradient()
    {
        const int rows = 4, cols = 6;
        float[] y0 = Random(rows * cols), bias = Random(cols), w = Random(rows * cols);
        float[] Forward(float[] bv) { var y = T("y", y0); _be.AddBias(y, T("bias", bv), rows, cols); return y.ToArray(); }
        var db = _be.Allocate("db", cols);
        _be.BiasGradient(T("w", w), db, rows, cols);
        Check("bias", db.ToArray(), Numerical(bias, w, Forward));
    }

    [Fact]
    public void LayerNorm_gradients()
    {
        const int rows = 3, cols = 7;
        float[] x = Random(rows * cols, 2), gamma = Random(cols), beta = Random(cols), w = Random(rows * cols);
        float[] Forward(float[] xv, float[] gv, float[] bv)
        {
            var y = _be.Allocate("y", rows * cols);
            _be.LayerNormForward(T("x", xv), T("g", gv), T("b", bv), y, _be.Allocate("m", rows), _be.Allocate("r", rows), rows, cols, 1e-5f);
            return y.ToArray();
        }
        var mean = _be.Allocate("m", rows); var rstd = _be.Allocate("r", rows);
        _be.LayerNormForward(T("x", x), T("g", gamma), T("b", beta), _be.Allocate("y", rows * cols), mean, rstd, rows, cols, 1e-5f);
        var dx = _be.FromHost("dx", Enumerable.Repeat(0.5f, rows * cols).ToArray(), rows * cols);
        var dg = _be.Allocate("dg", cols); var dbeta = _be.Allocate("db", cols);
        _be.LayerNormBackward(T("w", w), T("x", x), T("g", gamma), mean, rstd, dx, dg, dbeta, rows, cols, accumulateDx: true);
        var dxExpected = Numerical(x, w, xv => Forward(xv, gamma, beta)).Select(v => v + 0.5f).ToArray();
        Check("layernorm dx (accumulated)", dx.ToArray(), dxExpected);
        Check("layernorm dgamma", dg.ToArray(), Numerical(gamma, w, gv => Forward(x, gv, beta)));
        Check("layernorm dbeta", dbeta.ToArray(), Numerical(beta, w, bv => Forward(x, gamma, bv)));
    }

    [Fact]
    public void Gelu_gradient_and_exact_values()
    {
        float[] x = Random(300, 3), w = Random(300);
        float[] Forward(float[] xv) { var y = _be.Allocate("y", xv.Length); _be.GeluForward(T("x", xv), y, xv.Length); return y.ToArray(); }
        var dx = _be.Allocate("dx", x.Length);
        _be.GeluBackward(T("x", x), T("w", w), dx, x.Length);
        Check("gelu dx", dx.ToArray(), Numerical(x, w, Forward, 1e-3f));
        // Exact erf GELU values x·Φ(x) (Python's math.erf, double): relative error ≤ 2e-6 even in the far tail.
        float[] points = [-5f, -3f, -1f, -0.1f, 0f, 0.1f, 1f, 3f];
        double[] exact = [-1.4332578593401202e-06, -0.00404969409489031, -0.15865525393145707, -0.0460172162722971, 0.0, 0.053982783727702904, 0.8413447460685429, 2.99595030590511];
        var y = Forward(points);
        for (int i = 0; i < points.Length; i++)
            Assert.True(Math.Abs(y[i] - exact[i]) <= 2e-6 * Math.Abs(exact[i]) + 1e-12, $"gelu({points[i]}) = {y[i]}, exact {exact[i]}");
    }

    [Fact]
    public void Attention_gradient()
    {
        const int batch = 2, tokens = 3, heads = 2, hd = 2, dim = heads * hd;
        float[] qkv = Random(batch * tokens * 3 * dim), w = Random(batch * tokens * dim);
        float[] Forward(float[] q)
        {
            var o = _be.Allocate("o", batch * tokens * dim);
            _be.AttentionForward(T("qkv", q), o, _be.Allocate("p", batch * heads * tokens * tokens), batch, tokens, heads, hd);
            return o.ToArray();
        }
        var probs = _be.Allocate("p", batch * heads * tokens * tokens);
        _be.AttentionForward(T("qkv", qkv), _be.Allocate("o", batch * tokens * dim), probs, batch, tokens, heads, hd);
        var dqkv = _be.Allocate("dqkv", qkv.Length);
        _be.AttentionBackward(T("w", w), T("qkv", qkv), probs, dqkv, batch, tokens, heads, hd);
        Check("attention dqkv", dqkv.ToArray(), Numerical(qkv, w, Forward));
    }

    [Fact]
    public void Patch_embedding_im2col_gradient()
    {
        const int batch = 2, c = 2, h = 4, wd = 6, patch = 2;
        int cols = batch * (h / patch) * (wd / patch) * c * patch * patch;
        float[] image = Random(batch * c * h * wd), w = Random(cols);
        float[] Forward(float[] img) { var col = _be.Allocate("col", cols); _be.Im2Col(T("img", img), col, batch, c, h, wd, patch); return col.ToArray(); }
        var dimg = _be.Allocate("dimg", image.Length);
        _be.Col2Im(T("w", w), dimg, batch, c, h, wd, patch);
        Check("im2col dimage", dimg.ToArray(), Numerical(image, w, Forward));
        // im2col layout = conv weight layout (channel, ky, kx) per patch, patches row-major.
        var first = Forward(image);
        Assert.Equal(image[0 * wd + 1], first[1]);            // b0, patch (0,0), c0, ky0, kx1
        Assert.Equal(image[h * wd + 1 * wd + 0], first[6]);   // b0, patch (0,0), c1, ky1, kx0
        Assert.Equal(image[2], first[c * patch * patch]);     // b0, patch (0,1), c0, ky0, kx0
    }

    [Fact]
    public void Token_assembly_gradients()
    {
        const int batch = 2, patches = 3, dim = 4, tokens = patches + 1;
        float[] pt = Random(batch * patches * dim), cls = Random(dim), pos = Random(tokens * dim), w = Random(batch * tokens * dim);
        float[] Forward(float[] p, float[] c, float[] ps)
        {
            var x = _be.Allocate("x", batch * tokens * dim);
            _be.AssembleTokens(T("pt", p), T("cls", c), T("pos", ps), x, batch, patches, dim);
            return x.ToArray();
        }
        var dpt = _be.Allocate("dpt", pt.Length); var dcls = _be.Allocate("dcls", dim); var dpos = _be.Allocate("dpos", pos.Length);
        _be.AssembleTokensBackward(T("w", w), dpt, dcls, dpos, batch, patches, dim);
        Check("tokens dpatch", dpt.ToArray(), Numerical(pt, w, p => Forward(p, cls, pos)));
        Check("tokens dcls", dcls.ToArray(), Numerical(cls, w, c => Forward(pt, c, pos)));
        Check("tokens dpos", dpos.ToArray(), Numerical(pos, w, ps => Forward(pt, cls, ps)));
    }

    [Fact]
    public void Cross_entropy_gradient()
    {
        const int rows = 3, classes = 5;
        float[] z = Random(rows * classes, 2);
        float[] labels = [4, 0, 2];
        float[] ones = Enumerable.Repeat(1f, rows).ToArray();
        float[] Forward(float[] zv) { var l = _be.Allocate("l", rows); _be.CrossEntropy(T("z", zv), T("y", labels), l, null, rows, classes, 1f); return l.ToArray(); }
        var dz = _be.Allocate("dz", z.Length);
        _be.CrossEntropy(T("z", z), T("y", labels), _be.Allocate("l", rows), dz, rows, classes, 1f);
        Check("cross-entropy dlogits", dz.ToArray(), Numerical(z, ones, Forward));
    }

    [Fact]
    public void Kl_divergence_gradient()
    {
        const int rows = 2, classes = 6;
        const float temperature = 5f;
        float[] z = Random(rows * classes, 3), teacher = Random(rows * classes, 3);
        var p = _be.Allocate("p", teacher.Length);
        _be.Softmax(T("t", teacher), p, rows, classes, temperature);
        float[] ones = Enumerable.Repeat(1f, rows).ToArray();
        float[] Forward(float[] zv) { var l = _be.Allocate("l", rows); _be.KlDivergence(T("z", zv), p, l, null, rows, classes, temperature, 1f); return l.ToArray(); }
        var dz = _be.Allocate("dz", z.Length);
        _be.KlDivergence(T("z", z), p, _be.Allocate("l", rows), dz, rows, classes, temperature, 1f);
        Check("kl dlogits", dz.ToArray(), Numerical(z, ones, Forward));
        // KL(p‖p) = 0 when the student is the teacher.
        var l0 = _be.Allocate("l0", rows);
        _be.KlDivergence(T("t", teacher), p, l0, null, rows, classes, temperature, 1f);
        Assert.All(l0.ToArray(), v => Assert.InRange(v, -1e-5f, 1e-5f));
    }

    [Fact]
    public void Scaled_clamped_sigmoid_gradient()
    {
        float[] x = Random(200, 2), w = Random(200);
        x[0] = 9f; x[1] = -9f;   // saturated beyond the clamp: no gradient
        const float lo = 1e-5f, hi = 1 - 1e-5f;
        float[] Forward(float[] xv) { var y = _be.Allocate("y", xv.Length); _be.SigmoidForward(T("x", xv), y, xv.Length, 3f, lo, hi); return y.ToArray(); }
        var y0 = Forward(x);
        Assert.Equal(hi, y0[0]); Assert.Equal(lo, y0[1]);
        var dx = _be.Allocate("dx", x.Length);
        _be.SigmoidBackward(T("y", y0), T("w", w), dx, x.Length, 3f, lo, hi);
        Check("sigmoid(3x) clamped dx", dx.ToArray(), Numerical(x, w, Forward, 1e-3f));
        Assert.Equal(0f, dx.ToArray()[0]); Assert.Equal(0f, dx.ToArray()[1]);
    }

    [Fact]
    public void Hypernetwork_parameter_gradients()
    {
        var vit = WhereToEdit.Engine.Models.VitConfig.Preset("test_gray");
        var config = WhereToEdit.Engine.Models.HypernetConfig.For(vit, units: 2, depth: 2, heads: 2);
        using var net = new WhereToEdit.Engine.Models.Hypernetwork(_be, config);
        var rng = new Rng(11);
        foreach (var p in net.Parameters)
            p.Value.CopyFrom(Enumerable.Range(0, (int)p.Length).Select(_ => (float)(rng.NextNormal() * 0.3)).ToArray());
        using var ws = net.CreateWorkspace(2);
        var cls = T("cls", Random(2 * config.EmbedDim));
        var w = Random(2 * config.Units * config.UnitSize);
        float[] Scores() { net.Forward(ws, cls, 2); return ws.Scores.ToArray(); }
        net.ZeroGrad();
        Scores();
        ws.DScores.CopyFrom(w);
        net.Backward(ws, 2);
        foreach (string name in new[] { "query_tokens", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc1.bias", "blocks.0.norm1.weight", "heads.1.weight", "heads.0.bias" })
        {
            var p = net[name];
            var values = p.Value.ToArray();
            var numerical = Numerical(values, w, v => { p.Value.CopyFrom(v); return Scores(); }, 1e-2f);
            p.Value.CopyFrom(values);
            Check("hypernet " + name, p.Grad.ToArray(), numerical);
        }
    }
}

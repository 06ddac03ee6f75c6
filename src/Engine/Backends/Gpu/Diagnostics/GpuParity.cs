using System.Text.Json.Serialization;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Backends.Gpu;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu.Diagnostics;

/// <summary>One comparison of the GPU backend against the CPU backend: normwise relative error max|gpu − cpu| / max|cpu|.</summary>
public sealed record ParityCheck
{
    [JsonPropertyName("name")] public required string Name { get; init; }
    [JsonPropertyName("rel_err")] public double RelativeError { get; init; }
    [JsonPropertyName("tolerance")] public double Tolerance { get; init; }
    [JsonPropertyName("detail")] public string? Detail { get; init; }
    [JsonPropertyName("passed")] public bool Passed => RelativeError <= Tolerance;   // NaN fails
}

/// <summary>Shapes of the parity suite: <see cref="Realistic"/> (ViT-B sizes, for a real GPU) or <see cref="Tiny"/> (the CPU emulator).</summary>
public sealed record ParityShapes
{
    public required int Batch { get; init; }
    public required int Dim { get; init; }
    public required int Heads { get; init; }
    public required int Hidden { get; init; }
    public required int Classes { get; init; }
    public required int ImageSize { get; init; }
    public required int PatchSize { get; init; }
    /// <summary>Samples of the per-sample delta check.</summary>
    public required int Samples { get; init; }
    /// <summary>Whole-model forward/backward check: a preset name and its batch.</summary>
    public required string VitPreset { get; init; }
    public required int VitBatch { get; init; }

    public int Patches => (ImageSize / PatchSize) * (ImageSize / PatchSize);
    public int Tokens => Patches + 1;

    /// <summary>ViT-B/16 layer sizes (224 px, 197 tokens, dim 768, 12 heads, MLP 3072, 1000 classes), batch 2; vit_tiny end to end.</summary>
    public static readonly ParityShapes Realistic = new()
    {
        Batch = 2, Dim = 768, Heads = 12, Hidden = 3072, Classes = 1000, ImageSize = 224, PatchSize = 16, Samples = 4,
        VitPreset = "vit_tiny_patch16_224", VitBatch = 2,
    };

    /// <summary>Shapes small enough for ILGPU's CPU accelerator.</summary>
    public static readonly ParityShapes Tiny = new()
    {
        Batch = 2, Dim = 8, Heads = 2, Hidden = 20, Classes = 7, ImageSize = 8, PatchSize = 4, Samples = 2,
        VitPreset = "test_tiny", VitBatch = 2,
    };
}

/// <summary>
/// The GPU check's correctness half: every <see cref="IBackend"/> op of <see cref="GpuBackend"/> against the CPU backend
/// on the same random inputs, the masked optimizers through both the native kernels and the ILGPU kernels (with weights
/// and state outside the mask bit-identical), the native-only ops (gather-GEMM weight gradients, compact steps,
/// per-sample delta apply) against CPU-backend references, and a whole ViT forward/backward. A failing op is recorded
/// (with its exception) and the suite goes on.
/// </summary>
public sealed class GpuParity
{
    /// <summary>Per-op tolerance (the issue's 1e-4) and the model-level one (12 blocks of float32 rounding in a backward).</summary>
    public const double OpTolerance = 1e-4, ModelTolerance = 1e-3;

    private readonly GpuBackend _gpu;
    private readonly CpuBackend _cpu;
    private readonly ParityShapes _s;
    private readonly Action<ParityCheck>? _progress;
    private readonly List<ParityCheck> _results = [];
    private readonly Rng _rng = new(20251128);

    private GpuParity(GpuBackend gpu, CpuBackend cpu, ParityShapes shapes, Action<ParityCheck>? progress)
    {
        _gpu = gpu;
        _cpu = cpu;
        _s = shapes;
        _progress = progress;
    }

    public static IReadOnlyList<ParityCheck> Run(GpuBackend gpu, CpuBackend cpu, ParityShapes shapes, Action<ParityCheck>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(gpu);
        ArgumentNullException.ThrowIfNull(cpu);
        ArgumentNullException.ThrowIfNull(shapes);
        var suite = new GpuParity(gpu, cpu, shapes, progress);
        suite.RunAll();
        return suite._results;
    }

    private void RunAll()
    {
        Group("memory", Memory);
        Group("elementwise", Elementwise);
        Group("gemm", Gemms);
        Group("bias", Bias);
        Group("layernorm", LayerNorm);
        Group("softmax", Softmax);
        Group("attention", Attention);
        Group("patches", Patches);
        Group("losses", Losses);
        foreach (string opt in new[] { "sgd", "rmsprop", "adam", "adamw" })
            foreach (var axis in new[] { MaskAxis.None, MaskAxis.Rows, MaskAxis.Columns })
            {
                bool nativeToo = opt is "sgd" or "rmsprop" && axis != MaskAxis.None && _gpu.NativeKernelsAvailable;
                Group($"{opt}/{axis}", () => Optimizer(opt, axis, native: false));
                if (nativeToo) Group($"{opt}/{axis} native", () => Optimizer(opt, axis, native: true));
            }
        if (_gpu.NativeKernelsAvailable)
        {
            Group("native gather", NativeGather);
            Group("native compact", NativeCompact);
            Group("native per-sample", NativePerSample);
        }
        else
            Record(new ParityCheck { Name = "native kernels", RelativeError = double.PositiveInfinity, Tolerance = 0, Detail = "not run: " + _gpu.NativeKernelsStatus });
        Group("vit", Vit);
    }

    // ---- helpers ----------------------------------------------------------------------------------------------

    private sealed class Both(Tensor cpu, Tensor gpu, float[] host) : IDisposable
    {
        public Tensor C { get; } = cpu;
        public Tensor G { get; } = gpu;
        public float[] Host { get; } = host;

        public void Dispose()
        {
            C.Dispose();
            G.Dispose();
        }
    }

    private Both New(string name, float[] data, params int[] shape) => new(_cpu.FromHost(name, data, shape), _gpu.FromHost(name, data, shape), data);

    private float[] Random(long n, float scale = 1f)
    {
        var x = new float[n];
        for (long i = 0; i < n; i++) x[i] = (float)((_rng.NextDouble() * 2 - 1) * scale);
        return x;
    }

    private Both Rand(string name, params int[] shape) => RandScaled(name, 1f, shape);

    private Both RandScaled(string name, float scale, params int[] shape)
    {
        long n = 1;
        foreach (int d in shape) n *= d;
        return New(name, Random(n, scale), shape);
    }

    private void Record(ParityCheck check)
    {
        _results.Add(check);
        _progress?.Invoke(check);
    }

    /// <summary>max|a − e| / max|e| (max|a − e| when e is all zero); NaN or ±Inf anywhere in a gives +Inf.</summary>
    internal static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        if (actual.Length != expected.Length) return double.PositiveInfinity;
        double maxDiff = 0, maxRef = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            if (!float.IsFinite(actual[i]) && !(float.IsNaN(actual[i]) && float.IsNaN(expected[i]))) return double.PositiveInfinity;
            if (!float.IsFinite(expected[i])) continue;
            maxDiff = Math.Max(maxDiff, Math.Abs((double)actual[i] - expected[i]));
            maxRef = Math.Max(maxRef, Math.Abs((double)expected[i]));
        }
        return maxRef > 0 ? maxDiff / maxRef : maxDiff;
    }

    private void Check(string name, Tensor gpu, Tensor cpu, double tolerance = OpTolerance, string? detail = null)
        => Check(name, gpu.ToArray(), cpu.ToArray(), tolerance, detail);

    private void Check(string name, float[] gpu, float[] cpu, double tolerance = OpTolerance, string? detail = null)
        => Record(new ParityCheck { Name = name, RelativeError = RelativeError(gpu, cpu), Tolerance = tolerance, Detail = detail });

    private void Check(string name, Both t, double tolerance = OpTolerance, string? detail = null) => Check(name, t.G, t.C, tolerance, detail);

    private void Group(string name, Action body)
    {
        try
        {
            body();
            _gpu.Synchronize();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Record(new ParityCheck { Name = name, RelativeError = double.PositiveInfinity, Tolerance = 0, Detail = $"{e.GetType().Name}: {e.Message}" });
        }
    }

    private int Rows => _s.Batch * _s.Tokens;

    // ---- ops --------------------------------------------------------------------------------------------------------

    private void Memory()
    {
        int n = Rows * _s.Dim;
        using var x = Rand("x", Rows, _s.Dim);
        _cpu.Fill(x.C, 2.5f); _gpu.Fill(x.G, 2.5f);
        Check($"fill [{Rows},{_s.Dim}]", x);
        using var a = Rand("a", Rows, _s.Dim);
        using var b = Rand("b", Rows, _s.Dim);
        _cpu.Copy(a.C, 3, b.C, 10, n - 20); _gpu.Copy(a.G, 3, b.G, 10, n - 20);
        Check("copy", b);
        _cpu.Copy(a.C, 0, a.C, 7, n - 7); _gpu.Copy(a.G, 0, a.G, 7, n - 7);
        Check("copy (overlapping)", a);
        using var cls = Rand("cls", _s.Batch, _s.Dim);
        _cpu.CopyRows(b.C, 0, _s.Tokens * _s.Dim, cls.C, 0, _s.Dim, _s.Batch, _s.Dim, accumulate: true);
        _gpu.CopyRows(b.G, 0, _s.Tokens * _s.Dim, cls.G, 0, _s.Dim, _s.Batch, _s.Dim, accumulate: true);
        Check("copy_rows (CLS gather, accumulate)", cls);
    }

    private void Elementwise()
    {
        long n = (long)Rows * _s.Hidden;
        using var a = Rand("a", Rows, _s.Hidden);
        using var b = Rand("b", Rows, _s.Hidden);
        using var y = Rand("y", Rows, _s.Hidden);
        _cpu.Add(a.C, b.C, y.C, n); _gpu.Add(a.G, b.G, y.G, n);
        Check("add", y);
        _cpu.Axpy(-0.75f, a.C, y.C, n); _gpu.Axpy(-0.75f, a.G, y.G, n);
        Check("axpy", y);
        using var x = RandScaled("x", 4f, Rows, _s.Hidden);
        _cpu.GeluForward(x.C, y.C, n); _gpu.GeluForward(x.G, y.G, n);
        Check($"gelu forward [{Rows},{_s.Hidden}]", y);
        using var d = Rand("dy", Rows, _s.Hidden);
        _cpu.GeluBackward(x.C, d.C, d.C, n); _gpu.GeluBackward(x.G, d.G, d.G, n);
        Check("gelu backward (in place)", d);
        _cpu.SigmoidForward(x.C, y.C, n, 3f, 1e-5f, 1 - 1e-5f); _gpu.SigmoidForward(x.G, y.G, n, 3f, 1e-5f, 1 - 1e-5f);
        Check("sigmoid forward (clamped)", y);
        using var dx = Rand("dx", Rows, _s.Hidden);
        _cpu.SigmoidBackward(y.C, a.C, dx.C, n, 3f, 1e-5f, 1 - 1e-5f); _gpu.SigmoidBackward(y.G, a.G, dx.G, n, 3f, 1e-5f, 1 - 1e-5f);
        Check("sigmoid backward", dx);
        _cpu.L1PenaltyGradient(dx.C, a.C, b.C, 0.25f, n); _gpu.L1PenaltyGradient(dx.G, a.G, b.G, 0.25f, n);
        Check("l1 penalty gradient", dx);
    }

    private void Gemms()
    {
        int m = Rows, n = _s.Hidden, k = _s.Dim;
        foreach (var (ta, tb) in new[] { (false, false), (false, true), (true, false), (true, true) })
        {
            using var a = Rand("A", m * k);
            using var b = Rand("B", k * n);
            using var c = Rand("C", m, n);
            int lda = ta ? m : k, ldb = tb ? k : n;
            _cpu.Gemm(ta, tb, m, n, k, 1f, a.C, 0, lda, b.C, 0, ldb, 0.5f, c.C, 0, n);
            _gpu.Gemm(ta, tb, m, n, k, 1f, a.G, 0, lda, b.G, 0, ldb, 0.5f, c.G, 0, n);
            Check($"gemm {(ta ? 'T' : 'N')}{(tb ? 'T' : 'N')} {m}×{n}×{k}", c);
        }
        // Attention-shaped batched products: (batch·heads) × [T×T] = [T×hd]·[T×hd]ᵀ.
        int bh = _s.Batch * _s.Heads, t = _s.Tokens, hd = _s.Dim / _s.Heads;
        using var q = Rand("Q", bh * t * hd);
        using var kk = Rand("K", bh * t * hd);
        using var s = Rand("S", bh * t * t);
        _cpu.Gemm(false, true, t, t, hd, 0.125f, q.C, 0, hd, kk.C, 0, hd, 0f, s.C, 0, t, bh, t * hd, t * hd, t * t);
        _gpu.Gemm(false, true, t, t, hd, 0.125f, q.G, 0, hd, kk.G, 0, hd, 0f, s.G, 0, t, bh, t * hd, t * hd, t * t);
        Check($"batched gemm NT {bh}×({t}×{t}×{hd})", s);
    }

    private void Bias()
    {
        using var y = Rand("y", Rows, _s.Hidden);
        using var bias = Rand("bias", _s.Hidden);
        _cpu.AddBias(y.C, bias.C, Rows, _s.Hidden); _gpu.AddBias(y.G, bias.G, Rows, _s.Hidden);
        Check("add bias", y);
        _cpu.BiasGradient(y.C, bias.C, Rows, _s.Hidden); _gpu.BiasGradient(y.G, bias.G, Rows, _s.Hidden);
        Check("bias gradient", bias);
    }

    private void LayerNorm()
    {
        int rows = Rows, cols = _s.Dim;
        using var x = RandScaled("x", 3f, rows, cols);
        using var g = Rand("gamma", cols);
        using var b = Rand("beta", cols);
        using var y = Rand("y", rows, cols);
        using var mean = Rand("mean", rows);
        using var rstd = Rand("rstd", rows);
        _cpu.LayerNormForward(x.C, g.C, b.C, y.C, mean.C, rstd.C, rows, cols, 1e-6f);
        _gpu.LayerNormForward(x.G, g.G, b.G, y.G, mean.G, rstd.G, rows, cols, 1e-6f);
        Check($"layernorm forward y [{rows},{cols}]", y);
        Check("layernorm forward mean", mean);
        Check("layernorm forward rstd", rstd);
        using var dy = Rand("dy", rows, cols);
        using var dx = Rand("dx", rows, cols);
        using var dg = Rand("dgamma", cols);
        using var db = Rand("dbeta", cols);
        _cpu.LayerNormBackward(dy.C, x.C, g.C, mean.C, rstd.C, dx.C, dg.C, db.C, rows, cols, accumulateDx: true);
        _gpu.LayerNormBackward(dy.G, x.G, g.G, mean.G, rstd.G, dx.G, dg.G, db.G, rows, cols, accumulateDx: true);
        Check("layernorm backward dx (accumulate)", dx);
        Check("layernorm backward dgamma", dg);
        Check("layernorm backward dbeta", db);
    }

    private void Softmax()
    {
        int rows = _s.Batch * _s.Heads * _s.Tokens, cols = _s.Tokens;
        using var x = RandScaled("x", 8f, rows, cols);
        using var y = Rand("y", rows, cols);
        foreach (float temperature in new[] { 1f, 2f })
        {
            _cpu.Softmax(x.C, y.C, rows, cols, temperature); _gpu.Softmax(x.G, y.G, rows, cols, temperature);
            Check($"softmax [{rows},{cols}] T={temperature}", y);
        }
    }

    private void Attention()
    {
        int batch = _s.Batch, t = _s.Tokens, heads = _s.Heads, hd = _s.Dim / _s.Heads;
        using var qkv = RandScaled("qkv", 2f, batch, t, 3 * _s.Dim);
        using var o = Rand("out", batch, t, _s.Dim);
        using var probs = Rand("probs", batch, heads, t, t);
        _cpu.AttentionForward(qkv.C, o.C, probs.C, batch, t, heads, hd);
        _gpu.AttentionForward(qkv.G, o.G, probs.G, batch, t, heads, hd);
        Check($"attention forward probs (B {batch}, T {t}, {heads}×{hd})", probs);
        Check("attention forward output", o);
        using var dout = Rand("dout", batch, t, _s.Dim);
        using var dqkv = Rand("dqkv", batch, t, 3 * _s.Dim);
        _cpu.AttentionBackward(dout.C, qkv.C, probs.C, dqkv.C, batch, t, heads, hd);
        _gpu.AttentionBackward(dout.G, qkv.G, probs.G, dqkv.G, batch, t, heads, hd);
        Check("attention backward dqkv", dqkv);
    }

    private void Patches()
    {
        int batch = _s.Batch, size = _s.ImageSize, patch = _s.PatchSize, p = _s.Patches, rowLen = 3 * patch * patch;
        using var image = Rand("image", batch, 3, size, size);
        using var cols = Rand("cols", batch * p, rowLen);
        _cpu.Im2Col(image.C, cols.C, batch, 3, size, size, patch); _gpu.Im2Col(image.G, cols.G, batch, 3, size, size, patch);
        Check($"im2col {size}px / {patch}", cols);
        _cpu.Col2Im(cols.C, image.C, batch, 3, size, size, patch); _gpu.Col2Im(cols.G, image.G, batch, 3, size, size, patch);
        Check("col2im", image);
        using var pt = Rand("patch tokens", batch * p, _s.Dim);
        using var cls = Rand("cls", _s.Dim);
        using var pos = Rand("pos", _s.Tokens, _s.Dim);
        using var x = Rand("x", batch, _s.Tokens, _s.Dim);
        _cpu.AssembleTokens(pt.C, cls.C, pos.C, x.C, batch, p, _s.Dim); _gpu.AssembleTokens(pt.G, cls.G, pos.G, x.G, batch, p, _s.Dim);
        Check("assemble tokens", x);
        _cpu.AssembleTokensBackward(x.C, pt.C, cls.C, pos.C, batch, p, _s.Dim); _gpu.AssembleTokensBackward(x.G, pt.G, cls.G, pos.G, batch, p, _s.Dim);
        Check("assemble tokens backward dpatch", pt);
        Check("assemble tokens backward dcls", cls);
        Check("assemble tokens backward dpos", pos);
    }

    private void Losses()
    {
        int rows = 4 * _s.Batch, classes = _s.Classes;
        using var z = RandScaled("logits", 5f, rows, classes);
        var labels = Enumerable.Range(0, rows).Select(_ => (float)_rng.NextInt(0, classes)).ToArray();
        using var y = New("labels", labels, rows);
        using var losses = Rand("losses", rows);
        using var dz = Rand("dz", rows, classes);
        _cpu.CrossEntropy(z.C, y.C, losses.C, dz.C, rows, classes, 1f / rows); _gpu.CrossEntropy(z.G, y.G, losses.G, dz.G, rows, classes, 1f / rows);
        Check($"cross-entropy loss [{rows},{classes}]", losses);
        Check("cross-entropy dlogits", dz);
        var target = Random((long)rows * classes, 2f);
        for (int r = 0; r < rows; r++)
        {
            double sum = 0;
            for (int c = 0; c < classes; c++) sum += target[r * classes + c] = MathF.Exp(target[r * classes + c]);
            for (int c = 0; c < classes; c++) target[r * classes + c] = (float)(target[r * classes + c] / sum);
        }
        using var p = New("targets", target, rows, classes);
        _cpu.KlDivergence(z.C, p.C, losses.C, dz.C, rows, classes, 2f, 0.5f); _gpu.KlDivergence(z.G, p.G, losses.G, dz.G, rows, classes, 2f, 0.5f);
        Check("kl divergence loss T=2", losses);
        Check("kl divergence dlogits", dz);
    }

    /// <summary>
    /// Two steps on fc1-shaped [hidden, dim] (rows) or fc2-shaped [dim, hidden] (columns) weights keeping 10 % of the hidden
    /// units; outside the mask weights and state must stay bit-identical. native: the masked step runs the native kernel.
    /// </summary>
    private void Optimizer(string optimizer, MaskAxis axis, bool native)
    {
        int rows = axis == MaskAxis.Columns ? _s.Dim : _s.Hidden, cols = axis == MaskAxis.Columns ? _s.Hidden : _s.Dim;
        int units = axis == MaskAxis.Rows ? rows : cols;
        var maskValues = new float[axis == MaskAxis.None ? 1 : units];
        if (axis != MaskAxis.None)
        {
            int keep = Math.Max(1, units / 10);
            foreach (int i in Enumerable.Range(0, units).OrderBy(_ => _rng.NextUInt64()).Take(keep)) maskValues[i] = 1f;
        }
        using var w = Rand("w", rows, cols);
        using var g = Rand("g", rows, cols);
        using var s1 = New("s1", Random((long)rows * cols).Select(v => v * v * 0.01f).ToArray(), rows, cols);
        using var s2 = New("s2", Random((long)rows * cols).Select(v => v * v * 0.01f).ToArray(), rows, cols);
        using var mask = New("mask", maskValues, maskValues.Length);
        UpdateMask M(Tensor m) => axis switch
        {
            MaskAxis.None => UpdateMask.None((long)rows * cols),
            MaskAxis.Rows => UpdateMask.RowMask(m, rows, cols),
            _ => UpdateMask.ColumnMask(m, rows, cols),
        };
        bool before = _gpu.NativeMaskedOptimizers;
        _gpu.NativeMaskedOptimizers = native;
        try
        {
            for (int step = 1; step <= 2; step++)
                foreach (bool gpu in new[] { false, true })
                {
                    IBackend be = gpu ? _gpu : _cpu;
                    Tensor p = gpu ? w.G : w.C, gr = gpu ? g.G : g.C, a = gpu ? s1.G : s1.C, b = gpu ? s2.G : s2.C, m = gpu ? mask.G : mask.C;
                    switch (optimizer)
                    {
                        case "sgd": be.SgdStep(p, gr, 0.1f, 0.01f, M(m)); break;
                        case "rmsprop": be.RmsPropStep(p, gr, a, 1e-2f, 0.99f, 1e-8f, 0.01f, M(m)); break;
                        case "adam": be.AdamStep(p, gr, a, b, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, false, step, M(m)); break;
                        default: be.AdamStep(p, gr, a, b, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.05f, true, step, M(m)); break;
                    }
                }
        }
        finally
        {
            _gpu.NativeMaskedOptimizers = before;
        }
        string name = $"{optimizer} {(axis == MaskAxis.None ? "unmasked" : axis == MaskAxis.Rows ? "row mask" : "column mask")} [{rows},{cols}]{(native ? " native" : "")}";
        var wg = w.G.ToArray();
        var s1g = s1.G.ToArray();
        var s2g = s2.G.ToArray();
        long changedOutside = 0;
        if (axis != MaskAxis.None)
            for (long i = 0; i < wg.Length; i++)
            {
                long unit = axis == MaskAxis.Rows ? i / cols : i % cols;
                if (maskValues[unit] != 0) continue;
                if (BitConverter.SingleToInt32Bits(wg[i]) != BitConverter.SingleToInt32Bits(w.Host[i])
                    || BitConverter.SingleToInt32Bits(s1g[i]) != BitConverter.SingleToInt32Bits(s1.Host[i])
                    || BitConverter.SingleToInt32Bits(s2g[i]) != BitConverter.SingleToInt32Bits(s2.Host[i])) changedOutside++;
            }
        string? detail = changedOutside > 0 ? $"{changedOutside} elements outside the mask changed" : axis == MaskAxis.None ? null : "outside the mask bit-identical";
        double err = RelativeError(wg, w.C.ToArray());
        if (optimizer != "sgd") err = Math.Max(err, RelativeError(s1g, s1.C.ToArray()));
        if (optimizer is "adam" or "adamw") err = Math.Max(err, RelativeError(s2g, s2.C.ToArray()));
        Record(new ParityCheck { Name = name, RelativeError = changedOutside > 0 ? double.PositiveInfinity : err, Tolerance = OpTolerance, Detail = detail });
    }

    // ---- native-only ops ---------------------------------------------------------------------------------------

    private int[] KeepTenPercent(int units) => Enumerable.Range(0, units).OrderBy(_ => _rng.NextUInt64()).Take(Math.Max(1, units / 10)).Order().ToArray();

    /// <summary>The full weight gradients by the CPU backend's GEMM (as the backward computes them), gathered, against the gather kernels.</summary>
    private void NativeGather()
    {
        int t = Rows, d = _s.Dim, h = _s.Hidden;
        var idx = KeepTenPercent(h);
        int k = idx.Length;
        using var list = _gpu.CreateIndexList(idx, h);
        using var dH = Rand("dH", t, h);
        using var x = Rand("X", t, d);
        using var dY = Rand("dY", t, d);
        using var a = Rand("A", t, h);
        using var full1 = _cpu.Allocate("dW1", h, d);
        using var full2 = _cpu.Allocate("dW2", d, h);
        _cpu.Gemm(true, false, h, d, t, 1f, dH.C, 0, h, x.C, 0, d, 0f, full1, 0, d);
        _cpu.Gemm(true, false, d, h, t, 1f, dY.C, 0, d, a.C, 0, h, 0f, full2, 0, h);
        var f1 = full1.ToArray();
        var f2 = full2.ToArray();
        foreach (bool accumulate in new[] { false, true })
        {
            var init1 = Random((long)k * d);
            var init2 = Random((long)d * k);
            using var dW1c = _gpu.FromHost("dW1c", init1, k, d);
            using var dW2c = _gpu.FromHost("dW2c", init2, d, k);
            _gpu.GatherWeightGradientRows(dH.G, x.G, list, dW1c, t, d, h, accumulate);
            _gpu.GatherWeightGradientColumns(dY.G, a.G, list, dW2c, t, d, h, accumulate);
            var e1 = new float[k * d];
            var e2 = new float[d * k];
            for (int kk = 0; kk < k; kk++)
                for (int dd = 0; dd < d; dd++)
                {
                    e1[kk * d + dd] = f1[idx[kk] * d + dd] + (accumulate ? init1[kk * d + dd] : 0f);
                    e2[dd * k + kk] = f2[dd * h + idx[kk]] + (accumulate ? init2[dd * k + kk] : 0f);
                }
            Check($"native dw1_rows_gather T {t} D {d} H {h} K {k}{(accumulate ? " accumulate" : "")}", dW1c.ToArray(), e1);
            Check($"native dw2_cols_gather T {t} D {d} H {h} K {k}{(accumulate ? " accumulate" : "")}", dW2c.ToArray(), e2);
        }
    }

    /// <summary>Compact RMSprop/SGD steps from gathered gradients against the CPU backend's masked steps on the full gradients.</summary>
    private void NativeCompact()
    {
        foreach (var axis in new[] { MaskAxis.Rows, MaskAxis.Columns })
        {
            int rows = axis == MaskAxis.Rows ? _s.Hidden : _s.Dim, cols = axis == MaskAxis.Rows ? _s.Dim : _s.Hidden;
            int units = axis == MaskAxis.Rows ? rows : cols;
            var idx = KeepTenPercent(units);
            var maskValues = new float[units];
            foreach (int i in idx) maskValues[i] = 1f;
            using var list = _gpu.CreateIndexList(idx, units);
            using var mask = _cpu.FromHost("mask", maskValues, units);
            var gradHost = Random((long)rows * cols);
            var compactHost = axis == MaskAxis.Rows
                ? idx.SelectMany(r => gradHost.AsSpan(r * cols, cols).ToArray()).ToArray()
                : Enumerable.Range(0, rows).SelectMany(r => idx.Select(c => gradHost[r * cols + c])).ToArray();
            using var grad = _cpu.FromHost("grad", gradHost, rows, cols);
            using var compact = _gpu.FromHost("compact", compactHost, compactHost.Length);
            using var wr = Rand("w", rows, cols);
            using var ws = Rand("w2", rows, cols);
            using var v = New("v", Random((long)rows * cols).Select(x => x * x * 0.01f).ToArray(), rows, cols);
            var m = axis == MaskAxis.Rows ? UpdateMask.RowMask(mask, rows, cols) : UpdateMask.ColumnMask(mask, rows, cols);
            for (int step = 0; step < 2; step++)
            {
                _cpu.RmsPropStep(wr.C, grad, v.C, 1e-2f, 0.99f, 1e-8f, 0f, m);
                _gpu.MaskedRmsPropCompact(axis, wr.G, compact, v.G, list, rows, cols, 1e-2f, 0.99f, 1e-8f, 0f);
                _cpu.SgdStep(ws.C, grad, 0.1f, 0.01f, m);
                _gpu.MaskedSgdCompact(axis, ws.G, compact, list, rows, cols, 0.1f, 0.01f);
            }
            string shape = $"[{rows},{cols}] K {idx.Length}";
            Check($"native masked_rmsprop_{(axis == MaskAxis.Rows ? "rows" : "cols")}_compact {shape}",
                [.. wr.G.ToArray(), .. v.G.ToArray()], [.. wr.C.ToArray(), .. v.C.ToArray()]);
            Check($"native masked_sgd_{(axis == MaskAxis.Rows ? "rows" : "cols")}_compact {shape}", ws);
        }
    }

    /// <summary>Per-sample delta apply against the CPU backend's GEMM with each sample's effective weight W + m·Δ.</summary>
    private void NativePerSample()
    {
        int samples = _s.Samples, tokens = _s.Tokens;
        foreach (var axis in new[] { MaskAxis.Rows, MaskAxis.Columns })
        {
            // fc1: W1 [hidden, dim] gated by rows; fc2: W2 [dim, hidden] gated by columns. The mask is per hidden unit.
            int inF = axis == MaskAxis.Rows ? _s.Dim : _s.Hidden, outF = axis == MaskAxis.Rows ? _s.Hidden : _s.Dim;
            int maskLen = _s.Hidden;
            var xHost = Random((long)samples * tokens * inF);
            var wHost = Random((long)outF * inF, 0.05f);
            var dHost = Random((long)samples * outF * inF, 0.01f);
            var mHost = new float[samples * maskLen];
            for (int s = 0; s < samples; s++)
                foreach (int i in KeepTenPercent(maskLen)) mHost[s * maskLen + i] = (float)_rng.NextDouble();
            var bHost = Random(outF);
            using var x = _gpu.FromHost("X", xHost, samples, tokens, inF);
            using var w = _gpu.FromHost("W", wHost, outF, inF);
            using var delta = _gpu.FromHost("delta", dHost, samples, outF, inF);
            using var mask = _gpu.FromHost("mask", mHost, samples, maskLen);
            using var bias = _gpu.FromHost("bias", bHost, outF);
            using var result = _gpu.Allocate("out", samples, tokens, outF);
            _gpu.PerSampleDeltaLinear(axis, result, x, w, delta, mask, bias, samples, tokens, inF, outF);
            var expected = new float[samples * tokens * outF];
            for (int s = 0; s < samples; s++)
            {
                var weff = new float[outF * inF];
                for (int o = 0; o < outF; o++)
                    for (int i = 0; i < inF; i++)
                    {
                        float m = mHost[s * maskLen + (axis == MaskAxis.Rows ? o : i)];
                        weff[o * inF + i] = m != 0 ? MathF.FusedMultiplyAdd(m, dHost[((long)s * outF + o) * inF + i], wHost[o * inF + i]) : wHost[o * inF + i];
                    }
                using var xs = _cpu.FromHost("xs", xHost.AsSpan(s * tokens * inF, tokens * inF), tokens, inF);
                using var wsT = _cpu.FromHost("weff", weff, outF, inF);
                using var ys = _cpu.Allocate("ys", tokens, outF);
                using var bs = _cpu.FromHost("b", bHost, outF);
                _cpu.Gemm(false, true, tokens, outF, inF, 1f, xs, 0, inF, wsT, 0, inF, 0f, ys, 0, outF);
                _cpu.AddBias(ys, bs, tokens, outF);
                ys.ToArray().CopyTo(expected, s * tokens * outF);
            }
            Check($"native per_sample_delta_{(axis == MaskAxis.Rows ? "rows" : "cols")} S {samples} T {tokens} I {inF} O {outF}", result.ToArray(), expected);
        }
    }

    // ---- whole model ----------------------------------------------------------------------------------------------

    private void Vit()
    {
        var config = VitConfig.Preset(_s.VitPreset);
        int batch = _s.VitBatch;
        using var mc = new VitModel(_cpu, config);
        using var mg = new VitModel(_gpu, config);
        mc.InitializeRandom(7);
        foreach (var p in mc.Parameters) mg[p.Name].Value.CopyFrom(p.Value.ToArray());
        var images = Random((long)batch * config.InChans * config.ImageSize * config.ImageSize);
        var labels = Enumerable.Range(0, batch).Select(i => (float)(i * 7 % config.NumClasses)).ToArray();
        var logits = new float[2][];
        var losses = new float[2][];
        foreach (var (be, model, slot) in new (IBackend, VitModel, int)[] { (_cpu, mc, 0), (_gpu, mg, 1) })
        {
            using var ws = model.CreateWorkspace(batch);
            using var x = be.FromHost("images", images, batch, config.InChans, config.ImageSize, config.ImageSize);
            using var y = be.FromHost("labels", labels, batch);
            model.ZeroGrad();
            model.Forward(ws, x, batch);
            be.CrossEntropy(ws.Logits, y, ws.Losses, ws.DLogits, batch, config.NumClasses, 1f / batch);
            model.Backward(ws, batch, BackwardOptions.Full);
            be.Synchronize();
            logits[slot] = ws.Logits.ToArray();
            losses[slot] = ws.Losses.ToArray();
        }
        Check($"vit {_s.VitPreset} B {batch} forward logits", logits[1], logits[0], ModelTolerance);
        Check($"vit {_s.VitPreset} B {batch} loss", losses[1], losses[0], ModelTolerance);
        double worst = 0;
        string worstName = "";
        foreach (var p in mc.Parameters)
        {
            double e = RelativeError(mg[p.Name].Grad.ToArray(), p.Grad.ToArray());
            if (e > worst || double.IsNaN(e)) (worst, worstName) = (double.IsNaN(e) ? double.PositiveInfinity : e, p.Name);
        }
        Record(new ParityCheck
        {
            Name = $"vit {_s.VitPreset} B {batch} backward, {mc.Parameters.Count} parameter gradients (worst)", RelativeError = worst,
            Tolerance = ModelTolerance, Detail = $"worst: {worstName}",
        });
    }
}

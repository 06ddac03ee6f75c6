using System.Text.Json.Serialization;
using WhereToEdit.Engine.Backends.Conformance;
using WhereToEdit.Engine.Backends.Reference;
using WhereToEdit.Engine.Backends.Gpu;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu.Diagnostics;

/// <summary>One comparison of the GPU backend against the reference backend: normwise relative error max|gpu − ref| / max|ref|.</summary>
public sealed record ParityCheck
{
    [JsonPropertyName("name")] public required string Name { get; init; }
    [JsonPropertyName("rel_err")] public double RelativeError { get; init; }
    [JsonPropertyName("tolerance")] public double Tolerance { get; init; }
    [JsonPropertyName("detail")] public string? Detail { get; init; }
    [JsonPropertyName("passed")] public bool Passed => RelativeError <= Tolerance;   // NaN fails
}

/// <summary>
/// Shapes of the parity suite: the conformance cases' shapes plus the native-op and whole-model sizes.
/// <see cref="Realistic"/> (ViT-B sizes, for a real GPU) or <see cref="Tiny"/> (the CPU emulator).
/// </summary>
public sealed record ParityShapes
{
    public required ConformanceShapes Ops { get; init; }
    /// <summary>Samples of the per-sample delta check.</summary>
    public required int Samples { get; init; }
    /// <summary>Whole-model forward/backward check: a preset name and its batch.</summary>
    public required string VitPreset { get; init; }
    public required int VitBatch { get; init; }

    /// <summary>ViT-B/16 layer sizes (224 px, 197 tokens, dim 768, 12 heads, MLP 3072, 1000 classes), batch 2; vit_tiny end to end.</summary>
    public static readonly ParityShapes Realistic = new() { Ops = ConformanceShapes.Realistic, Samples = 4, VitPreset = "vit_tiny_patch16_224", VitBatch = 2 };

    /// <summary>Shapes small enough for ILGPU's CPU accelerator.</summary>
    public static readonly ParityShapes Tiny = new() { Ops = ConformanceShapes.Tiny, Samples = 2, VitPreset = "test_tiny", VitBatch = 2 };
}

/// <summary>
/// The GPU check's correctness half: the shared conformance cases (<see cref="ConformanceSuite"/>: every <see cref="IBackend"/>
/// op, the same cases the test suite runs on every backend) on <see cref="GpuBackend"/> against the reference backend,
/// the masked SGD/RMSprop cases again through the native kernels, the native-only ops (gather-GEMM weight gradients,
/// compact steps, per-sample delta apply) against reference-backend results, and a whole ViT forward/backward against
/// the same model on the reference backend. A failing op is recorded (with its exception) and the suite goes on.
/// </summary>
internal sealed class GpuParity
{
    /// <summary>Per-op tolerance (the issue's 1e-4) and the model-level one (12 blocks of float32 rounding in a backward).</summary>
    public const double OpTolerance = ConformanceSuite.OpTolerance, ModelTolerance = 1e-3;

    private readonly GpuBackend _gpu;
    private readonly IBackend _reference;
    private readonly ParityShapes _s;
    private readonly Action<ParityCheck>? _progress;
    private readonly List<ParityCheck> _results = [];
    private readonly Rng _rng = new(20251128);

    private GpuParity(GpuBackend gpu, IBackend reference, ParityShapes shapes, Action<ParityCheck>? progress)
    {
        _gpu = gpu;
        _reference = reference;
        _s = shapes;
        _progress = progress;
    }

    /// <summary>The suite on <paramref name="gpu"/> against <paramref name="reference"/> (normally a <see cref="ReferenceBackend"/>).</summary>
    public static IReadOnlyList<ParityCheck> Run(GpuBackend gpu, IBackend reference, ParityShapes shapes, Action<ParityCheck>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(gpu);
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(shapes);
        var suite = new GpuParity(gpu, reference, shapes, progress);
        suite.RunAll();
        return suite._results;
    }

    private void RunAll()
    {
        foreach (var r in ConformanceSuite.Run(_gpu, _reference, _s.Ops)) Record(FromConformance(r, ""));
        if (_gpu.NativeKernelsAvailable)
        {
            // The masked SGD/RMSprop cases again, through the fused native kernels.
            bool before = _gpu.NativeMaskedOptimizers;
            _gpu.NativeMaskedOptimizers = true;
            try
            {
                foreach (var r in ConformanceSuite.Run(_gpu, _reference, _s.Ops, IsMaskedSgdOrRmsProp)) Record(FromConformance(r, " native"));
            }
            finally
            {
                _gpu.NativeMaskedOptimizers = before;
            }
            Group("native gather", NativeGather);
            Group("native compact", NativeCompact);
            Group("native per-sample", NativePerSample);
        }
        else
            Record(new ParityCheck { Name = "native kernels", RelativeError = double.PositiveInfinity, Tolerance = 0, Detail = "not run: " + _gpu.NativeKernelsStatus });
        Group("vit", Vit);
    }

    /// <summary>The cases the native masked-optimizer kernels serve: SGD or RMSprop with a row or column mask.</summary>
    private static bool IsMaskedSgdOrRmsProp(ConformanceCase c)
        => c.Ops is ["SgdStep"] or ["RmsPropStep"] && !c.Name.EndsWith("unmasked", StringComparison.Ordinal);

    private static ParityCheck FromConformance(ConformanceResult r, string suffix) => new()
    {
        Name = r.Name + suffix, RelativeError = r.Error is null ? r.RelativeError : double.PositiveInfinity, Tolerance = r.Tolerance,
        Detail = r.Error ?? $"{string.Join(", ", r.Ops)}; max abs {r.MaxAbsError:E2}",
    };

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

    private Both New(string name, float[] data, params int[] shape) => new(_reference.FromHost(name, data, shape), _gpu.FromHost(name, data, shape), data);

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
    internal static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected) => ConformanceSuite.RelativeError(actual, expected);

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

    private int Rows => _s.Ops.Rows;

    // ---- native-only ops ---------------------------------------------------------------------------------------

    private int[] KeepTenPercent(int units) => Enumerable.Range(0, units).OrderBy(_ => _rng.NextUInt64()).Take(Math.Max(1, units / 10)).Order().ToArray();

    /// <summary>The full weight gradients by the CPU backend's GEMM (as the backward computes them), gathered, against the gather kernels.</summary>
    private void NativeGather()
    {
        int t = Rows, d = _s.Ops.Dim, h = _s.Ops.Hidden;
        var idx = KeepTenPercent(h);
        int k = idx.Length;
        using var list = _gpu.CreateIndexList(idx, h);
        using var dH = Rand("dH", t, h);
        using var x = Rand("X", t, d);
        using var dY = Rand("dY", t, d);
        using var a = Rand("A", t, h);
        using var full1 = _reference.Allocate("dW1", h, d);
        using var full2 = _reference.Allocate("dW2", d, h);
        _reference.Gemm(true, false, h, d, t, 1f, dH.C, 0, h, x.C, 0, d, 0f, full1, 0, d);
        _reference.Gemm(true, false, d, h, t, 1f, dY.C, 0, d, a.C, 0, h, 0f, full2, 0, h);
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
            int rows = axis == MaskAxis.Rows ? _s.Ops.Hidden : _s.Ops.Dim, cols = axis == MaskAxis.Rows ? _s.Ops.Dim : _s.Ops.Hidden;
            int units = axis == MaskAxis.Rows ? rows : cols;
            var idx = KeepTenPercent(units);
            var maskValues = new float[units];
            foreach (int i in idx) maskValues[i] = 1f;
            using var list = _gpu.CreateIndexList(idx, units);
            using var mask = _reference.FromHost("mask", maskValues, units);
            var gradHost = Random((long)rows * cols);
            var compactHost = axis == MaskAxis.Rows
                ? idx.SelectMany(r => gradHost.AsSpan(r * cols, cols).ToArray()).ToArray()
                : Enumerable.Range(0, rows).SelectMany(r => idx.Select(c => gradHost[r * cols + c])).ToArray();
            using var grad = _reference.FromHost("grad", gradHost, rows, cols);
            using var compact = _gpu.FromHost("compact", compactHost, compactHost.Length);
            using var wr = Rand("w", rows, cols);
            using var ws = Rand("w2", rows, cols);
            using var v = New("v", Random((long)rows * cols).Select(x => x * x * 0.01f).ToArray(), rows, cols);
            var m = axis == MaskAxis.Rows ? UpdateMask.RowMask(mask, rows, cols) : UpdateMask.ColumnMask(mask, rows, cols);
            for (int step = 0; step < 2; step++)
            {
                _reference.RmsPropStep(wr.C, grad, v.C, 1e-2f, 0.99f, 1e-8f, 0f, m);
                _gpu.MaskedRmsPropCompact(axis, wr.G, compact, v.G, list, rows, cols, 1e-2f, 0.99f, 1e-8f, 0f);
                _reference.SgdStep(ws.C, grad, 0.1f, 0.01f, m);
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
        int samples = _s.Samples, tokens = _s.Ops.Tokens;
        foreach (var axis in new[] { MaskAxis.Rows, MaskAxis.Columns })
        {
            // fc1: W1 [hidden, dim] gated by rows; fc2: W2 [dim, hidden] gated by columns. The mask is per hidden unit.
            int inF = axis == MaskAxis.Rows ? _s.Ops.Dim : _s.Ops.Hidden, outF = axis == MaskAxis.Rows ? _s.Ops.Hidden : _s.Ops.Dim;
            int maskLen = _s.Ops.Hidden;
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
                using var xs = _reference.FromHost("xs", xHost.AsSpan(s * tokens * inF, tokens * inF), tokens, inF);
                using var wsT = _reference.FromHost("weff", weff, outF, inF);
                using var ys = _reference.Allocate("ys", tokens, outF);
                using var bs = _reference.FromHost("b", bHost, outF);
                _reference.Gemm(false, true, tokens, outF, inF, 1f, xs, 0, inF, wsT, 0, inF, 0f, ys, 0, outF);
                _reference.AddBias(ys, bs, tokens, outF);
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
        using var mc = new VitModel(_reference, config);
        using var mg = new VitModel(_gpu, config);
        mc.InitializeRandom(7);
        foreach (var p in mc.Parameters) mg[p.Name].Value.CopyFrom(p.Value.ToArray());
        var images = Random((long)batch * config.InChans * config.ImageSize * config.ImageSize);
        var labels = Enumerable.Range(0, batch).Select(i => (float)(i * 7 % config.NumClasses)).ToArray();
        var logits = new float[2][];
        var losses = new float[2][];
        foreach (var (be, model, slot) in new (IBackend, VitModel, int)[] { (_reference, mc, 0), (_gpu, mg, 1) })
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

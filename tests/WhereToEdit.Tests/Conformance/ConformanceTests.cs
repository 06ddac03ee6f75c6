using System.Reflection;
using WhereToEdit.Engine.Backends.Conformance;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Backends.Gpu;
using WhereToEdit.Engine.Backends.Reference;
using WhereToEdit.Engine.Tensors;
using WhereToEdit.Tests.Gpu;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Conformance;

/// <summary>Prints a conformance run (every output, then the worst error per op) and fails on any failing output.</summary>
internal static class ConformanceReport
{
    public static void PrintAndAssert(ITestOutputHelper output, string backend, IReadOnlyList<ConformanceResult> results)
    {
        output.WriteLine($"{backend} vs reference: {results.Count} outputs of {results.Select(r => r.Case).Distinct().Count()} cases");
        foreach (var r in results)
            output.WriteLine($"  {(r.Passed ? "ok  " : "FAIL")} abs {r.MaxAbsError,9:E2} rel {r.RelativeError,9:E2} ≤ {r.Tolerance:E0}  {r.Name}{(r.Error is null ? "" : "  " + r.Error)}");
        output.WriteLine("per op (worst over its cases):");
        foreach (var (op, abs, rel, count) in ConformanceSuite.PerOp(results))
            output.WriteLine($"  {op,-24} max abs {abs,9:E2}  max rel {rel,9:E2}  ({count} outputs)");
        var failed = results.Where(r => !r.Passed).ToArray();
        Assert.True(failed.Length == 0, $"{backend}: {failed.Length} outputs differ from the reference: "
            + string.Join("; ", failed.Select(r => $"{r.Name} rel {r.RelativeError:E2} > {r.Tolerance:E0} {r.Error}")));
        // Every case ran on this backend.
        Assert.Equal(ConformanceSuite.Cases.Count, results.Select(r => r.Case).Distinct().Count());
    }
}

/// <summary>The CPU backend (both GEMMs) against the reference backend on every conformance case, at shapes that cross its SIMD widths, thread split and GEMM tiles.</summary>
public sealed class CpuConformanceTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(GemmKind.Managed, 2)]
    [InlineData(GemmKind.Managed, 1)]
    [InlineData(GemmKind.OpenBlas, 2)]
    public void The_cpu_backend_matches_the_reference_on_every_case(GemmKind gemm, int threads)
    {
        using var cpu = new CpuBackend(new CpuBackendOptions { Gemm = gemm, Threads = threads });
        using var reference = new ReferenceBackend();
        ConformanceReport.PrintAndAssert(output, cpu.Name, ConformanceSuite.Run(cpu, reference, ConformanceShapes.Small));
    }
}

/// <summary>The ILGPU backend on ILGPU's CPU accelerator (an emulator: tiny shapes) against the reference backend.</summary>
[Collection(GpuEmulatorCollection.Name)]
public sealed class GpuEmulatorConformanceTests(GpuEmulatorFixture f, ITestOutputHelper output)
{
    [Fact]
    public void The_ilgpu_backend_on_the_cpu_accelerator_matches_the_reference_on_every_case()
    {
        using var reference = new ReferenceBackend();
        ConformanceReport.PrintAndAssert(output, f.Gpu.Name, ConformanceSuite.Run(f.Gpu, reference, ConformanceShapes.Tiny));
    }
}

/// <summary>The ILGPU backend on a CUDA device against the reference backend; skipped without one.</summary>
public sealed class CudaConformanceTests(ITestOutputHelper output)
{
    [SkippableFact]
    public void The_ilgpu_backend_on_cuda_matches_the_reference_on_every_case()
    {
        bool found = GpuBackend.TryCreateCuda(out var gpu, out string reason);
        Skip.IfNot(found, $"no CUDA device: {reason}");
        using var _ = gpu;
        using var reference = new ReferenceBackend();
        ConformanceReport.PrintAndAssert(output, gpu!.Name, ConformanceSuite.Run(gpu, reference, ConformanceShapes.Small));
    }
}

/// <summary>The case list itself: it covers every op, it can fail, and the reference backend is what it claims to be.</summary>
public sealed class ConformanceCoverageTests(ITestOutputHelper output)
{
    [Fact]
    public void Every_IBackend_method_has_a_conformance_case()
    {
        var methods = typeof(IBackend).GetMethods(BindingFlags.Public | BindingFlags.Instance)
            .Where(m => !m.IsSpecialName)                 // property getters (Name, Threads)
            .Select(m => m.Name)
            .Where(n => n != nameof(IDisposable.Dispose))
            .Distinct().Order(StringComparer.Ordinal).ToArray();
        var covered = ConformanceSuite.Cases.SelectMany(c => c.Ops).ToHashSet(StringComparer.Ordinal);
        output.WriteLine($"{methods.Length} IBackend methods, {ConformanceSuite.Cases.Count} cases");
        foreach (string m in methods) output.WriteLine($"  {m,-24} {ConformanceSuite.Cases.Count(c => c.Ops.Contains(m))} case(s)");
        Assert.True(methods.Length >= 33, $"only {methods.Length} methods found by reflection");
        string[] uncovered = methods.Where(m => !covered.Contains(m)).ToArray();
        string[] unknown = covered.Where(op => !methods.Contains(op)).ToArray();   // a case naming an op that does not exist
        Assert.True(uncovered.Length == 0, "IBackend methods without a conformance case: " + string.Join(", ", uncovered));
        Assert.True(unknown.Length == 0, "cases name ops IBackend does not have: " + string.Join(", ", unknown));
        Assert.Equal(ConformanceSuite.Cases.Count, ConformanceSuite.Cases.Select(c => c.Name).Distinct().Count());
    }

    [Fact]
    public void A_backend_with_one_wrong_op_fails_that_case_only()
    {
        using var reference = new ReferenceBackend();
        using var broken = new SignFlippedGelu();
        var results = ConformanceSuite.Run(broken, reference, ConformanceShapes.Tiny);
        var failing = results.Where(r => !r.Passed).Select(r => r.Case).Distinct().ToArray();
        Assert.Equal(["gelu forward and backward (separate and in place)"], failing);
        Assert.All(results.Where(r => r.Case.StartsWith("gelu", StringComparison.Ordinal) && r.Output.StartsWith("y", StringComparison.Ordinal)),
                   r => Assert.True(r.RelativeError > 1, r.Name));
    }

    [Fact]
    public void An_optimizer_that_touches_state_outside_its_mask_fails_the_exact_check()
    {
        using var reference = new ReferenceBackend();
        using var leaky = new LeakyRmsProp();
        var results = ConformanceSuite.Run(leaky, reference, ConformanceShapes.Tiny, c => c.Ops.Contains("RmsPropStep"));
        foreach (var r in results) output.WriteLine($"{r.Name}: {r.RelativeError:E2}");
        var exact = results.Where(r => r.Output.StartsWith("change outside", StringComparison.Ordinal)).ToArray();
        Assert.Equal(2, exact.Length);
        Assert.All(exact, r => Assert.False(r.Passed, r.Name));
    }

    [Fact]
    public void Errors_are_normwise_and_non_finite_output_fails()
    {
        Assert.Equal(0.1, ConformanceSuite.RelativeError([1.1f, 0f], [1f, 0f]), 6);
        Assert.Equal(0.5, ConformanceSuite.RelativeError([0.5f], [0f]), 6);
        Assert.Equal(double.PositiveInfinity, ConformanceSuite.RelativeError([float.NaN], [1f]));
        Assert.Equal(double.PositiveInfinity, ConformanceSuite.RelativeError([1f], [1f, 2f]));
        Assert.Equal(0, ConformanceSuite.RelativeError([float.NaN, 1f], [float.NaN, 1f]));
        Assert.False(new ConformanceResult { Case = "c", Output = "o", Ops = [], RelativeError = double.NaN, Tolerance = 1 }.Passed);
    }

    [Theory]
    [InlineData(0.0, 0.0)]
    [InlineData(0.5, 0.5204998778130465)]
    [InlineData(-1.0, -0.8427007929497149)]
    [InlineData(2.5, 0.9995930479825550)]
    [InlineData(5.0, 0.9999999999984626)]
    public void The_reference_erf_matches_known_values(double z, double erf)
        => Assert.Equal(erf, ReferenceBackend.Erf(z), 13);

    /// <summary>The reference's backward ops against central differences of its own forward ops (in double via small steps).</summary>
    [Fact]
    public void The_reference_backward_ops_match_finite_differences_of_its_forward_ops()
    {
        using var be = new ReferenceBackend();
        var rng = new Rng(5);
        const int rows = 3, cols = 6;
        float[] Rand(int n, float scale = 1f) => Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();
        var xv = Rand(rows * cols, 2f);
        var gv = Rand(cols);
        var bv = Rand(cols);
        var dyv = Rand(rows * cols);
        // Scalar objective L(x) = Σ dy ⊙ f(x); its gradient is the backward applied to dy.
        double LayerNormObjective(float[] x)
        {
            using var X = be.FromHost("x", x, rows, cols);
            using var G = be.FromHost("g", gv, cols);
            using var B = be.FromHost("b", bv, cols);
            using var Y = be.Allocate("y", rows, cols);
            using var M = be.Allocate("m", rows);
            using var R = be.Allocate("r", rows);
            be.LayerNormForward(X, G, B, Y, M, R, rows, cols, 1e-5f);
            var y = Y.ToArray();
            return y.Select((v, i) => (double)v * dyv[i]).Sum();
        }
        double GeluObjective(float[] x)
        {
            using var X = be.FromHost("x", x, x.Length);
            using var Y = be.Allocate("y", x.Length);
            be.GeluForward(X, Y, x.Length);
            return Y.ToArray().Select((v, i) => (double)v * dyv[i]).Sum();
        }
        double[] Numeric(Func<float[], double> f)
        {
            var g = new double[xv.Length];
            for (int i = 0; i < xv.Length; i++)
            {
                var plus = (float[])xv.Clone();
                var minus = (float[])xv.Clone();
                const float h = 1e-2f;
                plus[i] += h;
                minus[i] -= h;
                g[i] = (f(plus) - f(minus)) / (plus[i] - minus[i]);
            }
            return g;
        }
        using (var X = be.FromHost("x", xv, rows, cols))
        using (var G = be.FromHost("g", gv, cols))
        using (var B = be.FromHost("b", bv, cols))
        using (var Y = be.Allocate("y", rows, cols))
        using (var M = be.Allocate("m", rows))
        using (var R = be.Allocate("r", rows))
        using (var DY = be.FromHost("dy", dyv, rows, cols))
        using (var DX = be.Allocate("dx", rows, cols))
        {
            be.LayerNormForward(X, G, B, Y, M, R, rows, cols, 1e-5f);
            be.LayerNormBackward(DY, X, G, M, R, DX, null, null, rows, cols, accumulateDx: false);
            Compare.Check(output, "layernorm dx vs finite differences", DX.ToArray(), Numeric(LayerNormObjective).Select(v => (float)v).ToArray(), 2e-3);
            be.GeluBackward(X, DY, DX, xv.Length);
            Compare.Check(output, "gelu dx vs finite differences", DX.ToArray(), Numeric(GeluObjective).Select(v => (float)v).ToArray(), 2e-3);
        }
    }

    /// <summary>The reference backend with GELU's sign flipped: the suite must notice.</summary>
    private sealed class SignFlippedGelu : ForwardingBackend
    {
        public override void GeluForward(Tensor x, Tensor y, long n)
        {
            base.GeluForward(x, y, n);
            Axpy(-2f, y, y, n);   // y − 2y = −y
        }
    }

    /// <summary>The reference backend whose masked RMSprop also decays the squared average outside the mask.</summary>
    private sealed class LeakyRmsProp : ForwardingBackend
    {
        public override void RmsPropStep(Tensor param, Tensor grad, Tensor squareAvg, float lr, float alpha, float eps, float weightDecay, UpdateMask mask)
        {
            base.RmsPropStep(param, grad, squareAvg, lr, alpha, eps, weightDecay, mask);
            if (mask.Axis != MaskAxis.None)
            {
                var v = squareAvg.ToArray();
                for (int i = 0; i < v.Length; i++) v[i] *= 0.999f;
                squareAvg.CopyFrom(v);
            }
        }
    }
}

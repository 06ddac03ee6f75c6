using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Conformance;

/// <summary>
/// Sizes of the conformance cases: <see cref="Tiny"/> for ILGPU's CPU accelerator (an emulator), <see cref="Small"/>
/// for the CPU backend (large enough to cross its SIMD widths, thread split and GEMM tiles, with ragged edges),
/// <see cref="Realistic"/> (ViT-B/16 layer sizes) for a real GPU.
/// </summary>
public sealed record ConformanceShapes
{
    public required int Batch { get; init; }
    public required int Dim { get; init; }
    public required int Heads { get; init; }
    public required int Hidden { get; init; }
    public required int Classes { get; init; }
    public required int ImageSize { get; init; }
    public required int PatchSize { get; init; }

    public int Patches => (ImageSize / PatchSize) * (ImageSize / PatchSize);
    public int Tokens => Patches + 1;
    public int HeadDim => Dim / Heads;
    /// <summary>Token rows of a batch: batch·tokens.</summary>
    public int Rows => Batch * Tokens;

    public static readonly ConformanceShapes Tiny = new() { Batch = 2, Dim = 8, Heads = 2, Hidden = 20, Classes = 7, ImageSize = 8, PatchSize = 4 };

    public static readonly ConformanceShapes Small = new() { Batch = 3, Dim = 48, Heads = 3, Hidden = 200, Classes = 10, ImageSize = 32, PatchSize = 4 };

    public static readonly ConformanceShapes Realistic = new() { Batch = 2, Dim = 768, Heads = 12, Hidden = 3072, Classes = 1000, ImageSize = 224, PatchSize = 16 };
}

/// <summary>
/// One conformance case: a deterministic body that builds its inputs from a seeded generator on the backend it is
/// given, runs one or a few <see cref="IBackend"/> ops and declares the tensors to compare. The same body runs on the
/// backend under test and on the reference backend; every declared output is compared.
/// </summary>
internal sealed class ConformanceCase
{
    public required string Name { get; init; }

    /// <summary>The <see cref="IBackend"/> members this case exercises (the coverage test checks that every member has a case).</summary>
    public required IReadOnlyList<string> Ops { get; init; }

    internal Action<ConformanceContext> Body { get; init; } = _ => throw new InvalidOperationException("conformance case without a body");

    public override string ToString() => Name;
}

/// <summary>One compared output of a case: normwise relative error max|a − r| / max|r| (max|a − r| when r is all zero).</summary>
internal sealed record ConformanceResult
{
    public required string Case { get; init; }
    public required string Output { get; init; }
    public required IReadOnlyList<string> Ops { get; init; }
    public double MaxAbsError { get; init; }
    public double RelativeError { get; init; }
    public double Tolerance { get; init; }
    /// <summary>Set when the case threw on the backend under test or on the reference (then the result fails).</summary>
    public string? Error { get; init; }
    public bool Passed => Error is null && RelativeError <= Tolerance;   // NaN fails

    public string Name => $"{Case}: {Output}";
}

/// <summary>What a case body sees: the backend, the shapes, a generator seeded from the case name, and its outputs.</summary>
internal sealed class ConformanceContext : IDisposable
{
    private readonly List<Tensor> _tensors = [];
    private readonly List<(string Name, float[] Values, double Tolerance)> _outputs = [];

    internal ConformanceContext(IBackend backend, ConformanceShapes shapes, ulong seed)
    {
        Backend = backend;
        Shapes = shapes;
        Rng = new Rng(seed);
    }

    public IBackend Backend { get; }
    public ConformanceShapes Shapes { get; }
    public Rng Rng { get; }

    internal IReadOnlyList<(string Name, float[] Values, double Tolerance)> Outputs => _outputs;

    /// <summary>Uniform values in [−scale, scale).</summary>
    public float[] Uniform(long n, float scale = 1f)
    {
        var x = new float[n];
        for (long i = 0; i < n; i++) x[i] = (float)((Rng.NextDouble() * 2 - 1) * scale);
        return x;
    }

    /// <summary>A tensor on the backend holding <paramref name="data"/>; disposed with the context.</summary>
    public Tensor Tensor(string name, float[] data, params int[] shape)
    {
        var t = Backend.FromHost(name, data, shape);
        _tensors.Add(t);
        return t;
    }

    /// <summary>A tensor of uniform values in [−scale, scale).</summary>
    public Tensor Random(string name, float scale, params int[] shape)
    {
        long n = 1;
        foreach (int d in shape) n *= d;
        return Tensor(name, Uniform(n, scale), shape);
    }

    /// <summary>A zero-filled tensor from <see cref="IBackend.Allocate"/>; disposed with the context.</summary>
    public Tensor Zeros(string name, params int[] shape)
    {
        var t = Backend.Allocate(name, shape);
        _tensors.Add(t);
        return t;
    }

    /// <summary>Declares an output to compare (the tensor is read after the body and a <see cref="IBackend.Synchronize"/>).</summary>
    public void Output(string name, Tensor t, double tolerance = ConformanceSuite.OpTolerance) => _outputs.Add((name, t.ToArray(), tolerance));

    /// <summary>Declares host values to compare (e.g. the entries outside an optimizer mask, compared exactly).</summary>
    public void Output(string name, float[] values, double tolerance = ConformanceSuite.OpTolerance) => _outputs.Add((name, values, tolerance));

    public void Dispose()
    {
        foreach (var t in _tensors) t.Dispose();
        _tensors.Clear();
    }
}

/// <summary>Runs the shared cases (<see cref="ConformanceCases.All"/>) on a backend and on the reference, and compares.</summary>
internal static class ConformanceSuite
{
    /// <summary>Normwise relative error allowed per output (float32 kernels against the reference's double sums).</summary>
    public const double OpTolerance = 1e-4;

    public static IReadOnlyList<ConformanceCase> Cases => ConformanceCases.All;

    /// <summary>
    /// Every case (or those <paramref name="include"/> keeps) on <paramref name="candidate"/> and <paramref name="reference"/>.
    /// A case that throws is recorded as failed and the run goes on.
    /// </summary>
    public static IReadOnlyList<ConformanceResult> Run(IBackend candidate, IBackend reference, ConformanceShapes shapes,
                                                        Func<ConformanceCase, bool>? include = null, Action<ConformanceResult>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(candidate);
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(shapes);
        var results = new List<ConformanceResult>();
        foreach (var c in Cases)
        {
            if (include is not null && !include(c)) continue;
            foreach (var r in RunCase(c, candidate, reference, shapes))
            {
                results.Add(r);
                progress?.Invoke(r);
            }
        }
        return results;
    }

    public static IReadOnlyList<ConformanceResult> RunCase(ConformanceCase c, IBackend candidate, IBackend reference, ConformanceShapes shapes)
    {
        ArgumentNullException.ThrowIfNull(c);
        IReadOnlyList<(string Name, float[] Values, double Tolerance)> expected, actual;
        try
        {
            expected = Outputs(c, reference, shapes);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return [Failed(c, "reference", e)];
        }
        try
        {
            actual = Outputs(c, candidate, shapes);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return [Failed(c, "run", e)];
        }
        var results = new List<ConformanceResult>();
        for (int i = 0; i < expected.Count; i++)
        {
            var (name, values, tolerance) = expected[i];
            var a = i < actual.Count && actual[i].Name == name ? actual[i].Values : [];
            results.Add(new ConformanceResult
            {
                Case = c.Name, Output = name, Ops = c.Ops, Tolerance = tolerance,
                MaxAbsError = MaxAbsError(a, values), RelativeError = RelativeError(a, values),
            });
        }
        return results;
    }

    private static ConformanceResult Failed(ConformanceCase c, string output, Exception e) => new()
    {
        Case = c.Name, Output = output, Ops = c.Ops, Tolerance = OpTolerance,
        MaxAbsError = double.PositiveInfinity, RelativeError = double.PositiveInfinity, Error = $"{e.GetType().Name}: {e.Message}",
    };

    private static IReadOnlyList<(string, float[], double)> Outputs(ConformanceCase c, IBackend backend, ConformanceShapes shapes)
    {
        using var context = new ConformanceContext(backend, shapes, Seed(c.Name));
        c.Body(context);
        backend.Synchronize();
        return context.Outputs.ToArray();
    }

    /// <summary>A stable seed from the case name (string.GetHashCode is randomised per process): FNV-1a.</summary>
    private static ulong Seed(string name)
    {
        ulong h = 14695981039346656037UL;
        foreach (char ch in name) h = (h ^ ch) * 1099511628211UL;
        return h;
    }

    /// <summary>max|a − e| / max|e| (max|a − e| when e is all zero); NaN or ±Inf in a where e is finite, or a length mismatch, gives +Inf.</summary>
    public static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        double maxDiff = MaxAbsError(actual, expected), maxRef = 0;
        foreach (float e in expected)
            if (float.IsFinite(e)) maxRef = Math.Max(maxRef, Math.Abs((double)e));
        return maxRef > 0 ? maxDiff / maxRef : maxDiff;
    }

    /// <summary>max|a − e| over the entries where e is finite; +Inf for a non-finite a there (NaN matching NaN is equal) or a length mismatch.</summary>
    public static double MaxAbsError(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        if (actual.Length != expected.Length) return double.PositiveInfinity;
        double maxDiff = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            if (!float.IsFinite(actual[i]) && !(float.IsNaN(actual[i]) && float.IsNaN(expected[i]))) return double.PositiveInfinity;
            if (!float.IsFinite(expected[i])) continue;
            maxDiff = Math.Max(maxDiff, Math.Abs((double)actual[i] - expected[i]));
        }
        return maxDiff;
    }

    /// <summary>Worst relative error per op over the results (an op's worst over every case that exercises it).</summary>
    public static IReadOnlyList<(string Op, double MaxAbsError, double RelativeError, int Outputs)> PerOp(IEnumerable<ConformanceResult> results)
        => results.SelectMany(r => r.Ops.Select(op => (op, r)))
                  .GroupBy(x => x.op, x => x.r)
                  .Select(g => (g.Key, g.Max(r => r.MaxAbsError), g.Max(r => double.IsNaN(r.RelativeError) ? double.PositiveInfinity : r.RelativeError), g.Count()))
                  .OrderBy(x => x.Key, StringComparer.Ordinal)
                  .ToArray();
}

using System.Text;
using System.Text.Json;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Tensors;
using Xunit.Abstractions;

namespace WhereToEdit.Tests;

/// <summary>A PyTorch reference fixture (tests/reference/fixtures/*.safetensors, F32 only).</summary>
public sealed class ReferenceFixture
{
    public required Dictionary<string, (int[] Shape, float[] Data)> Tensors { get; init; }
    public required Dictionary<string, string> Metadata { get; init; }

    public float[] this[string name] => Tensors.TryGetValue(name, out var t) ? t.Data : throw new KeyNotFoundException($"fixture has no tensor '{name}'");

    public int[] ShapeOf(string name) => Tensors[name].Shape;

    public static string PathOf(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name + ".safetensors");

    public static ReferenceFixture Load(string name)
    {
        byte[] bytes = File.ReadAllBytes(PathOf(name));
        long headerLength = BitConverter.ToInt64(bytes, 0);
        using var doc = JsonDocument.Parse(Encoding.UTF8.GetString(bytes, 8, (int)headerLength));
        var tensors = new Dictionary<string, (int[], float[])>();
        var metadata = new Dictionary<string, string>();
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (prop.Name == "__metadata__")
            {
                foreach (var m in prop.Value.EnumerateObject()) metadata[m.Name] = m.Value.GetString()!;
                continue;
            }
            if (prop.Value.GetProperty("dtype").GetString() != "F32") throw new InvalidDataException($"{name}: {prop.Name} is not F32");
            int[] shape = prop.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var offsets = prop.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var data = new float[(offsets[1] - offsets[0]) / 4];
            Buffer.BlockCopy(bytes, (int)(8 + headerLength + offsets[0]), data, 0, data.Length * 4);
            tensors[prop.Name] = (shape, data);
        }
        return new ReferenceFixture { Tensors = tensors, Metadata = metadata };
    }
}

/// <summary>llm.c-style comparison: prints max abs and relative error per tensor and fails above the tolerance.</summary>
public static class Compare
{
    /// <summary>
    /// Relative error is normwise: max|a − b| / max|b| over the tensor (elementwise ratios are meaningless for
    /// entries that are ~0 in the reference). Also printed: the largest elementwise relative error among
    /// entries with |b| ≥ 1 % of max|b|.
    /// </summary>
    public static double Check(ITestOutputHelper? output, string name, ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double tolerance = 1e-4)
    {
        if (actual.Length != expected.Length) throw new Xunit.Sdk.XunitException($"{name}: {actual.Length} values vs {expected.Length} expected");
        double maxAbs = 0, maxRef = 0, maxElemRel = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            maxAbs = Math.Max(maxAbs, Math.Abs((double)actual[i] - expected[i]));
            maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
            if (!float.IsFinite(actual[i])) maxAbs = double.PositiveInfinity;
        }
        for (int i = 0; i < expected.Length; i++)
            if (Math.Abs(expected[i]) >= 0.01 * maxRef && maxRef > 0)
                maxElemRel = Math.Max(maxElemRel, Math.Abs((double)actual[i] - expected[i]) / Math.Abs(expected[i]));
        double rel = maxRef > 0 ? maxAbs / maxRef : maxAbs;
        output?.WriteLine($"{name,-40} max abs {maxAbs:E2}  rel {rel:E2}  elem rel {maxElemRel:E2}  {(rel <= tolerance ? "ok" : "FAIL")}");
        if (!(rel <= tolerance))
            throw new Xunit.Sdk.XunitException($"{name}: relative error {rel:E3} (max abs {maxAbs:E3}) exceeds {tolerance:E1}");
        return rel;
    }
}

public static class Backends
{
    public static CpuBackend Cpu(GemmKind gemm, int threads = 2) => new(new CpuBackendOptions { Gemm = gemm, Threads = threads });

    /// <summary>Both GEMMs; OpenBLAS must be installed where the tests run (.ci/run installs libopenblas0).</summary>
    public static IEnumerable<object[]> GemmKinds() => [[GemmKind.OpenBlas], [GemmKind.Managed]];
}

/// <summary>Small numeric helpers shared by the op tests.</summary>
public static class TestMath
{
    public static double Dot(float[] a, float[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += (double)a[i] * b[i];
        return s;
    }

    public static float[] Normal(WhereToEdit.Engine.Tensors.Rng rng, int n, double scale = 1)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)(rng.NextNormal() * scale);
        return v;
    }
}

/// <summary>Files of the repository (found from the test binary upwards) and `wte` run in-process.</summary>
public static class Repo
{
    public static string File(string relative)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (System.IO.File.Exists(Path.Combine(dir.FullName, "WhereToEdit.sln"))) return Path.Combine(dir.FullName, relative);
        throw new FileNotFoundException($"no WhereToEdit.sln above {AppContext.BaseDirectory}");
    }

    /// <summary>Runs `wte ARGS` in this process; returns the exit code, stdout and stderr.</summary>
    public static (int Code, string Out, string Err) Wte(params string[] args)
    {
        using var o = new StringWriter();
        using var e = new StringWriter();
        int code = WhereToEdit.Cli.WteCommands.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }
}

/// <summary>Random weights for the tiny test models, one recipe for every test that needs a model with some behaviour.</summary>
public static class TestModels
{
    /// <summary>A small RGB ViT with qkv bias (16 px, patch 4, width 16, 4 blocks of 2 heads, MLP 32, 5 classes).</summary>
    public static readonly WhereToEdit.Engine.Models.VitConfig Small = new()
    {
        ImageSize = 16, PatchSize = 4, InChans = 3, EmbedDim = 16, Depth = 4, NumHeads = 2, MlpHidden = 32, NumClasses = 5,
    };

    /// <summary>A small gray ViT without qkv bias, head dim 6, MLP 40 (widths that cross the SIMD and tile edges).</summary>
    public static readonly WhereToEdit.Engine.Models.VitConfig SmallNoBias =
        Small with { Depth = 3, NumHeads = 4, EmbedDim = 24, MlpHidden = 40, QkvBias = false, InChans = 1 };

    /// <summary>
    /// Every parameter ~ N(0, 0.2²), in parameter order from one <see cref="Rng"/>; LayerNorm weights 1 + N(0, <paramref name="lnStd"/>²);
    /// the head N(0, <paramref name="headStd"/>²) — a large head so the final LayerNorm's bounded feature can still reach CE ≤ 0.01.
    /// </summary>
    public static WhereToEdit.Engine.Models.VitModel Randomise(WhereToEdit.Engine.Models.VitModel model, ulong seed, double lnStd = 0, double headStd = 1.5) =>
        Randomise(model, new Rng(seed), lnStd, headStd);

    /// <summary>As above, drawing from <paramref name="rng"/> (a test that goes on drawing its inputs from the same stream).</summary>
    public static WhereToEdit.Engine.Models.VitModel Randomise(WhereToEdit.Engine.Models.VitModel model, Rng rng, double lnStd = 0, double headStd = 1.5)
    {
        foreach (var p in model.Parameters)
        {
            bool lnWeight = p.Name.Contains("norm") && p.Name.EndsWith("weight");
            double std = lnWeight ? lnStd : p.Name == "head.weight" ? headStd : 0.2;
            p.Value.CopyFrom(Enumerable.Range(0, (int)p.Length).Select(_ => (float)(rng.NextNormal() * std + (lnWeight ? 1 : 0))).ToArray());
        }
        return model;
    }
}

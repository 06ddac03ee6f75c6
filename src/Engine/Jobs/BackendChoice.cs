using System.Text.Json;
using System.Text.Json.Serialization;
using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Jobs;

/// <summary>Which backend a job runs on: `--device`, `--threads`, `--gemm`.</summary>
public sealed record BackendChoice
{
    /// <summary>cpu, cuda, or auto (CUDA when a device answers, else CPU).</summary>
    public string Device { get; init; } = "cpu";
    /// <summary>CPU worker threads; 0 = WTE_THREADS or all cores.</summary>
    public int Threads { get; init; }
    /// <summary>CPU GEMM: auto, openblas or managed.</summary>
    public string Gemm { get; init; } = "auto";
    /// <summary>Linear layers' forward arithmetic on the CPU: fp32, or bf16 (opt-in, AVX512_BF16).</summary>
    public string Precision { get; init; } = "fp32";

    public IBackend Create() => BackendFactory.Create(Device, Threads, ParseGemm(Gemm), ParsePrecision(Precision));

    public static CpuPrecision ParsePrecision(string value) => value.Trim().ToLowerInvariant() switch
    {
        "fp32" => CpuPrecision.Fp32,
        "bf16" => CpuPrecision.Bf16,
        _ => throw new ArgumentException($"--precision '{value}': expected fp32 or bf16"),
    };

    public static GemmKind ParseGemm(string value) => value.Trim().ToLowerInvariant() switch
    {
        "auto" => GemmKind.Auto,
        "openblas" => GemmKind.OpenBlas,
        "managed" => GemmKind.Managed,
        _ => throw new ArgumentException($"--gemm '{value}': expected auto, openblas or managed"),
    };
}

/// <summary>How job options and results are written as JSON (snake_case names, enums as names).</summary>
public static class JobJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static string Serialize<T>(T value) => JsonSerializer.Serialize(value, Options);

    public static T Deserialize<T>(string json) =>
        JsonSerializer.Deserialize<T>(json, Options) ?? throw new ArgumentException($"{typeof(T).Name}: the JSON is null");
}

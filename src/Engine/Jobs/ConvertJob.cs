using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Jobs;

/// <summary>What `wte convert` is asked to do.</summary>
public sealed record ConvertJobOptions
{
    /// <summary>Any model wte reads (safetensors, .npz, PyTorch, hub folder).</summary>
    public required string InPath { get; init; }
    /// <summary>The safetensors file to write.</summary>
    public required string OutPath { get; init; }
    /// <summary>f32, f16 or bf16.</summary>
    public string DType { get; init; } = "f32";
    /// <summary>Attention heads, when the input does not say.</summary>
    public int? Heads { get; init; }
}

/// <summary>What `wte export` wrote: the reference's HyperNetwork_mask state dict for these blocks.</summary>
public sealed record ExportJobResult(string OutPath, int Width, int Depth, int Units, int UnitSize, IReadOnlyList<int> EditBlocks);

/// <summary>Format conversions behind `wte convert` (any model → self-describing safetensors) and `wte export` (hypernetwork → reference .pth).</summary>
public static class ConvertJob
{
    public static ConversionResult Run(ConvertJobOptions o, IJobProgress? progress = null, CancellationToken cancel = default)
    {
        var type = ParseDType(o.DType);
        if (o.Heads is int h && h <= 0) throw new ArgumentException($"--heads {h}: must be positive");
        new CommandPaths().Input(o.InPath, "IN").Output(o.OutPath, "--out").Check();
        cancel.ThrowIfCancellationRequested();
        return CheckpointConversion.Convert(o.InPath, o.OutPath, type, new ModelLoadOptions { NumHeads = o.Heads });
    }

    public static ExportJobResult Export(string hypernetPath, string outPath, IJobProgress? progress = null, CancellationToken cancel = default)
    {
        new CommandPaths().Input(hypernetPath, "HYPERNET").Output(outPath, "--out").Check();
        cancel.ThrowIfCancellationRequested();
        using var backend = new CpuBackend(new CpuBackendOptions { Threads = 1 });
        var (c, blocks) = CheckpointConversion.ExportHypernet(backend, hypernetPath, outPath);
        return new ExportJobResult(outPath, c.EmbedDim, c.Depth, c.Units, c.UnitSize, blocks);
    }

    public static TensorDType ParseDType(string text) => text.Trim().ToLowerInvariant() switch
    {
        "f32" => TensorDType.F32,
        "f16" => TensorDType.F16,
        "bf16" => TensorDType.BF16,
        var other => throw new ArgumentException($"--dtype {other}: must be f32, f16 or bf16"),
    };
}

using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.IO;

/// <summary>What <see cref="CheckpointConversion.Convert"/> read and wrote.</summary>
public sealed record ConversionResult(string InputCheckpoint, CheckpointFormat InputFormat, NamingConvention InputNaming,
                                      string OutputPath, int Tensors, long Parameters, string Fingerprint, IReadOnlyList<string> Notes);

/// <summary>Format conversions behind <c>wte convert</c> and <c>wte export</c>.</summary>
public static class CheckpointConversion
{
    /// <summary>
    /// Any model <see cref="ModelFolder.Load"/> reads (safetensors, AugReg .npz, PyTorch .pth/.bin, hub folders) → our
    /// self-describing safetensors: timm names, wte.config / wte.preprocessing / wte.labels metadata, written atomically.
    /// The input is read completely and checked before anything is written; it is never modified.
    /// </summary>
    public static ConversionResult Convert(string input, string output, TensorDType dtype = TensorDType.F32, ModelLoadOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(input);
        ArgumentException.ThrowIfNullOrEmpty(output);
        var loaded = ModelFolder.Load(input, options);
        if (string.Equals(Path.GetFullPath(loaded.Paths.CheckpointPath), Path.GetFullPath(output), StringComparison.Ordinal))
            throw new CheckpointFormatException(output, "the output would overwrite the input checkpoint; choose another --out");
        if (dtype is not (TensorDType.F32 or TensorDType.F16 or TensorDType.BF16))
            throw new ArgumentException($"--dtype must be f32, f16 or bf16, not {dtype}");
        ModelFolder.Save(output, loaded.Weights, loaded.Architecture, loaded.Preprocessing, loaded.Labels, dtype, loaded.Provenance.HeadsSource);
        return new ConversionResult(loaded.Paths.CheckpointPath, loaded.Paths.Format, loaded.SourceConvention, output,
            loaded.Weights.Count, loaded.Weights.ParameterCount, VitCheckpoint.Fingerprint(loaded.Weights), loaded.Notes);
    }

    /// <summary>
    /// A hypernetwork file (ours, or a reference .pth) → the reference's <c>HyperNetwork_mask</c> state dict as a
    /// torch.save .pth (<see cref="ReferenceHypernet.ToReference"/>, <see cref="PyTorchWriter"/>), written atomically.
    /// Returns the loaded hypernetwork's description (config, edit blocks).
    /// </summary>
    public static (HypernetConfig Config, int[] EditBlocks) ExportHypernet(IBackend backend, string input, string output)
    {
        ArgumentException.ThrowIfNullOrEmpty(output);
        if (string.Equals(Path.GetFullPath(input), Path.GetFullPath(output), StringComparison.Ordinal))
            throw new CheckpointFormatException(output, "the output would overwrite the input hypernetwork; choose another --out");
        using var loaded = HypernetFile.Load(backend, input);
        var c = loaded.Network.Config;
        // The reference class stores neither heads nor amplification nor LayerNorm eps: it hard-codes them, so only a
        // hypernetwork built the same way means the same thing there.
        if (c.NumHeads != HypernetConfig.DefaultHeads(c.EmbedDim) || c.Amplify != 3f || c.LayerNormEps != 1e-6f)
            throw new CheckpointFormatException(input, $"cannot be expressed as the reference's HyperNetwork_mask: it has {c.NumHeads} heads, amplify {c.Amplify}, " +
                $"LayerNorm eps {c.LayerNormEps}; the reference fixes {HypernetConfig.DefaultHeads(c.EmbedDim)} heads at width {c.EmbedDim}, amplify 3, eps 1e-6");
        PyTorchWriter.Write(output, ReferenceHypernet.ToReference(loaded.Network));
        return (loaded.Network.Config, loaded.EditBlocks);
    }
}

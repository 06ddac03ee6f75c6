using System.Security.Cryptography;
using System.Text;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Models;

/// <summary>Bridges checkpoints (Engine/IO, timm names) and the in-memory <see cref="VitModel"/>.</summary>
public static class VitCheckpoint
{
    /// <summary>Builds the model a loaded checkpoint describes and loads its weights (refusing any mismatch or NaN).</summary>
    public static VitModel Load(IBackend backend, LoadedModel loaded)
    {
        var config = loaded.Architecture.Validate();
        // Tokens × width × heads from the file's own architecture: refuse a small file that needs gigabytes to run.
        ResourceBudget.Require(VitWorkspace.EstimateBytes(config, 1), loaded.Paths.CheckpointPath, $"running the model ({VitWorkspace.Describe(config, 1)})");
        var model = new VitModel(backend, config);
        try
        {
            model.LoadWeights(loaded.Weights.Tensors.ToDictionary(t => t.Name, t => (t.Shape, t.Data)), loaded.Paths.CheckpointPath);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The model's current weights as timm-named tensors (host copies), in timm order.</summary>
    public static TensorFile ToTensorFile(VitModel model, IReadOnlyDictionary<string, string>? metadata = null) =>
        new(model.Parameters.Select(p => new NamedTensor(p.Name, p.Shape, p.Value.ToArray())), metadata);

    /// <summary>Writes our own self-describing safetensors (atomic: temp file + rename).</summary>
    public static void Save(VitModel model, string path, Preprocessing preprocessing, IReadOnlyList<string>? labels)
        => ModelFolder.Save(path, ToTensorFile(model), model.Config, preprocessing, labels);

    /// <summary>
    /// A fingerprint of a set of weights: SHA-256 over every tensor's name, shape and fp32 bytes in name order,
    /// first 16 bytes as hex. Hypernetworks and edit patches record the base model's fingerprint.
    /// </summary>
    public static string Fingerprint(IEnumerable<(string Name, int[] Shape, float[] Data)> tensors)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (name, shape, data) in tensors.OrderBy(t => t.Name, StringComparer.Ordinal))
        {
            sha.AppendData(Encoding.UTF8.GetBytes($"{name}:{string.Join(",", shape)};"));
            sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
        }
        return Convert.ToHexString(sha.GetHashAndReset())[..32].ToLowerInvariant();
    }

    public static string Fingerprint(VitModel model) => Fingerprint(model.Parameters.Select(p => (p.Name, p.Shape, p.Value.ToArray())));

    public static string Fingerprint(TensorFile file) => Fingerprint(file.Tensors.Select(t => (t.Name, t.Shape, t.Data)));
}

using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Models;

/// <summary>
/// A saved hypernetwork: safetensors with its weights and metadata wte.hypernet.config (HypernetConfig JSON),
/// wte.hypernet.base_fingerprint (the base ViT it was meta-trained for) and wte.hypernet.edit_blocks.
/// </summary>
public static class HypernetFile
{
    public const string ConfigKey = "wte.hypernet.config";
    public const string FingerprintKey = "wte.hypernet.base_fingerprint";
    public const string BlocksKey = "wte.hypernet.edit_blocks";

    public sealed record Info(HypernetConfig Config, string BaseFingerprint, int[] EditBlocks, TensorFile Tensors);

    public static void Save(string path, Hypernetwork net, string baseFingerprint, IReadOnlyList<int> editBlocks,
                            IReadOnlyDictionary<string, string>? extraMetadata = null)
    {
        var metadata = new Dictionary<string, string>
        {
            [ConfigKey] = net.Config.ToJson(),
            [FingerprintKey] = baseFingerprint,
            [BlocksKey] = "[" + string.Join(",", editBlocks) + "]",
        };
        if (extraMetadata is not null) foreach (var kv in extraMetadata) metadata[kv.Key] = kv.Value;
        SafeTensors.Write(path, net.Parameters.Select(p => new NamedTensor(p.Name, p.Shape, p.Value.ToArray())), metadata);
    }

    public static Info Read(string path)
    {
        var file = SafeTensors.Read(path);
        string Need(string key) => file.Metadata.TryGetValue(key, out var v)
            ? v : throw new CheckpointFormatException(path, $"not a WhereToEdit hypernetwork: metadata '{key}' is missing");
        HypernetConfig config;
        int[] blocks;
        try
        {
            config = HypernetConfig.FromJson(Need(ConfigKey));
            blocks = System.Text.Json.JsonSerializer.Deserialize<int[]>(Need(BlocksKey)) ?? [];
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or ArgumentException)
        {
            throw new CheckpointFormatException(path, $"hypernetwork metadata is malformed: {e.Message}", e);
        }
        return new Info(config, Need(FingerprintKey), blocks, file);
    }

    /// <summary>
    /// Loads a hypernetwork for <paramref name="baseModel"/>, refusing one meta-trained for other weights
    /// (fingerprint) or another architecture (edit blocks, widths).
    /// </summary>
    public static (Hypernetwork Net, int[] EditBlocks) Load(string path, IBackend backend, VitModel baseModel, string? baseFingerprint = null)
    {
        var info = Read(path);
        string fingerprint = baseFingerprint ?? VitCheckpoint.Fingerprint(baseModel);
        if (!string.Equals(fingerprint, info.BaseFingerprint, StringComparison.OrdinalIgnoreCase))
            throw new CheckpointFormatException(path,
                $"this hypernetwork was meta-trained for the base model with fingerprint {info.BaseFingerprint}, not for this model ({fingerprint}); pass the original model with --base, or meta-train one for it");
        var c = baseModel.Config;
        if (info.Config.EmbedDim != c.EmbedDim || info.Config.UnitSize != c.MlpHidden || info.Config.Units != 2 * info.EditBlocks.Length
            || info.EditBlocks.Any(b => b < 0 || b >= c.Depth))
            throw new CheckpointFormatException(path,
                $"hypernetwork (width {info.Config.EmbedDim}, {info.Config.Units} units of {info.Config.UnitSize}, blocks [{string.Join(",", info.EditBlocks)}]) does not fit the model (width {c.EmbedDim}, MLP {c.MlpHidden}, depth {c.Depth})");
        var net = new Hypernetwork(backend, info.Config);
        try
        {
            net.LoadWeights(info.Tensors.Tensors.ToDictionary(t => t.Name, t => (t.Shape, t.Data)), path);
            return (net, info.EditBlocks);
        }
        catch
        {
            net.Dispose();
            throw;
        }
    }
}

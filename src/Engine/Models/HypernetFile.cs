using System.Text.Json;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Models;

/// <summary>A hypernetwork loaded from a file, with what it was trained for.</summary>
public sealed class LoadedHypernet(Hypernetwork network, int[] editBlocks, string baseFingerprint, IReadOnlyDictionary<string, string> metadata, string path) : IDisposable
{
    public Hypernetwork Network { get; } = network;
    /// <summary>The base model's edited blocks, in unit order (fc1, fc2 of each).</summary>
    public int[] EditBlocks { get; } = editBlocks;
    public string BaseFingerprint { get; } = baseFingerprint;
    public IReadOnlyDictionary<string, string> Metadata { get; } = metadata;
    public string Path { get; } = path;

    public void Dispose() => Network.Dispose();
}

/// <summary>
/// A trained mask hypernetwork as a self-describing safetensors file: the parameters under their own names
/// (query_tokens, blocks.{i}.*, heads.{r}.*) plus metadata <c>wte.hypernet.config</c> (the <see cref="HypernetConfig"/>
/// JSON), <c>wte.hypernet.base_fingerprint</c> (<see cref="VitCheckpoint.Fingerprint(VitModel)"/> of the base model it
/// was trained on) and <c>wte.hypernet.edit_blocks</c> (JSON array). Written atomically (temp file + rename).
/// </summary>
public static class HypernetFile
{
    public const string ConfigKey = "wte.hypernet.config";
    public const string FingerprintKey = "wte.hypernet.base_fingerprint";
    public const string EditBlocksKey = "wte.hypernet.edit_blocks";

    /// <summary>The metadata that describes a hypernetwork (also written into meta-training checkpoints).</summary>
    public static Dictionary<string, string> Metadata(HypernetConfig config, IReadOnlyList<int> editBlocks, string baseFingerprint) => new()
    {
        [ConfigKey] = config.ToJson(),
        [FingerprintKey] = baseFingerprint,
        [EditBlocksKey] = JsonSerializer.Serialize(editBlocks),
    };

    /// <summary>The parameters as host tensors, in <see cref="Hypernetwork.Parameters"/> order, optionally under a name prefix.</summary>
    public static IEnumerable<NamedTensor> Tensors(Hypernetwork net, string prefix = "") =>
        net.Parameters.Select(p => new NamedTensor(prefix + p.Name, p.Shape, p.Value.ToArray()));

    public static void Save(string path, Hypernetwork net, IReadOnlyList<int> editBlocks, string baseFingerprint,
                            IReadOnlyDictionary<string, string>? extraMetadata = null)
    {
        ArgumentNullException.ThrowIfNull(net);
        ArgumentException.ThrowIfNullOrEmpty(baseFingerprint);
        if (editBlocks.Count * 2 != net.Config.Units)
            throw new ArgumentException($"{editBlocks.Count} edit blocks need {2 * editBlocks.Count} hypernetwork units, the network has {net.Config.Units}");
        var metadata = Metadata(net.Config, editBlocks, baseFingerprint);
        if (extraMetadata is not null)
            foreach (var (k, v) in extraMetadata) metadata.TryAdd(k, v);
        SafeTensors.Write(path, Tensors(net), metadata);
    }

    /// <summary>
    /// Loads a hypernetwork file. When <paramref name="baseModel"/> is given, the file must have been trained on exactly
    /// that model (same fingerprint) and fit its shape; otherwise a <see cref="CheckpointFormatException"/> names the file.
    /// </summary>
    public static LoadedHypernet Load(IBackend backend, string path, VitModel? baseModel = null, string? baseFingerprint = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        var file = SafeTensors.Read(path);
        var (config, blocks, fingerprint) = Describe(file.Metadata, path);
        ResourceBudget.Require(config.EstimateBytes(), path, $"the hypernetwork config (depth {config.Depth}, MLP {config.MlpHidden})");
        if (baseModel is not null)
        {
            string actual = baseFingerprint ?? VitCheckpoint.Fingerprint(baseModel);
            if (!string.Equals(actual, fingerprint, StringComparison.OrdinalIgnoreCase))
                throw new CheckpointFormatException(path, $"hypernetwork was trained on base model {fingerprint}, but this model's fingerprint is {actual} (wte info MODEL prints it; for a model that already carries patches pass the original with --base)");
            var c = baseModel.Config;
            if (config.EmbedDim != c.EmbedDim || config.UnitSize != c.MlpHidden || blocks.Any(b => b < 0 || b >= c.Depth))
                throw new CheckpointFormatException(path, $"hypernetwork (width {config.EmbedDim}, {config.UnitSize} gates per unit, blocks [{string.Join(",", blocks)}]) does not fit the model (width {c.EmbedDim}, MLP {c.MlpHidden}, {c.Depth} blocks)");
        }
        var net = new Hypernetwork(backend, config);
        try
        {
            net.LoadWeights(file.Tensors.ToDictionary(t => t.Name, t => (t.Shape, t.Data)), path);
        }
        catch (Exception e) when (e is ArgumentException or ArithmeticException)
        {
            net.Dispose();
            string prefix = path + ": ";
            throw new CheckpointFormatException(path, e.Message.StartsWith(prefix, StringComparison.Ordinal) ? e.Message[prefix.Length..] : e.Message, e);
        }
        catch
        {
            net.Dispose();
            throw;
        }
        return new LoadedHypernet(net, blocks, fingerprint, file.Metadata, path);
    }

    /// <summary>Config, edit blocks and base fingerprint from a file's metadata (validated).</summary>
    public static (HypernetConfig Config, int[] EditBlocks, string BaseFingerprint) Describe(IReadOnlyDictionary<string, string> metadata, string path)
    {
        string Get(string key) => metadata.TryGetValue(key, out var v) && !string.IsNullOrWhiteSpace(v)
            ? v : throw new CheckpointFormatException(path, $"not a WhereToEdit hypernetwork file: metadata '{key}' is missing");
        HypernetConfig config;
        int[] blocks;
        try
        {
            config = HypernetConfig.FromJson(Get(ConfigKey));
            blocks = JsonSerializer.Deserialize<int[]>(Get(EditBlocksKey)) ?? throw new JsonException("null");
        }
        catch (Exception e) when (e is JsonException or ArgumentException or NotSupportedException)
        {
            throw new CheckpointFormatException(path, $"bad hypernetwork metadata: {e.Message}", e);
        }
        foreach (var (key, value) in metadata)
            if (key.EndsWith("format_version", StringComparison.Ordinal) && value.Trim() != "1")
                throw new CheckpointFormatException(path, $"metadata '{key}' = '{value}': this engine reads hypernetwork format version 1");
        if (blocks.Length * 2 != config.Units || blocks.Distinct().Count() != blocks.Length)
            throw new CheckpointFormatException(path, $"metadata '{EditBlocksKey}' [{string.Join(",", blocks)}] does not match {config.Units} hypernetwork units");
        return (config, blocks, Get(FingerprintKey));
    }
}

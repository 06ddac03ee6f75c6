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
    /// <summary>Name prefix of the hypernetwork's tensors inside a meta-training checkpoint.</summary>
    public const string CheckpointPrefix = "hypernet/";

    public const string ConfigKey = "wte.hypernet.config";
    public const string FingerprintKey = "wte.hypernet.base_fingerprint";
    public const string EditBlocksKey = "wte.hypernet.edit_blocks";
    public const string FormatVersionKey = "wte.hypernet.format_version";

    /// <summary>The file layout this code writes and reads; a file without <see cref="FormatVersionKey"/> (the first ones, e.g. the shipped asset) is version 1.</summary>
    public const int CurrentFormatVersion = 1;

    /// <summary>The metadata that describes a hypernetwork (also written into meta-training checkpoints).</summary>
    public static Dictionary<string, string> Metadata(HypernetConfig config, IReadOnlyList<int> editBlocks, string baseFingerprint) => new()
    {
        [ConfigKey] = config.ToJson(),
        [FingerprintKey] = baseFingerprint,
        [EditBlocksKey] = JsonSerializer.Serialize(editBlocks),
        [FormatVersionKey] = CurrentFormatVersion.ToString(System.Globalization.CultureInfo.InvariantCulture),
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
    /// <remarks>
    /// A PyTorch file (.pth / .pt / .bin) is read as the reference's <c>HyperNetwork_mask</c> state dict
    /// (<see cref="ReferenceHypernet"/>): it carries no base fingerprint, so only its shape is checked against the base
    /// model, and its edit blocks are <paramref name="referenceEditBlocks"/> or the reference's (7, 8, 9 for 6 units).
    /// </remarks>
    public static LoadedHypernet Load(IBackend backend, string path, VitModel? baseModel = null, string? baseFingerprint = null,
                                      IReadOnlyList<int>? referenceEditBlocks = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        PathSafety.RequireInputFile(path, "hypernetwork file");   // before anything opens it (a FIFO would block)
        bool isReference = IsPyTorchPath(path);
        var file = isReference ? PyTorchCheckpoint.Read(path) : SafeTensors.Read(path);
        HypernetConfig config;
        int[] blocks;
        string fingerprint;
        Dictionary<string, (int[] Shape, float[] Data)> tensors;
        if (isReference)
        {
            if (!ReferenceHypernet.IsReferenceStateDict(file))
                throw new CheckpointFormatException(path, "not a reference hypernetwork: a PyTorch --hypernet file must be the state dict of HyperNetwork_mask (cls_token, layer.*, out_layer.*)");
            (config, tensors) = ReferenceHypernet.FromReference(file, path);
            try
            {
                blocks = referenceEditBlocks?.ToArray() ?? ReferenceHypernet.DefaultEditBlocks(config.Units);
            }
            catch (ArgumentException e)
            {
                throw new CheckpointFormatException(path, e.Message, e);
            }
            if (blocks.Length * 2 != config.Units)
                throw new CheckpointFormatException(path, $"reference hypernetwork has {config.Units} units but {blocks.Length} edit blocks were given");
            fingerprint = baseModel is null ? "" : baseFingerprint ?? VitCheckpoint.Fingerprint(baseModel);
        }
        else
        {
            (config, blocks, fingerprint) = Describe(file.Metadata, path);
            ResourceBudget.Require(config.EstimateBytes(), path, $"the hypernetwork config (depth {config.Depth}, MLP {config.MlpHidden})");
            // A meta-training checkpoint holds the hypernetwork under "hypernet/" beside its optimizer state: use it as is,
            // so that every checkpoint of a run can be evaluated (the reference edits with its 7000-iteration one).
            bool checkpoint = file.Tensors.Any(t => t.Name.StartsWith(CheckpointPrefix, StringComparison.Ordinal));
            tensors = file.Tensors.Where(t => !checkpoint || t.Name.StartsWith(CheckpointPrefix, StringComparison.Ordinal))
                .ToDictionary(t => checkpoint ? t.Name[CheckpointPrefix.Length..] : t.Name, t => (t.Shape, t.Data));
        }
        if (baseModel is not null)
        {
            string actual = baseFingerprint ?? VitCheckpoint.Fingerprint(baseModel);
            if (!isReference && !string.Equals(actual, fingerprint, StringComparison.OrdinalIgnoreCase))
                throw new CheckpointFormatException(path, $"hypernetwork was trained on base model {fingerprint}, but this model's fingerprint is {actual} (wte info MODEL prints it; for a model that already carries patches pass the original with --base)");
            var c = baseModel.Config;
            if (config.EmbedDim != c.EmbedDim || config.UnitSize != c.MlpHidden || blocks.Any(b => b < 0 || b >= c.Depth))
                throw new CheckpointFormatException(path, $"hypernetwork (width {config.EmbedDim}, {config.UnitSize} gates per unit, blocks [{string.Join(",", blocks)}]) does not fit the model (width {c.EmbedDim}, MLP {c.MlpHidden}, {c.Depth} blocks)");
        }
        var net = new Hypernetwork(backend, config);
        try
        {
            net.LoadWeights(tensors, path);
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

    /// <summary>True for a PyTorch checkpoint (by extension or content) rather than our safetensors.</summary>
    public static bool IsPyTorchPath(string path) =>
        path.EndsWith(".pth", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".pt", StringComparison.OrdinalIgnoreCase)
        || path.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) || (File.Exists(path) && PyTorchCheckpoint.IsPyTorchFile(path));

    /// <summary>Config, edit blocks and base fingerprint from a file's metadata (validated).</summary>
    public static (HypernetConfig Config, int[] EditBlocks, string BaseFingerprint) Describe(IReadOnlyDictionary<string, string> metadata, string path)
    {
        string Get(string key) => metadata.TryGetValue(key, out var v) && !string.IsNullOrWhiteSpace(v)
            ? v : throw new CheckpointFormatException(path, $"not a WhereToEdit hypernetwork file: metadata '{key}' is missing");
        if (metadata.TryGetValue(FormatVersionKey, out var version) && version != CurrentFormatVersion.ToString(System.Globalization.CultureInfo.InvariantCulture))
            throw new CheckpointFormatException(path, $"hypernetwork metadata '{FormatVersionKey}' is '{version}'; this wte reads version {CurrentFormatVersion}");
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

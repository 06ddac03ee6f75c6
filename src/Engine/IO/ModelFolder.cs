using System.Text.Json;
using System.Text.Json.Nodes;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Engine.IO;

/// <summary>Our own metadata keys in a timm-named safetensors file written by <see cref="ModelFolder.Save"/>.</summary>
internal static class WteMetadata
{
    /// <summary>JSON of <see cref="VitConfig"/> (<see cref="VitConfig.ToJson"/>) plus "heads_source", the head count's provenance.</summary>
    public const string ConfigKey = "wte.config";

    /// <summary>JSON of <see cref="Preprocessing"/> (<see cref="Preprocessing.ToJson"/>).</summary>
    public const string PreprocessingKey = "wte.preprocessing";

    /// <summary>JSON array of class names, one per head output.</summary>
    public const string LabelsKey = "wte.labels";

    /// <summary>The head count's provenance when wte.config does not record one.</summary>
    public const string DefaultHeadsSource = "wte.config";

    public static Dictionary<string, string> Build(VitConfig architecture, Preprocessing? preprocessing, IReadOnlyList<string>? labels,
                                                   string headsSource = DefaultHeadsSource)
    {
        var config = JsonNode.Parse(architecture.ToJson())!.AsObject();
        config["heads_source"] = headsSource;
        var m = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["format"] = "pt",
            [ConfigKey] = config.ToJsonString(),
        };
        if (preprocessing is not null) m[PreprocessingKey] = preprocessing.ToJson();
        if (labels is not null) m[LabelsKey] = JsonSerializer.Serialize(labels.ToArray(), WteJsonContext.Default.StringArray);
        return m;
    }

    /// <summary>The stored architecture and the provenance of its head count (null when the file has no wte.config).</summary>
    public static (VitConfig Architecture, string HeadsSource)? ReadArchitecture(IReadOnlyDictionary<string, string> metadata, string path)
    {
        if (!metadata.TryGetValue(ConfigKey, out var s)) return null;
        var architecture = VitConfig.FromJson(s, path);
        using var doc = StrictJson.Parse(s, path, ConfigKey);
        string source = StrictJson.TryGet(doc.RootElement, "heads_source", out var hs) ? StrictJson.GetString(hs, "heads_source", path, ConfigKey) : DefaultHeadsSource;
        return (architecture, source);
    }

    public static Preprocessing? ReadPreprocessing(IReadOnlyDictionary<string, string> metadata, string path) =>
        metadata.TryGetValue(PreprocessingKey, out var s) ? Preprocessing.FromJson(s, path) : null;

    public static IReadOnlyList<string>? ReadLabels(IReadOnlyDictionary<string, string> metadata, string path)
    {
        if (!metadata.TryGetValue(LabelsKey, out var s)) return null;
        using var doc = StrictJson.Parse(s, path, LabelsKey);
        if (doc.RootElement.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(path, $"{LabelsKey} must be a JSON array of strings");
        return [.. doc.RootElement.EnumerateArray().Select(e => StrictJson.GetString(e, LabelsKey, path, LabelsKey))];
    }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(string[]))]
internal sealed partial class WteJsonContext : System.Text.Json.Serialization.JsonSerializerContext;

/// <summary>Where a model's files are.</summary>
public sealed record ResolvedModelPaths(string CheckpointPath, CheckpointFormat Format, string? ConfigPath, string? PreprocessorConfigPath);

/// <summary>Caller overrides for <see cref="ModelFolder.Load"/>.</summary>
public sealed record ModelLoadOptions
{
    /// <summary>Attention heads, when known better than the checkpoint's configs (wins over everything).</summary>
    public int? NumHeads { get; init; }

    /// <summary>LayerNorm epsilon override.</summary>
    public double? LnEps { get; init; }

    /// <summary>Preprocessing override (wins over stored and default settings).</summary>
    public Preprocessing? Preprocessing { get; init; }
}

/// <summary>A checkpoint loaded with timm names, its architecture, preprocessing and labels, and where each came from.</summary>
public sealed record LoadedModel(
    TensorFile Weights,
    VitConfig Architecture,
    ArchitectureProvenance Provenance,
    Preprocessing Preprocessing,
    string PreprocessingSource,
    IReadOnlyList<string>? Labels,
    NamingConvention SourceConvention,
    ResolvedModelPaths Paths,
    IReadOnlyList<string> Notes);

/// <summary>
/// Resolves what a user points at — a .safetensors, .npz or PyTorch .pth/.pt/.bin file, or a hub-style folder
/// (model.safetensors or pytorch_model.bin + config.json [+ preprocessor_config.json]) — and loads it as a
/// timm-named ViT with architecture, preprocessing and labels. Also saves our own self-describing safetensors
/// (timm names + wte.* metadata).
/// </summary>
public static class ModelFolder
{
    public static ResolvedModelPaths Resolve(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Directory.Exists(path))
        {
            string? Sibling(string name) => File.Exists(Path.Combine(path, name)) ? Path.Combine(path, name) : null;
            string? config = Sibling("config.json"), pre = Sibling("preprocessor_config.json");
            if (Sibling("model.safetensors") is string main) return new(main, CheckpointFormat.SafeTensors, config, pre);
            if (Sibling("model.safetensors.index.json") is not null)
                throw new CheckpointFormatException(path, "sharded safetensors (model.safetensors.index.json) are not supported; merge the shards into one model.safetensors");
            if (Sibling("pytorch_model.bin") is string bin) return new(bin, CheckpointFormat.PyTorch, config, pre);
            if (Sibling("pytorch_model.bin.index.json") is not null)
                throw new CheckpointFormatException(path, "sharded PyTorch checkpoint (pytorch_model.bin.index.json) is not supported; merge the shards into one pytorch_model.bin");
            var st = Directory.GetFiles(path, "*.safetensors");
            var npz = Directory.GetFiles(path, "*.npz");
            var pickles = Directory.GetFiles(path).Where(IsPyTorchName).ToArray();
            var all = st.Concat(npz).Concat(pickles).ToArray();
            if (all.Length == 1)
                return new(all[0], st.Length == 1 ? CheckpointFormat.SafeTensors : npz.Length == 1 ? CheckpointFormat.Npz : CheckpointFormat.PyTorch, config, pre);
            if (all.Length > 1)
                throw new CheckpointFormatException(path, "folder holds several checkpoints (" +
                    string.Join(", ", all.Select(Path.GetFileName)) + "); point at one file");
            throw new CheckpointFormatException(path, "folder has no model.safetensors, pytorch_model.bin, *.safetensors, *.npz or *.pth/*.pt/*.bin checkpoint");
        }
        if (!File.Exists(path))
            throw new CheckpointFormatException(path, "no such file or folder");
        PathSafety.RequireInputFile(path, "model file");   // before anything opens it (a FIFO would block)
        var format = DetectFormat(path);
        // A file inside a hub folder brings that folder's configs along.
        string? cfg = null, prep = null;
        if (Path.GetFileName(path) is "model.safetensors" or "pytorch_model.bin")
        {
            string dir = Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".";
            cfg = File.Exists(Path.Combine(dir, "config.json")) ? Path.Combine(dir, "config.json") : null;
            prep = File.Exists(Path.Combine(dir, "preprocessor_config.json")) ? Path.Combine(dir, "preprocessor_config.json") : null;
        }
        return new(path, format, cfg, prep);
    }

    private static bool IsPyTorchName(string f) =>
        f.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".pth", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".pt", StringComparison.OrdinalIgnoreCase);

    private static CheckpointFormat DetectFormat(string path)
    {
        if (path.EndsWith(".npz", StringComparison.OrdinalIgnoreCase)) return CheckpointFormat.Npz;
        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)) return CheckpointFormat.SafeTensors;
        if (IsPyTorchName(path) || PyTorchCheckpoint.IsPyTorchFile(path)) return CheckpointFormat.PyTorch;
        Span<byte> head = stackalloc byte[4];
        int n;
        using (var fs = File.OpenRead(path)) n = fs.Read(head);
        if (n == 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4) return CheckpointFormat.Npz;
        return CheckpointFormat.SafeTensors;
    }

    /// <summary>Reads the checkpoint container as it is (source names).</summary>
    public static TensorFile ReadTensors(ResolvedModelPaths paths) =>
        paths.Format switch
        {
            CheckpointFormat.Npz => NpzReader.Read(paths.CheckpointPath),
            CheckpointFormat.PyTorch => PyTorchCheckpoint.Read(paths.CheckpointPath),
            _ => SafeTensors.Read(paths.CheckpointPath),
        };

    /// <summary>
    /// Loads a model. Architecture: wte.config metadata, else config.json (HF: every field; timm: heads from
    /// model_args / architecture name), else the shapes with heads from the AugReg kernels, the timm preset of the
    /// same width or dim/64 (flagged). Every config value is checked against the tensor shapes.
    /// Preprocessing: options, wte.preprocessing, timm pretrained_cfg, HF preprocessor_config.json, else the default of
    /// the source (HF → direct 224 bilinear; AugReg .npz → the reference code's 256/224 bilinear; timm → augreg 248/224 bicubic).
    /// </summary>
    public static LoadedModel Load(string path, ModelLoadOptions? options = null)
    {
        options ??= new ModelLoadOptions();
        var paths = Resolve(path);
        var raw = ReadTensors(paths);
        var converted = CheckpointNaming.ToTimm(raw);
        var shapes = converted.Shapes;
        string ckpt = paths.CheckpointPath;
        var notes = new List<string>();
        if (raw.Metadata.TryGetValue("npz.skipped_members", out var skipped)) notes.Add(skipped);
        if (raw.Metadata.TryGetValue(PyTorchCheckpoint.SkippedKey, out var skippedTensors)) notes.Add(skippedTensors);
        if (raw.Metadata.TryGetValue(PyTorchCheckpoint.WrapperKey, out var wrapper)) notes.Add($"state dict read from the checkpoint's '{wrapper}' entry");

        var config = paths.ConfigPath is not null ? ModelConfigFile.Load(paths.ConfigPath) : null;
        var wteArch = WteMetadata.ReadArchitecture(raw.Metadata, ckpt);

        // ---- architecture
        VitConfig arch;
        ArchitectureProvenance provenance;
        if (wteArch is { } stored)
        {
            arch = stored.Architecture;
            string source = stored.HeadsSource;
            if (options.NumHeads is int h) (arch, source) = (arch with { NumHeads = h }, "caller");
            if (options.LnEps is double e) arch = arch with { LayerNormEps = (float)e };
            arch.EnsureValid(ckpt);
            arch.EnsureMatches(converted.Tensors, ckpt);
            provenance = new ArchitectureProvenance(HeadsOrigin.Config, source);
        }
        else
        {
            int? heads = options.NumHeads;
            string? headsSource = heads is null ? null : "caller";
            double eps = converted.SourceConvention == NamingConvention.HuggingFace ? HfVitConfig.DefaultLayerNormEps : 1e-6;
            if (config?.HuggingFace is { } hf)
            {
                CheckAgainst(ckpt, paths.ConfigPath!, shapes, hf);
                if (hf.HiddenAct != "gelu")
                    throw new CheckpointFormatException(paths.ConfigPath!, $"hidden_act \"{hf.HiddenAct}\" is not supported (the engine implements exact erf GELU, HF \"gelu\")");
                heads ??= hf.NumAttentionHeads;
                headsSource ??= "Hugging Face config.json num_attention_heads";
                eps = hf.LayerNormEps;
            }
            else if (config?.Timm is { } timm)
            {
                if (timm.GlobalPool is { Length: > 0 } pool && pool != "token")
                    throw new CheckpointFormatException(paths.ConfigPath!, $"global_pool \"{pool}\" is not supported (class-token ViTs only)");
                if (timm.NumClasses is int nc && nc != shapes.NumClasses)
                    throw new CheckpointFormatException(paths.ConfigPath!, $"num_classes {nc} but the checkpoint head has {shapes.NumClasses} outputs");
                // model_args override the named preset in timm (create_model(name, **model_args)), so the name's width
                // matters only when the heads come from it.
                if (timm.ModelArgsNumHeads is null && TimmVitPresets.ParseName(timm.Architecture) is { } parsed && parsed.Preset.Dim != shapes.EmbedDim)
                    throw new CheckpointFormatException(paths.ConfigPath!, $"architecture {timm.Architecture} has width {parsed.Preset.Dim} but the checkpoint has {shapes.EmbedDim}");
                if (heads is null && timm.Heads is int th)
                {
                    heads = th;
                    headsSource = timm.ModelArgsNumHeads is not null ? "timm config.json model_args.num_heads" : $"timm config.json architecture {timm.Architecture}";
                }
            }
            if (options.LnEps is double oe) eps = oe;
            (arch, provenance) = ArchitectureInference.Infer(shapes, eps, ckpt, heads, headsSource);
            if (provenance.HeadsAreGuessed) notes.Add(provenance.HeadsSource);
        }

        // ---- preprocessing
        Preprocessing pre;
        string preSource;
        bool isDefault = false;
        if (options.Preprocessing is not null) (pre, preSource) = (options.Preprocessing, "caller");
        else if (WteMetadata.ReadPreprocessing(raw.Metadata, ckpt) is { } wp) (pre, preSource) = (wp, WteMetadata.PreprocessingKey);
        else if (config?.Timm?.PretrainedCfg is { } pc) (pre, preSource) = (pc.ToPreprocessing(paths.ConfigPath!), "timm config.json pretrained_cfg");
        else if (paths.PreprocessorConfigPath is not null)
            (pre, preSource) = (HfPreprocessorConfig.Load(paths.PreprocessorConfigPath).ToPreprocessing(paths.PreprocessorConfigPath), "preprocessor_config.json");
        else
        {
            isDefault = true;
            (pre, preSource) = converted.SourceConvention switch
            {
                NamingConvention.HuggingFace => (Preprocessing.HuggingFace, "default for Hugging Face ViT (direct 224, bilinear, 0.5)"),
                NamingConvention.AugReg => (Preprocessing.ReferenceCode, "default for AugReg .npz (reference code: 256 → 224, bilinear, 0.5)"),
                _ => (Preprocessing.TimmAugReg, "default for timm augreg (248 → 224, bicubic, 0.5)"),
            };
            if (pre.CropSize != arch.ImageSize)
            {
                // Scale the default to the model's input size the way timm does (crop_pct kept).
                double pct = (double)pre.CropSize / pre.ResizeSize;
                pre = pre with { CropSize = arch.ImageSize, ResizeSize = pre.ResizeMode == ResizeMode.Direct ? arch.ImageSize : (int)Math.Floor(arch.ImageSize / pct) };
            }
            notes.Add($"no stored preprocessing: using the {preSource}");
        }
        if (pre.Channels != arch.InChans)
        {
            if (!isDefault && options.Preprocessing is not null)
                throw new CheckpointFormatException(ckpt, $"preprocessing has {pre.Channels} channels but the model takes {arch.InChans}");
            pre = pre.ForChannels(arch.InChans, ckpt);
        }
        if (pre.CropSize != arch.ImageSize)
            throw new CheckpointFormatException(ckpt, $"preprocessing crops {pre.CropSize} px but the model takes {arch.ImageSize} px ({preSource})");

        // ---- labels
        IReadOnlyList<string>? labels = WteMetadata.ReadLabels(raw.Metadata, ckpt);
        string? labelSource = labels is null ? null : WteMetadata.LabelsKey;
        if (labels is null && config?.Timm?.LabelNames is { } tl) (labels, labelSource) = (tl, "timm label_names");
        if (labels is null && config?.HuggingFace?.Id2Label is { } hl) (labels, labelSource) = (hl, "Hugging Face id2label");
        if (labels is not null && labels.Count != arch.NumClasses)
        {
            if (labelSource == WteMetadata.LabelsKey)
                throw new CheckpointFormatException(ckpt, $"{WteMetadata.LabelsKey} has {labels.Count} names but the head has {arch.NumClasses} outputs");
            notes.Add($"{labelSource} has {labels.Count} names but the head has {arch.NumClasses} outputs; labels ignored");
            labels = null;
        }

        return new LoadedModel(converted.Tensors, arch, provenance, pre, preSource, labels, converted.SourceConvention, paths, notes);
    }

    private static void CheckAgainst(string ckpt, string configPath, CheckpointShapes s, HfVitConfig c)
    {
        var bad = new List<string>();
        void Cmp(string key, int cfg, int actual) { if (cfg != actual) bad.Add($"{key} {cfg} vs {actual}"); }
        Cmp("hidden_size", c.HiddenSize, s.EmbedDim);
        Cmp("num_hidden_layers", c.NumHiddenLayers, s.Depth);
        Cmp("intermediate_size", c.IntermediateSize, s.MlpHidden);
        Cmp("patch_size", c.PatchSize, s.PatchSize);
        Cmp("num_channels", c.NumChannels, s.InChans);
        Cmp("image_size", c.ImageSize, s.ImageSize);
        if (c.QkvBias != s.QkvBias) bad.Add($"qkv_bias {c.QkvBias} vs {s.QkvBias}");
        if (bad.Count > 0)
            throw new CheckpointFormatException(configPath, $"config.json disagrees with the tensor shapes of {ckpt} (config vs checkpoint): {string.Join(", ", bad)}");
    }

    /// <summary>
    /// Writes a self-describing checkpoint: timm names in timm order, <c>__metadata__</c> with wte.config,
    /// wte.preprocessing and wte.labels. The tensors must match <paramref name="architecture"/> exactly.
    /// <paramref name="headsSource"/> is stored beside the architecture as the provenance of its head count.
    /// </summary>
    public static void Save(string path, TensorFile timmWeights, VitConfig architecture, Preprocessing preprocessing,
                            IReadOnlyList<string>? labels = null, TensorDType dtype = TensorDType.F32, string headsSource = WteMetadata.DefaultHeadsSource)
    {
        architecture.EnsureValid(path);
        preprocessing.EnsureValid(path);
        architecture.EnsureMatches(timmWeights, path);
        if (preprocessing.Channels != architecture.InChans)
            throw new CheckpointFormatException(path, $"preprocessing has {preprocessing.Channels} channels but the model takes {architecture.InChans}");
        if (labels is not null && labels.Count != architecture.NumClasses)
            throw new CheckpointFormatException(path, $"{labels.Count} labels for a head of {architecture.NumClasses} outputs");
        var ordered = architecture.TimmTensorShapes().Select(t => timmWeights[t.Name]);
        SafeTensors.Write(path, ordered, WteMetadata.Build(architecture, preprocessing, labels, headsSource), dtype);
    }
}

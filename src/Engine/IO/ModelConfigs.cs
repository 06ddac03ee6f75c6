using System.Globalization;
using System.Text.Json;

namespace WhereToEdit.Engine.IO;

/// <summary>
/// Hugging Face transformers ViTConfig (config.json). Absent keys take ViTConfig's defaults — notably
/// <see cref="LayerNormEps"/> = 1e-12, not timm's 1e-6.
/// </summary>
internal sealed record HfVitConfig(
    int HiddenSize,
    int NumAttentionHeads,
    int NumHiddenLayers,
    int IntermediateSize,
    int ImageSize,
    int PatchSize,
    int NumChannels,
    double LayerNormEps,
    bool QkvBias,
    string HiddenAct,
    string? ModelType,
    IReadOnlyList<string>? Id2Label)
{
    public const double DefaultLayerNormEps = 1e-12;

    public static HfVitConfig Parse(JsonElement r, string path)
    {
        const string what = "Hugging Face config.json";
        int I(string k, int dflt) => StrictJson.TryGet(r, k, out var e) ? StrictJson.GetInt(e, k, path, what) : dflt;
        string? modelType = StrictJson.TryGet(r, "model_type", out var mt) ? StrictJson.GetString(mt, "model_type", path, what) : null;
        if (modelType is not null && modelType != "vit")
            throw new CheckpointFormatException(path, $"{what}: model_type \"{modelType}\" is not supported (only \"vit\")");
        double eps = StrictJson.TryGet(r, "layer_norm_eps", out var le) ? StrictJson.GetDouble(le, "layer_norm_eps", path, what) : DefaultLayerNormEps;
        bool qkvBias = !StrictJson.TryGet(r, "qkv_bias", out var qb) || StrictJson.GetBool(qb, "qkv_bias", path, what);
        string act = StrictJson.TryGet(r, "hidden_act", out var ha) ? StrictJson.GetString(ha, "hidden_act", path, what) : "gelu";
        IReadOnlyList<string>? labels = null;
        if (StrictJson.TryGet(r, "id2label", out var idl))
        {
            if (idl.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(path, $"{what}: id2label must be an object");
            var map = new SortedDictionary<int, string>();
            foreach (var kv in idl.EnumerateObject())
            {
                if (!int.TryParse(kv.Name, NumberStyles.None, CultureInfo.InvariantCulture, out int id) || !map.TryAdd(id, StrictJson.GetString(kv.Value, "id2label", path, what)))
                    throw new CheckpointFormatException(path, $"{what}: id2label key \"{kv.Name}\" is not a distinct non-negative integer");
            }
            if (map.Count > 0 && (map.Keys.First() != 0 || map.Keys.Last() != map.Count - 1))
                throw new CheckpointFormatException(path, $"{what}: id2label ids are not 0..{map.Count - 1}");
            labels = [.. map.Values];
        }
        return new HfVitConfig(I("hidden_size", 768), I("num_attention_heads", 12), I("num_hidden_layers", 12), I("intermediate_size", 3072),
            I("image_size", 224), I("patch_size", 16), I("num_channels", 3), eps, qkvBias, act, modelType, labels);
    }
}

/// <summary>Hugging Face preprocessor_config.json (ViTImageProcessor).</summary>
internal sealed record HfPreprocessorConfig(bool DoResize, int Height, int Width, int Resample, bool DoNormalize, float[] ImageMean, float[] ImageStd)
{
    public static HfPreprocessorConfig Load(string path)
    {
        const string what = "preprocessor_config.json";
        using var doc = ModelConfigFile.ParseFile(path, what);
        var r = doc.RootElement;
        bool B(string k, bool d) => StrictJson.TryGet(r, k, out var e) ? StrictJson.GetBool(e, k, path, what) : d;
        int h = 224, w = 224;
        if (StrictJson.TryGet(r, "size", out var size))
        {
            if (size.ValueKind == JsonValueKind.Number) h = w = StrictJson.GetInt(size, "size", path, what);
            else if (size.ValueKind == JsonValueKind.Object && StrictJson.TryGet(size, "height", out var he) && StrictJson.TryGet(size, "width", out var we))
            {
                h = StrictJson.GetInt(he, "size.height", path, what);
                w = StrictJson.GetInt(we, "size.width", path, what);
            }
            else throw new CheckpointFormatException(path, $"{what}: \"size\" must be an integer or {{height, width}}, got {StrictJson.Show(size)}");
        }
        if (StrictJson.TryGet(r, "do_center_crop", out var dcc) && StrictJson.GetBool(dcc, "do_center_crop", path, what))
            throw new CheckpointFormatException(path, $"{what}: do_center_crop is not supported for Hugging Face processors");
        int resample = StrictJson.TryGet(r, "resample", out var rs) ? StrictJson.GetInt(rs, "resample", path, what) : 2;
        float[] mean = StrictJson.TryGet(r, "image_mean", out var m) ? StrictJson.GetFloatArray(m, "image_mean", path, what) : [0.5f, 0.5f, 0.5f];
        float[] std = StrictJson.TryGet(r, "image_std", out var s) ? StrictJson.GetFloatArray(s, "image_std", path, what) : [0.5f, 0.5f, 0.5f];
        if (StrictJson.TryGet(r, "rescale_factor", out var rf) && Math.Abs(StrictJson.GetDouble(rf, "rescale_factor", path, what) - 1.0 / 255) > 1e-9)
            throw new CheckpointFormatException(path, $"{what}: rescale_factor {StrictJson.Show(rf)} is not supported (only 1/255)");
        return new HfPreprocessorConfig(B("do_resize", true), h, w, resample, B("do_normalize", true), mean, std);
    }

    /// <summary>The equivalent preprocessing (direct resize to height×width, PIL resample 2 = bilinear, 3 = bicubic).</summary>
    public Preprocessing ToPreprocessing(string path)
    {
        if (!DoResize) throw new CheckpointFormatException(path, "preprocessor_config.json: do_resize false is not supported (images need a fixed size)");
        if (Height != Width) throw new CheckpointFormatException(path, $"preprocessor_config.json: non-square size {Height}×{Width} is not supported");
        var interp = Resample switch
        {
            2 => Interpolation.Bilinear,
            3 => Interpolation.Bicubic,
            _ => throw new CheckpointFormatException(path, $"preprocessor_config.json: resample {Resample} is not supported (2 bilinear, 3 bicubic)"),
        };
        var p = DoNormalize
            ? new Preprocessing(ResizeMode.Direct, Height, Height, interp, ImageMean, ImageStd)
            : new Preprocessing(ResizeMode.Direct, Height, Height, interp, [.. ImageMean.Select(_ => 0f)], [.. ImageMean.Select(_ => 1f)]);
        p.EnsureValid(path);
        return p;
    }
}

/// <summary>timm's pretrained_cfg (eval transform settings).</summary>
internal sealed record TimmPretrainedCfg(int[] InputSize, string Interpolation, double CropPct, string? CropMode, float[] Mean, float[] Std)
{
    public Preprocessing ToPreprocessing(string path)
    {
        if (InputSize.Length != 3 || InputSize[1] != InputSize[2])
            throw new CheckpointFormatException(path, $"pretrained_cfg input_size {NamedTensor.FormatShape(InputSize)} must be [C, S, S]");
        var p = Preprocessing.FromTimmPretrainedCfg(InputSize[1], Interpolation, CropPct, CropMode, Mean, Std, path);
        return InputSize[0] == p.Channels ? p : p.ForChannels(InputSize[0], path);
    }
}

/// <summary>timm hub config.json: architecture name, classes, label names, pretrained_cfg, model_args.</summary>
internal sealed record TimmHubConfig(string Architecture, int? NumClasses, IReadOnlyList<string>? LabelNames, TimmPretrainedCfg? PretrainedCfg,
                                   int? ModelArgsNumHeads, string? GlobalPool)
{
    /// <summary>Heads from model_args.num_heads, else from the architecture name's preset; null when neither says.</summary>
    public int? Heads => ModelArgsNumHeads ?? TimmVitPresets.ParseName(Architecture)?.Preset.Heads;

    public static TimmHubConfig Parse(JsonElement r, string path)
    {
        const string what = "timm config.json";
        string arch = StrictJson.GetString(r.GetProperty("architecture"), "architecture", path, what);
        int? classes = StrictJson.TryGet(r, "num_classes", out var nc) ? StrictJson.GetInt(nc, "num_classes", path, what) : null;
        IReadOnlyList<string>? labels = null;
        if (StrictJson.TryGet(r, "label_names", out var ln))
        {
            if (ln.ValueKind != JsonValueKind.Array) throw new CheckpointFormatException(path, $"{what}: label_names must be an array of strings");
            labels = [.. ln.EnumerateArray().Select(x => StrictJson.GetString(x, "label_names", path, what))];
        }
        int? heads = null;
        string? pool = StrictJson.TryGet(r, "global_pool", out var gp) ? StrictJson.GetString(gp, "global_pool", path, what) : null;
        if (StrictJson.TryGet(r, "model_args", out var ma) && ma.ValueKind == JsonValueKind.Object)
        {
            if (StrictJson.TryGet(ma, "num_heads", out var nh)) heads = StrictJson.GetInt(nh, "model_args.num_heads", path, what);
            if (StrictJson.TryGet(ma, "global_pool", out var gp2)) pool = StrictJson.GetString(gp2, "model_args.global_pool", path, what);
        }
        TimmPretrainedCfg? cfg = null;
        if (StrictJson.TryGet(r, "pretrained_cfg", out var pc))
        {
            if (pc.ValueKind != JsonValueKind.Object) throw new CheckpointFormatException(path, $"{what}: pretrained_cfg must be an object");
            const string w2 = "timm config.json pretrained_cfg";
            int[] input = StrictJson.TryGet(pc, "input_size", out var ins) ? StrictJson.GetIntArray(ins, "input_size", path, w2) : [3, 224, 224];
            string interp = StrictJson.TryGet(pc, "interpolation", out var ip) ? StrictJson.GetString(ip, "interpolation", path, w2) : "bicubic";
            double crop = StrictJson.TryGet(pc, "crop_pct", out var cp) ? StrictJson.GetDouble(cp, "crop_pct", path, w2) : 0.875;
            string? mode = StrictJson.TryGet(pc, "crop_mode", out var cm) ? StrictJson.GetString(cm, "crop_mode", path, w2) : null;
            float[] mean = StrictJson.TryGet(pc, "mean", out var m) ? StrictJson.GetFloatArray(m, "mean", path, w2) : [0.485f, 0.456f, 0.406f];
            float[] std = StrictJson.TryGet(pc, "std", out var s) ? StrictJson.GetFloatArray(s, "std", path, w2) : [0.229f, 0.224f, 0.225f];
            if (classes is null && StrictJson.TryGet(pc, "num_classes", out var pnc)) classes = StrictJson.GetInt(pnc, "pretrained_cfg.num_classes", path, w2);
            cfg = new TimmPretrainedCfg(input, interp, crop, mode, mean, std);
        }
        return new TimmHubConfig(arch, classes, labels, cfg, heads, pool);
    }
}

/// <summary>A config.json of either kind.</summary>
internal sealed record ModelConfigFile(string Path, HfVitConfig? HuggingFace, TimmHubConfig? Timm)
{
    /// <summary>Reads config.json and decides whether it is timm's (has "architecture") or Hugging Face's.</summary>
    public static ModelConfigFile Load(string path)
    {
        using var doc = ParseFile(path, "config.json");
        var r = doc.RootElement;
        if (r.TryGetProperty("architecture", out var a) && a.ValueKind == JsonValueKind.String)
            return new ModelConfigFile(path, null, TimmHubConfig.Parse(r, path));
        if (r.TryGetProperty("model_type", out _) || r.TryGetProperty("hidden_size", out _) || r.TryGetProperty("architectures", out _))
            return new ModelConfigFile(path, HfVitConfig.Parse(r, path), null);
        throw new CheckpointFormatException(path, "config.json is neither a timm hub config (\"architecture\") nor a Hugging Face config (\"model_type\"/\"hidden_size\")");
    }

    internal static JsonDocument ParseFile(string path, string what)
    {
        byte[] bytes;
        try
        {
            PathSafety.RequireInputFile(path, what);
            var info = new FileInfo(path);
            if (info.Exists && info.Length > 64 << 20) throw new CheckpointFormatException(path, $"{what} is {info.Length} bytes; too large for a config");
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointFormatException(path, $"cannot read {what}: {e.Message}", e);
        }
        var doc = StrictJson.Parse(bytes, path, what);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            doc.Dispose();
            throw new CheckpointFormatException(path, $"{what} must be a JSON object");
        }
        return doc;
    }
}

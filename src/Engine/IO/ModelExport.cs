using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Engine.IO;

/// <summary>Where an exported model goes: wte's own file, or a hub folder another library loads.</summary>
public enum ExportFormat
{
    /// <summary>One self-describing .safetensors (timm names + wte.* metadata).</summary>
    Wte,
    /// <summary>A timm hub folder: model.safetensors (timm names) + config.json with model_args, pretrained_cfg, label_names.</summary>
    Timm,
    /// <summary>A Hugging Face folder: model.safetensors (ViTForImageClassification names) + config.json + preprocessor_config.json.</summary>
    HuggingFace,
}

/// <summary>
/// Writes a timm-named ViT in the layout the user's other tools load: timm's <c>load_checkpoint</c>/hub folder or
/// transformers' <c>from_pretrained</c> folder, carrying architecture, preprocessing and labels in their own config
/// files (not in wte metadata), so the folder means the same thing to them and to wte.
/// </summary>
public static class ModelExport
{
    public static ExportFormat ParseFormat(string text) => text.Trim().ToLowerInvariant() switch
    {
        "wte" or "safetensors" => ExportFormat.Wte,
        "timm" => ExportFormat.Timm,
        "hf" or "huggingface" or "hugging-face" => ExportFormat.HuggingFace,
        _ => throw new ArgumentException($"--format '{text}': expected wte, timm or hf"),
    };

    /// <summary>Writes the model; returns notes on what the target format cannot express (empty when nothing is lost).</summary>
    public static IReadOnlyList<string> Write(string path, ExportFormat format, TensorFile timmWeights, VitConfig a,
                                              Preprocessing preprocessing, IReadOnlyList<string>? labels)
    {
        if (format == ExportFormat.Wte)
        {
            ModelFolder.Save(path, timmWeights, a, preprocessing, labels);
            return [];
        }
        if (File.Exists(path)) throw new IOException($"{path}: is a file; --format {Name(format)} writes a folder");
        if (Directory.Exists(path) && Directory.EnumerateFileSystemEntries(path).Any())
            throw new IOException($"{path}: folder is not empty; --format {Name(format)} writes a new folder");
        a.EnsureValid(path);
        a.EnsureMatches(timmWeights, path);
        var notes = new List<string>();
        // Written into a sibling temp folder, then renamed: a failure leaves no half folder.
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, "." + Path.GetFileName(full) + ".wte-tmp");
        if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        Directory.CreateDirectory(temp);
        try
        {
            var metadata = new Dictionary<string, string> { ["format"] = "pt" };
            if (format == ExportFormat.Timm)
            {
                var ordered = a.TimmTensorShapes().Select(t => timmWeights[t.Name]);
                SafeTensors.Write(Path.Combine(temp, "model.safetensors"), ordered, metadata);
                WriteJson(Path.Combine(temp, "config.json"), TimmConfig(a, preprocessing, labels, notes));
            }
            else
            {
                SafeTensors.Write(Path.Combine(temp, "model.safetensors"), CheckpointNaming.ToHuggingFace(timmWeights, a), metadata);
                WriteJson(Path.Combine(temp, "config.json"), HfConfig(a, labels));
                WriteJson(Path.Combine(temp, "preprocessor_config.json"), HfPreprocessor(preprocessing, notes));
            }
            if (Directory.Exists(full)) Directory.Delete(full);   // empty (checked above)
            Directory.Move(temp, full);
        }
        finally
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        }
        return notes;
    }

    private static string Name(ExportFormat f) => f == ExportFormat.HuggingFace ? "hf" : f.ToString().ToLowerInvariant();

    private static JsonObject TimmConfig(VitConfig a, Preprocessing p, IReadOnlyList<string>? labels, List<string> notes)
    {
        if (a.LayerNormEps != 1e-6f)
            notes.Add($"timm's VisionTransformer uses LayerNorm eps 1e-6; this model's {a.LayerNormEps.ToString(CultureInfo.InvariantCulture)} is not expressible in config.json");
        var cfg = new JsonObject
        {
            ["input_size"] = new JsonArray(p.Channels, p.CropSize, p.CropSize),
            ["interpolation"] = p.Interpolation.ToString().ToLowerInvariant(),
            ["crop_pct"] = CropPct(p.CropSize, p.ResizeSize),
            ["crop_mode"] = p.ResizeMode == ResizeMode.ShorterSide ? "center" : "squash",
            ["mean"] = Floats(p.Mean),
            ["std"] = Floats(p.Std),
            ["num_classes"] = a.NumClasses,
            ["first_conv"] = "patch_embed.proj",
            ["classifier"] = "head",
        };
        var config = new JsonObject
        {
            // A registered timm name; model_args override every shape, so timm builds exactly this model.
            ["architecture"] = $"vit_{TimmVitPresets.ByDim(a.EmbedDim)?.Size ?? "base"}_patch16_224",
            ["num_classes"] = a.NumClasses,
            ["num_features"] = a.EmbedDim,
            ["global_pool"] = "token",
            ["model_args"] = new JsonObject
            {
                ["img_size"] = a.ImageSize, ["patch_size"] = a.PatchSize, ["in_chans"] = a.InChans, ["embed_dim"] = a.EmbedDim,
                ["depth"] = a.Depth, ["num_heads"] = a.NumHeads, ["mlp_ratio"] = a.MlpHidden / (double)a.EmbedDim,
                ["qkv_bias"] = a.QkvBias, ["num_classes"] = a.NumClasses, ["global_pool"] = "token",
            },
            ["pretrained_cfg"] = cfg,
        };
        if (labels is not null) config["label_names"] = new JsonArray([.. labels.Select(l => (JsonNode)l)]);
        return config;
    }

    /// <summary>The largest crop_pct whose timm scale floor(crop / crop_pct) is exactly <paramref name="resize"/>.</summary>
    internal static double CropPct(int crop, int resize)
    {
        double pct = crop / (double)resize;
        while (Math.Floor(crop / pct) < resize) pct = Math.BitDecrement(pct);
        while (Math.Floor(crop / pct) > resize) pct = Math.BitIncrement(pct);
        return pct;
    }

    private static JsonObject HfConfig(VitConfig a, IReadOnlyList<string>? labels)
    {
        var names = labels ?? [.. Enumerable.Range(0, a.NumClasses).Select(i => $"LABEL_{i}")];
        var id2label = new JsonObject();
        var label2id = new JsonObject();
        for (int i = 0; i < names.Count; i++)
        {
            id2label[i.ToString(CultureInfo.InvariantCulture)] = names[i];
            label2id[names[i]] = i;
        }
        return new JsonObject
        {
            ["architectures"] = new JsonArray("ViTForImageClassification"),
            ["model_type"] = "vit",
            ["hidden_size"] = a.EmbedDim, ["num_hidden_layers"] = a.Depth, ["num_attention_heads"] = a.NumHeads,
            ["intermediate_size"] = a.MlpHidden, ["hidden_act"] = "gelu", ["layer_norm_eps"] = (double)(decimal)a.LayerNormEps,
            ["image_size"] = a.ImageSize, ["patch_size"] = a.PatchSize, ["num_channels"] = a.InChans, ["qkv_bias"] = a.QkvBias,
            ["hidden_dropout_prob"] = 0.0, ["attention_probs_dropout_prob"] = 0.0,
            ["id2label"] = id2label, ["label2id"] = label2id,
        };
    }

    private static JsonObject HfPreprocessor(Preprocessing p, List<string> notes)
    {
        if (p.ResizeMode != ResizeMode.Direct || p.ResizeSize != p.CropSize)
            notes.Add($"Hugging Face's ViTImageProcessor resizes straight to {p.CropSize}×{p.CropSize} and cannot express this model's {p}; " +
                      "transformers will see slightly different inputs than wte");
        return new JsonObject
        {
            ["image_processor_type"] = "ViTImageProcessor",
            ["do_resize"] = true,
            ["size"] = new JsonObject { ["height"] = p.CropSize, ["width"] = p.CropSize },
            ["resample"] = p.Interpolation == Interpolation.Bicubic ? 3 : 2,
            ["do_rescale"] = true,
            ["rescale_factor"] = 1.0 / 255,
            ["do_normalize"] = true,
            ["image_mean"] = Floats(p.Mean),
            ["image_std"] = Floats(p.Std),
        };
    }

    private static JsonArray Floats(float[] v) => new([.. v.Select(x => (JsonNode)(double)(decimal)x)]);

    private static void WriteJson(string path, JsonObject json)
    {
        using var fs = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        using (var w = new Utf8JsonWriter(fs, new JsonWriterOptions { Indented = true }))
            json.WriteTo(w);
        fs.WriteByte((byte)'\n');
        fs.Flush(flushToDisk: true);
    }
}

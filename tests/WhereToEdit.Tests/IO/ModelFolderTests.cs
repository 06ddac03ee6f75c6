using WhereToEdit.Engine.IO;
using Xunit;

namespace WhereToEdit.Tests.IO;

public class ModelFolderTests
{
    private const string HfConfig = """
        {
          "architectures": ["ViTForImageClassification"],
          "model_type": "vit",
          "hidden_size": 8, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 16,
          "image_size": 8, "patch_size": 4, "num_channels": 3, "qkv_bias": true, "hidden_act": "gelu",
          "id2label": {"0": "a", "1": "b", "2": "c", "3": "d", "4": "e"}
        }
        """;

    private const string TimmConfig = """
        {
          "architecture": "vit_custom_patch4_8.test",
          "num_classes": 5,
          "num_features": 8,
          "global_pool": "token",
          "model_args": {"num_heads": 2},
          "label_names": ["l0", "l1", "l2", "l3", "l4"],
          "pretrained_cfg": {
            "input_size": [3, 8, 8], "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": "center",
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": 5
          }
        }
        """;

    [Fact]
    public void HuggingFaceFolderUsesConfigHeadsEpsLabels()
    {
        using var dir = new TempDir();
        var arch = IoTestUtil.TinyArch();
        SafeTensors.Write(dir.File("model.safetensors"), IoTestUtil.ToHfLayout(IoTestUtil.TinyTimm(arch), arch));
        File.WriteAllText(dir.File("config.json"), HfConfig);
        var m = ModelFolder.Load(dir.Path);
        Assert.Equal(NamingConvention.HuggingFace, m.SourceConvention);
        Assert.Equal(4, m.Architecture.NumHeads);
        Assert.Equal(HeadsOrigin.Config, m.Provenance.HeadsOrigin);
        Assert.Equal(1e-12f, m.Architecture.LayerNormEps); // absent layer_norm_eps → HF default
        Assert.Equal(["a", "b", "c", "d", "e"], m.Labels);
        Assert.Equal(Preprocessing.HuggingFace with { ResizeSize = 8, CropSize = 8 }, m.Preprocessing);
        Assert.Equal(dir.File("config.json"), m.Paths.ConfigPath);

        File.WriteAllText(dir.File("config.json"), HfConfig.Replace("\"qkv_bias\": true", "\"qkv_bias\": true, \"layer_norm_eps\": 1e-06"));
        File.WriteAllText(dir.File("preprocessor_config.json"),
            """{"do_resize": true, "size": {"height": 8, "width": 8}, "resample": 3, "image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6], "rescale_factor": 0.00392156862745098}""");
        m = ModelFolder.Load(dir.File("model.safetensors")); // the file inside a hub folder brings its configs
        Assert.Equal(1e-6f, m.Architecture.LayerNormEps);
        Assert.Equal(new Preprocessing(ResizeMode.Direct, 8, 8, Interpolation.Bicubic, [0.1f, 0.2f, 0.3f], [0.4f, 0.5f, 0.6f]), m.Preprocessing);
        Assert.Equal("preprocessor_config.json", m.PreprocessingSource);
    }

    [Fact]
    public void HuggingFaceConfigMismatchIsAnError()
    {
        using var dir = new TempDir();
        var arch = IoTestUtil.TinyArch();
        SafeTensors.Write(dir.File("model.safetensors"), IoTestUtil.ToHfLayout(IoTestUtil.TinyTimm(arch), arch));
        File.WriteAllText(dir.File("config.json"), HfConfig.Replace("\"intermediate_size\": 16", "\"intermediate_size\": 32"));
        var ex = Assert.Throws<CheckpointFormatException>(() => ModelFolder.Load(dir.Path));
        Assert.Contains("intermediate_size 32 vs 16", ex.Message);
        File.WriteAllText(dir.File("config.json"), HfConfig.Replace("\"gelu\"", "\"gelu_new\""));
        Assert.Contains("hidden_act \"gelu_new\"", Assert.Throws<CheckpointFormatException>(() => ModelFolder.Load(dir.Path)).Message);
        File.WriteAllText(dir.File("config.json"), HfConfig.Replace("\"vit\"", "\"deit\""));
        Assert.Contains("model_type \"deit\"", Assert.Throws<CheckpointFormatException>(() => ModelFolder.Load(dir.Path)).Message);
        File.WriteAllText(dir.File("config.json"), "{\"foo\": 1}");
        Assert.Contains("neither a timm hub config", Assert.Throws<CheckpointFormatException>(() => ModelFolder.Load(dir.Path)).Message);
        File.WriteAllText(dir.File("config.json"), "{\"hidden_size\": 8, \"hidden_size\": 9}");
        Assert.Contains("duplicate key \"hidden_size\"", Assert.Throws<CheckpointFormatException>(() => ModelFolder.Load(dir.Path)).Message);
    }

    [Fact]
    public void TimmFolderUsesPretrainedCfgAndModelArgs()
    {
        using var dir = new TempDir();
        var arch = IoTestUtil.TinyArch();
        var timm = IoTestUtil.TinyTimm(arch);
        SafeTensors.Write(dir.File("model.safetensors"), timm);
        File.WriteAllText(dir.File("config.json"), TimmConfig);
        var m = ModelFolder.Load(dir.Path);
        Assert.Equal(NamingConvention.Timm, m.SourceConvention);
        Assert.Equal(2, m.Architecture.NumHeads);
        Assert.Equal("timm config.json model_args.num_heads", m.Provenance.HeadsSource);
        Assert.Equal(1e-6f, m.Architecture.LayerNormEps);
        Assert.Equal(["l0", "l1", "l2", "l3", "l4"], m.Labels);
        // floor(8 / 0.9) = 8 → shorter side 8, crop 8, bicubic.
        Assert.Equal(new Preprocessing(ResizeMode.ShorterSide, 8, 8, Interpolation.Bicubic, [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]), m.Preprocessing);
        Assert.Equal(timm.Names, m.Weights.Names);
    }

    [Fact]
    public void TimmPretrainedCfgGivesTheSpecTable()
    {
        var p = Preprocessing.FromTimmPretrainedCfg(224, "bicubic", 0.9, "center", [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f], "x");
        Assert.Equal(Preprocessing.TimmAugReg, p);
        Assert.Equal(248, p.ResizeSize);
        var q = Preprocessing.FromTimmPretrainedCfg(224, "bilinear", 0.875, null, [0.485f, 0.456f, 0.406f], [0.229f, 0.224f, 0.225f], "x");
        Assert.Equal(Preprocessing.TorchvisionImageNet, q);
        Assert.Throws<CheckpointFormatException>(() => Preprocessing.FromTimmPretrainedCfg(224, "lanczos", 0.9, null, [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f], "x"));
        Assert.Throws<CheckpointFormatException>(() => Preprocessing.FromTimmPretrainedCfg(224, "bicubic", 0.9, "border", [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f], "x"));
    }

    [Fact]
    public void PreprocessingDefaultsAndJson()
    {
        Assert.Equal((ResizeMode.ShorterSide, 256, 224, Interpolation.Bilinear), (Preprocessing.ReferenceCode.ResizeMode, Preprocessing.ReferenceCode.ResizeSize, Preprocessing.ReferenceCode.CropSize, Preprocessing.ReferenceCode.Interpolation));
        Assert.Equal((ResizeMode.Direct, 224, 224, Interpolation.Bilinear), (Preprocessing.HuggingFace.ResizeMode, Preprocessing.HuggingFace.ResizeSize, Preprocessing.HuggingFace.CropSize, Preprocessing.HuggingFace.Interpolation));
        foreach (var p in new[] { Preprocessing.ReferenceCode, Preprocessing.TimmAugReg, Preprocessing.HuggingFace, Preprocessing.TorchvisionImageNet,
                                  Preprocessing.TorchvisionImageNet with { Alpha = AlphaHandling.CompositeOnBlack, Precision = ResamplePrecision.Float, ApplyExifOrientation = false },
                                  new Preprocessing(ResizeMode.ShorterSide, 40, 32, Interpolation.Bicubic, [0.3f], [0.2f]) })
            Assert.Equal(p, Preprocessing.FromJson(p.ToJson(), "x"));
        Assert.Throws<CheckpointFormatException>(() => Preprocessing.FromJson("{\"resize_mode\":\"shorter_side\"}", "x"));
        var bad = new Preprocessing(ResizeMode.Direct, 8, 8, Interpolation.Bilinear, [0.5f, 0.5f], [0.5f, 0.5f]);
        Assert.NotEmpty(bad.Problems());
    }

    [Fact]
    public void AugRegNpzWithoutConfigUsesShapesAndReferencePreprocessing()
    {
        using var dir = new TempDir();
        var arch = IoTestUtil.TinyArch();
        string p = dir.File("ViT-T_8.npz");
        IoTestUtil.WriteNpz(p, IoTestUtil.ToFlaxLayout(IoTestUtil.TinyTimm(arch), arch).Select(t => (t.Name, IoTestUtil.NpyF32(t.Shape, t.Data))));
        var m = ModelFolder.Load(p);
        Assert.Equal(CheckpointFormat.Npz, m.Paths.Format);
        Assert.Equal(2, m.Architecture.NumHeads);
        Assert.Equal(HeadsOrigin.CheckpointShapes, m.Provenance.HeadsOrigin);
        Assert.Equal(1e-6f, m.Architecture.LayerNormEps);
        // Reference preprocessing scaled to the 8-px model: crop 8, shorter side floor(8·256/224) = 9.
        Assert.Equal(Preprocessing.ReferenceCode with { ResizeSize = 9, CropSize = 8 }, m.Preprocessing);
        Assert.Contains(m.Notes, n => n.Contains("no stored preprocessing", StringComparison.Ordinal));
        Assert.Null(m.Labels);
        // The folder that holds just this npz resolves to it.
        Assert.Equal(p, ModelFolder.Resolve(dir.Path).CheckpointPath);
    }

    [Fact]
    public void TimmWithoutConfigGuessesHeadsOrUsesOverrides()
    {
        using var dir = new TempDir();
        var arch = IoTestUtil.TinyArch() with { EmbedDim = 128, NumHeads = 2 };
        string p = dir.File("w.safetensors");
        SafeTensors.Write(p, IoTestUtil.TinyTimm(arch));
        var m = ModelFolder.Load(p);
        Assert.True(m.Provenance.HeadsAreGuessed);
        Assert.Equal(2, m.Architecture.NumHeads); // 128 / 64
        Assert.Contains(m.Notes, n => n.StartsWith("GUESS", StringComparison.Ordinal));
        m = ModelFolder.Load(p, new ModelLoadOptions { NumHeads = 4, LnEps = 1e-5 });
        Assert.Equal(4, m.Architecture.NumHeads);
        Assert.Equal(HeadsOrigin.Config, m.Provenance.HeadsOrigin);
        Assert.Equal(1e-5f, m.Architecture.LayerNormEps);
    }

    [Fact]
    public void SaveAndLoadOwnFormat()
    {
        using var dir = new TempDir();
        var arch = IoTestUtil.TinyArch() with { LayerNormEps = 1e-12f };
        var timm = IoTestUtil.TinyTimm(arch);
        var pre = Preprocessing.TorchvisionImageNet with { ResizeSize = 9, CropSize = 8, Precision = ResamplePrecision.Float };
        string[] labels = ["cat", "dog", "eel", "fox", "gnu"];
        string p = dir.File("edited.safetensors");
        ModelFolder.Save(p, new TensorFile(timm.Tensors.Reverse()), arch, pre, labels, TensorDType.BF16, "test config");
        var header = SafeTensors.ReadHeader(p);
        Assert.Equal("pt", header.Metadata["format"]);
        Assert.True(header.Metadata.ContainsKey(WteMetadata.ConfigKey));
        Assert.Equal(timm.Names, header.Entries.Select(e => e.Name)); // timm order on disk

        var m = ModelFolder.Load(p);
        Assert.Equal(arch, m.Architecture);
        Assert.Equal(new ArchitectureProvenance(HeadsOrigin.Config, "test config"), m.Provenance);
        Assert.Equal(pre, m.Preprocessing);
        Assert.Equal(WteMetadata.PreprocessingKey, m.PreprocessingSource);
        Assert.Equal(labels, m.Labels);
        Assert.Equal(TensorDType.BF16, m.Weights["head.weight"].SourceDType);

        // Architecture/tensor disagreement is refused on save and on load.
        Assert.Throws<CheckpointMappingException>(() => ModelFolder.Save(dir.File("x.safetensors"), timm, arch with { MlpHidden = 32 }, pre));
        Assert.Throws<CheckpointFormatException>(() => ModelFolder.Save(dir.File("x.safetensors"), timm, arch, pre, ["only one"]));
        var md = new Dictionary<string, string>(header.Metadata) { [WteMetadata.ConfigKey] = (arch with { Depth = 3 }).ToJson() };
        SafeTensors.Write(p, timm.Tensors, md);
        Assert.Throws<CheckpointMappingException>(() => ModelFolder.Load(p));
        md[WteMetadata.ConfigKey] = "{not json";
        SafeTensors.Write(p, timm.Tensors, md);
        Assert.Contains("wte.config", Assert.Throws<CheckpointFormatException>(() => ModelFolder.Load(p)).Message);
    }

    [Fact]
    public void ResolverErrors()
    {
        using var dir = new TempDir();
        Assert.Contains("no such file or folder", Assert.Throws<CheckpointFormatException>(() => ModelFolder.Resolve(dir.File("nope"))).Message);
        Assert.Contains("no model.safetensors", Assert.Throws<CheckpointFormatException>(() => ModelFolder.Resolve(dir.Path)).Message);
        File.WriteAllBytes(dir.File("pytorch_model.bin"), [1, 2, 3]);
        Assert.Equal(CheckpointFormat.PyTorch, ModelFolder.Resolve(dir.Path).Format);
        Assert.Contains("not a PyTorch zip checkpoint", Assert.Throws<CheckpointFormatException>(() => ModelFolder.Load(dir.Path)).Message);
        File.Delete(dir.File("pytorch_model.bin"));
        File.WriteAllBytes(dir.File("a.safetensors"), [1]);
        File.WriteAllBytes(dir.File("b.npz"), [1]);
        Assert.Contains("several checkpoints", Assert.Throws<CheckpointFormatException>(() => ModelFolder.Resolve(dir.Path)).Message);
        File.WriteAllText(dir.File("model.safetensors.index.json"), "{}");
        File.Delete(dir.File("a.safetensors"));
        Assert.Contains("sharded", Assert.Throws<CheckpointFormatException>(() => ModelFolder.Resolve(dir.Path)).Message);
    }
}

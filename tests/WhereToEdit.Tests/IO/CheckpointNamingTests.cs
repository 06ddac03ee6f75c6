using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using Xunit;

namespace WhereToEdit.Tests.IO;

public class CheckpointNamingTests
{
    private static void AssertSameTensors(TensorFile expected, TensorFile actual)
    {
        Assert.Equal(expected.Names, actual.Names);
        foreach (var t in expected.Tensors)
        {
            Assert.Equal(t.Shape, actual[t.Name].Shape);
            Assert.Equal(t.Data, actual[t.Name].Data);
        }
    }

    [Fact]
    public void VitBaseHas152TensorsAnd86567656Parameters()
    {
        var a = VitConfig.VitBase16;
        Assert.Equal(152, a.TimmTensorShapes().Count);
        Assert.Equal(86_567_656, a.ParameterCount());
        Assert.Equal(a.ParameterCount(), a.TimmTensorShapes().Sum(t => NamedTensor.ElementCountOf(t.Shape)));
        Assert.Equal(197, a.Tokens);
    }

    [Fact]
    public void TimmIsValidatedAndKeptInTimmOrder()
    {
        var arch = IoTestUtil.TinyArch();
        var timm = IoTestUtil.TinyTimm(arch);
        // Shuffle the order: output comes back in timm's state_dict order.
        var shuffled = new TensorFile(timm.Tensors.Reverse());
        var c = CheckpointNaming.ToTimm(shuffled);
        Assert.Equal(NamingConvention.Timm, c.SourceConvention);
        AssertSameTensors(timm, c.Tensors);
        Assert.Equal(new CheckpointShapes(8, 2, 16, 4, 3, 8, 5, true, null), c.Shapes);
    }

    [Theory]
    [InlineData(true, 5)]
    [InlineData(false, 5)]
    [InlineData(true, 0)]
    public void AugRegNpzMapsToTheOriginalTimmTensors(bool qkvBias, int classes)
    {
        using var dir = new TempDir();
        var arch = IoTestUtil.TinyArch(qkvBias, classes);
        var timm = IoTestUtil.TinyTimm(arch, seed: 11);
        string p = dir.File("augreg.npz");
        IoTestUtil.WriteNpz(p, IoTestUtil.ToFlaxLayout(timm, arch).Select(t => (t.Name, IoTestUtil.NpyF32(t.Shape, t.Data))));
        var raw = NpzReader.Read(p);
        Assert.Equal(NamingConvention.AugReg, CheckpointNaming.Detect(raw));
        var c = CheckpointNaming.ToTimm(raw);
        AssertSameTensors(timm, c.Tensors);
        Assert.Equal(2, c.Shapes.HeadsFromShapes);
        Assert.Equal(qkvBias, c.Shapes.QkvBias);
        Assert.Equal(classes, c.Shapes.NumClasses);
        var guess = ArchitectureInference.Infer(c.Shapes, 1e-6, p);
        Assert.Equal(HeadsOrigin.CheckpointShapes, guess.Provenance.HeadsOrigin);
        Assert.Equal(arch, guess.Architecture);
    }

    [Fact]
    public void AugRegQueryKernelMatchesTimmQkvFunctionally()
    {
        // q_flax[h, j] = Σ_i x[i]·K[i, h, j] must equal (W_qkv x)[h·hd + j] for the q rows.
        var arch = IoTestUtil.TinyArch();
        var timm = IoTestUtil.TinyTimm(arch, seed: 5);
        var flax = IoTestUtil.ToFlaxLayout(timm, arch);
        var src = new TensorFile(flax.Select(t => new NamedTensor(t.Name, t.Shape, t.Data)));
        var mapped = CheckpointNaming.ToTimm(src).Tensors;
        var x = IoTestUtil.Random(8, 99);
        var k = flax.Single(t => t.Name == "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/key/kernel").Data;
        var w = mapped["blocks.1.attn.qkv.weight"].Data;
        for (int h = 0; h < 2; h++)
        for (int j = 0; j < 4; j++)
        {
            double flaxK = 0, timmK = 0;
            for (int i = 0; i < 8; i++)
            {
                flaxK += x[i] * k[(i * 2 + h) * 4 + j];
                timmK += w[(8 + h * 4 + j) * 8 + i] * x[i];
            }
            Assert.Equal(flaxK, timmK, 5);
        }
    }

    [Fact]
    public void HuggingFaceRoundTripThroughSafetensors()
    {
        using var dir = new TempDir();
        var arch = IoTestUtil.TinyArch();
        var timm = IoTestUtil.TinyTimm(arch, seed: 21);
        string p = dir.File("model.safetensors");
        SafeTensors.Write(p, IoTestUtil.ToHfLayout(timm, arch));
        var raw = SafeTensors.Read(p);
        Assert.Equal(NamingConvention.HuggingFace, CheckpointNaming.Detect(raw));
        var c = CheckpointNaming.ToTimm(raw);
        AssertSameTensors(timm, c.Tensors);

        // ViTModel layout (no "vit." prefix, no classifier).
        var noHead = IoTestUtil.TinyArch(classes: 0);
        var timm2 = IoTestUtil.TinyTimm(noHead, seed: 3);
        var hf2 = IoTestUtil.ToHfLayout(timm2, noHead).Select(t => t.Rename(t.Name.Replace("vit.", "")));
        var c2 = CheckpointNaming.ToTimm(new TensorFile(hf2));
        AssertSameTensors(timm2, c2.Tensors);
        Assert.Equal(0, c2.Shapes.NumClasses);
    }

    [Fact]
    public void MissingUnexpectedAndMisshapedAreAllListed()
    {
        var arch = IoTestUtil.TinyArch();
        var timm = IoTestUtil.TinyTimm(arch);
        var list = timm.Tensors.Where(t => t.Name != "blocks.1.mlp.fc2.bias").ToList();
        list.Add(new NamedTensor("fc_norm.weight", [8], new float[8]));
        int i = list.FindIndex(t => t.Name == "blocks.0.attn.proj.weight");
        list[i] = new NamedTensor("blocks.0.attn.proj.weight", [8, 7], new float[56]);
        var ex = Assert.Throws<CheckpointMappingException>(() => CheckpointNaming.ToTimm(new TensorFile(list, null, "/x/ckpt.safetensors")));
        Assert.Equal(["blocks.1.mlp.fc2.bias [8]"], ex.Missing);
        Assert.Single(ex.Unexpected);
        Assert.Contains("fc_norm.weight", ex.Unexpected[0]);
        Assert.Equal(["blocks.0.attn.proj.weight: expected [8, 8], found [8, 7]"], ex.Misshaped);
        Assert.Contains("/x/ckpt.safetensors", ex.Message);
        Assert.Contains("1 missing, 1 unexpected, 1 mis-shaped", ex.Message);
    }

    [Fact]
    public void AugRegProblemsAreListed()
    {
        var arch = IoTestUtil.TinyArch();
        var flax = IoTestUtil.ToFlaxLayout(IoTestUtil.TinyTimm(arch), arch)
            .Where(t => t.Name != "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/value/kernel")
            .Select(t => new NamedTensor(t.Name, t.Shape, t.Data)).ToList();
        flax.Add(new NamedTensor("pre_logits/kernel", [8, 8], new float[64]));
        var ex = Assert.Throws<CheckpointMappingException>(() => CheckpointNaming.ToTimm(new TensorFile(flax)));
        Assert.Equal(NamingConvention.AugReg, ex.Convention);
        Assert.Contains("Transformer/encoderblock_1/MultiHeadDotProductAttention_1/value/kernel [8, 2, 4]", ex.Missing);
        Assert.Contains(ex.Unexpected, u => u.StartsWith("pre_logits/kernel", StringComparison.Ordinal));
    }

    [Fact]
    public void HfMisshapedQueryIsListed()
    {
        var arch = IoTestUtil.TinyArch();
        var hf = IoTestUtil.ToHfLayout(IoTestUtil.TinyTimm(arch), arch);
        int i = hf.FindIndex(t => t.Name == "vit.encoder.layer.0.attention.attention.query.weight");
        hf[i] = new NamedTensor(hf[i].Name, [4, 16], hf[i].Data);
        var ex = Assert.Throws<CheckpointMappingException>(() => CheckpointNaming.ToTimm(new TensorFile(hf)));
        Assert.Equal(["vit.encoder.layer.0.attention.attention.query.weight: expected [8, 8], found [4, 16]"], ex.Misshaped);
    }

    [Fact]
    public void UnknownMixedAndNonSquareAreRefused()
    {
        var e1 = Assert.Throws<CheckpointFormatException>(() => CheckpointNaming.Detect(new TensorFile([new NamedTensor("conv1.weight", [1], [0f])])));
        Assert.Contains("unrecognised tensor naming", e1.Message);
        Assert.Contains("'conv1.weight'", e1.Message);
        var e2 = Assert.Throws<CheckpointFormatException>(() => CheckpointNaming.Detect(new TensorFile(
            [new NamedTensor("cls_token", [1], [0f]), new NamedTensor("vit.embeddings.cls_token", [1], [0f])])));
        Assert.Contains("mix naming conventions (timm, Hugging Face)", e2.Message);

        var arch = IoTestUtil.TinyArch();
        var list = IoTestUtil.TinyTimm(arch).Tensors.ToList();
        int i = list.FindIndex(t => t.Name == "pos_embed");
        list[i] = new NamedTensor("pos_embed", [1, 4, 8], new float[32]); // 3 patches: not a square grid
        var e3 = Assert.Throws<CheckpointMappingException>(() => CheckpointNaming.ToTimm(new TensorFile(list)));
        Assert.Contains("not 1 + a square number", e3.Message);
    }

    [Theory]
    [InlineData(192, 12, 768, 3, HeadsOrigin.TimmPreset, "vit_tiny_patch16_224")]
    [InlineData(384, 12, 1536, 6, HeadsOrigin.TimmPreset, "vit_small_patch16_224")]
    [InlineData(768, 12, 3072, 12, HeadsOrigin.TimmPreset, "vit_base_patch16_224")]
    [InlineData(1024, 24, 4096, 16, HeadsOrigin.TimmPreset, "vit_large_patch16_224")]
    [InlineData(768, 6, 3072, 12, HeadsOrigin.TimmPreset, "vit_base width")]
    [InlineData(640, 12, 2560, 10, HeadsOrigin.DimOver64Guess, null)]
    public void HeadsFromPresetOrGuess(int dim, int depth, int mlp, int heads, HeadsOrigin origin, string? preset)
    {
        var s = new CheckpointShapes(dim, depth, mlp, 16, 3, 224, 1000, true, null);
        var g = ArchitectureInference.Infer(s, 1e-6, "x");
        Assert.Equal(heads, g.Architecture.NumHeads);
        Assert.Equal(origin, g.Provenance.HeadsOrigin);
        Assert.Equal(preset, g.Provenance.Preset);
        Assert.Equal(origin == HeadsOrigin.DimOver64Guess, g.Provenance.HeadsAreGuessed);
        if (g.Provenance.HeadsAreGuessed) Assert.StartsWith("GUESS", g.Provenance.HeadsSource);
    }

    [Fact]
    public void ConfigHeadsWinAndAreChecked()
    {
        var s = new CheckpointShapes(768, 12, 3072, 16, 3, 224, 1000, true, null);
        var g = ArchitectureInference.Infer(s, 1e-12, "x", 8, "my config");
        Assert.Equal(8, g.Architecture.NumHeads);
        Assert.Equal(HeadsOrigin.Config, g.Provenance.HeadsOrigin);
        Assert.Equal("my config", g.Provenance.HeadsSource);
        Assert.Equal(1e-12f, g.Architecture.LayerNormEps);
        Assert.Throws<CheckpointFormatException>(() => ArchitectureInference.Infer(s, 1e-6, "x", 7)); // 768 % 7 != 0
        Assert.Throws<CheckpointFormatException>(() => ArchitectureInference.Infer(s with { EmbedDim = 100 }, 1e-6, "x"));
        var aug = s with { HeadsFromShapes = 12 };
        Assert.Throws<CheckpointFormatException>(() => ArchitectureInference.Infer(aug, 1e-6, "x", 6, "config"));
    }

    [Theory]
    [InlineData("vit_base_patch16_224", "base", 16, 224)]
    [InlineData("vit_small_patch16_384.augreg_in21k_ft_in1k", "small", 16, 384)]
    [InlineData("vit_large_patch14_clip_224.openai", "large", 14, 224)]
    [InlineData("vit_tiny_patch16_224.augreg_in21k", "tiny", 16, 224)]
    public void TimmNamesParse(string name, string size, int patch, int image)
    {
        var r = TimmVitPresets.ParseName(name);
        Assert.NotNull(r);
        Assert.Equal(size, r.Value.Preset.Size);
        Assert.Equal(patch, r.Value.Patch);
        Assert.Equal(image, r.Value.ImageSize);
        Assert.Null(TimmVitPresets.ParseName("resnet50.a1_in1k"));
        Assert.Null(TimmVitPresets.ParseName("vit_gigantic_patch16_224"));
    }

    [Fact]
    public void ArchitectureJsonRoundTripsAndValidates()
    {
        var a = VitConfig.VitBase16 with { LayerNormEps = 1e-12f, QkvBias = false };
        Assert.Equal(a, VitConfig.FromJson(a.ToJson(), "x"));
        Assert.Equal(a, VitConfig.FromJson(a.ToJson()));
        var ex = Assert.Throws<CheckpointFormatException>(() => VitConfig.FromJson(a.ToJson().Replace("\"num_heads\":12", "\"num_heads\":7"), "cfg"));
        Assert.Contains("not divisible by num_heads 7", ex.Message);
        Assert.Throws<CheckpointFormatException>(() => VitConfig.FromJson("{\"depth\":1}", "cfg"));
        Assert.Throws<CheckpointFormatException>(() => VitConfig.FromJson(a.ToJson().Replace("{", "{\"depth\":3,"), "cfg")); // duplicate key
        // A headless checkpoint is a valid file architecture but not a model.
        Assert.Empty((a with { NumClasses = 0 }).Problems());
        Assert.Contains("num_classes", Assert.Throws<ArgumentException>(() => (a with { NumClasses = 0 }).Validate()).Message);
    }
}

public class NumpyFixtureTests
{
    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    [Fact]
    public void NumpySavezCompressedAugRegMapsLikeNumpyTransposes()
    {
        // Written by tests/reference/make_npz_fixture.py with np.savez_compressed; the expected timm tensors were
        // converted there with NumPy reshapes/transposes.
        var raw = NpzReader.Read(Fixture("augreg_tiny.npz"));
        var expected = SafeTensors.Read(Fixture("augreg_tiny_timm.safetensors"));
        var c = CheckpointNaming.ToTimm(raw);
        Assert.Equal(NamingConvention.AugReg, c.SourceConvention);
        Assert.Equal(expected.Names.Order(StringComparer.Ordinal), c.Tensors.Names.Order(StringComparer.Ordinal));
        foreach (var t in expected.Tensors)
        {
            Assert.Equal(t.Shape, c.Tensors[t.Name].Shape);
            Assert.Equal(t.Data, c.Tensors[t.Name].Data);
        }
        var m = ModelFolder.Load(Fixture("augreg_tiny.npz"));
        Assert.Equal(IoTestUtil.TinyArch(), m.Architecture);
    }
}

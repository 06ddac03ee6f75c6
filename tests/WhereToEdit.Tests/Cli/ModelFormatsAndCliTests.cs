using System.Text.Json;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using WhereToEdit.Cli;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Cli;

/// <summary>The same tiny ViT in all three formats gives bit-identical logits; `wte info` / `wte predict` end to end.</summary>
public sealed class ModelFormatsAndCliTests
{
    private const string HfConfig = """
        {
          "architectures": ["ViTForImageClassification"], "model_type": "vit",
          "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 2, "intermediate_size": 16,
          "image_size": 8, "patch_size": 4, "num_channels": 3, "qkv_bias": true, "hidden_act": "gelu", "layer_norm_eps": 1e-06
        }
        """;

    private static float[] Logits(VitModel model, float[] images, int n)
    {
        using var ws = model.CreateWorkspace(n);
        using var x = model.Backend.FromHost("x", images, n, 3, 8, 8);
        model.Forward(ws, x, n);
        return ws.Logits.ToArray().AsSpan(0, n * model.Config.NumClasses).ToArray();
    }

    [Fact]
    public void Timm_safetensors_hf_folder_and_augreg_npz_give_bit_identical_logits()
    {
        using var dir = new TempDir();
        var arch = IoTestUtil.TinyArch();
        var timm = IoTestUtil.TinyTimm(arch, seed: 3);
        SafeTensors.Write(dir.File("timm.safetensors"), timm);
        Directory.CreateDirectory(dir.File("hf"));
        SafeTensors.Write(Path.Combine(dir.File("hf"), "model.safetensors"), IoTestUtil.ToHfLayout(timm, arch));
        File.WriteAllText(Path.Combine(dir.File("hf"), "config.json"), HfConfig);
        IoTestUtil.WriteNpz(dir.File("augreg.npz"), IoTestUtil.ToFlaxLayout(timm, arch).Select(t => (t.Name, IoTestUtil.NpyF32(t.Shape, t.Data))));

        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var reference = new VitModel(be, arch);
        reference.LoadWeights(timm.Tensors.ToDictionary(t => t.Name, t => (t.Shape, t.Data)), "in-memory");
        var images = IoTestUtil.Random(3 * 3 * 8 * 8, 9);
        var expected = Logits(reference, images, 3);
        foreach (string path in new[] { dir.File("timm.safetensors"), dir.File("hf"), dir.File("augreg.npz") })
        {
            var loaded = ModelFolder.Load(path, new ModelLoadOptions { NumHeads = 2 });
            using var model = VitCheckpoint.Load(be, loaded);
            Assert.Equal(expected, Logits(model, images, 3));
        }
        foreach (var dtype in new[] { TensorDType.F16, TensorDType.BF16 })
        {
            string p = dir.File($"half.{dtype}.safetensors");
            SafeTensors.Write(p, timm, dtype);
            using var model = VitCheckpoint.Load(be, ModelFolder.Load(p, new ModelLoadOptions { NumHeads = 2 }));
            Compare.Check(null, $"logits from {dtype}", Logits(model, images, 3), expected, dtype == TensorDType.F16 ? 5e-3 : 3e-2);
        }
    }

    private static (int Code, string Out, string Err) Wte(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = WteCommands.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    /// <summary>A tiny 3-channel model saved as our own safetensors (preprocessing: shorter side 10 → crop 8, bilinear).</summary>
    private static string SaveTinyModel(TempDir dir)
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 1 });
        using var model = new VitModel(be, IoTestUtil.TinyArch());
        model.LoadWeights(IoTestUtil.TinyTimm(seed: 5).Tensors.ToDictionary(t => t.Name, t => (t.Shape, t.Data)), "test");
        string path = dir.File("tiny.safetensors");
        VitCheckpoint.Save(model, path, new Preprocessing(ResizeMode.ShorterSide, 10, 8, Interpolation.Bilinear, [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]),
            ["ant", "bee", "cat", "dog", "eel"]);
        return path;
    }

    private static string SaveImage(TempDir dir, string name, int w, int h, int seed)
    {
        var rng = new System.Random(seed);
        using var img = new Image<Rgb24>(w, h);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) img[x, y] = new Rgb24((byte)rng.Next(256), (byte)rng.Next(256), (byte)rng.Next(256));
        string path = dir.File(name);
        img.SaveAsPng(path);
        return path;
    }

    [Fact]
    public void Info_describes_format_architecture_preprocessing_and_labels()
    {
        using var dir = new TempDir();
        string model = SaveTinyModel(dir);
        var (code, stdout, stderr) = Wte("info", model);
        Assert.True(code == 0, stderr);
        Assert.Contains("safetensors, timm names", stdout);
        Assert.Contains("width 8, depth 2, heads 2, MLP 16, classes 5", stdout);
        Assert.Contains("shorter side 10 → center 8, bilinear", stdout);
        Assert.Contains("labels         5: ant, bee, cat, dog, eel", stdout);
        var json = JsonDocument.Parse(Wte("info", model, "--json").Out).RootElement;
        Assert.Equal(2, json.GetProperty("architecture").GetProperty("num_heads").GetInt32());
    }

    [Fact]
    public void Predict_prints_top_k_per_image_and_json_lines_matching_the_engine()
    {
        using var dir = new TempDir();
        string model = SaveTinyModel(dir);
        Directory.CreateDirectory(dir.File("imgs"));
        SaveImage(dir, "imgs/b.png", 12, 10, 1);
        SaveImage(dir, "imgs/a.png", 10, 14, 2);
        string single = SaveImage(dir, "c.png", 10, 10, 3);
        var (code, stdout, stderr) = Wte("predict", model, dir.File("imgs"), single, "--json", "--top-k", "3", "--batch", "2");
        Assert.True(code == 0, stderr);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(3, lines.Count);
        Assert.EndsWith("a.png", lines[0].GetProperty("image").GetString());   // folders expand sorted
        Assert.EndsWith("c.png", lines[2].GetProperty("image").GetString());
        foreach (var line in lines)
        {
            var top = line.GetProperty("top").EnumerateArray().ToList();
            Assert.Equal(3, top.Count);
            Assert.True(top[0].GetProperty("prob").GetSingle() >= top[1].GetProperty("prob").GetSingle());
            Assert.Contains(top[0].GetProperty("label").GetString(), new[] { "ant", "bee", "cat", "dog", "eel" });
        }
        // The same numbers as the engine called directly.
        var loaded = ModelFolder.Load(model);
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 1 });
        using var vit = VitCheckpoint.Load(be, loaded);
        var direct = Predictor.Run(vit, new ImageLoader(), loaded.Preprocessing, [single], 1, 3, loaded.Labels);
        Assert.Equal(direct[0].Top[0].Probability, lines[2].GetProperty("top")[0].GetProperty("prob").GetSingle());
    }

    [Fact]
    public void Bad_inputs_exit_non_zero_with_one_line_naming_the_file()
    {
        using var dir = new TempDir();
        string model = SaveTinyModel(dir);
        File.WriteAllBytes(dir.File("empty.png"), []);
        var (code, stdout, stderr) = Wte("predict", model, dir.File("empty.png"));
        Assert.NotEqual(0, code);
        Assert.Equal("", stdout);
        Assert.Contains("empty.png", stderr);
        Assert.Single(stderr.Trim().Split('\n'));

        (code, _, stderr) = Wte("predict", dir.File("missing.safetensors"), dir.File("empty.png"));
        Assert.NotEqual(0, code);
        Assert.Contains("missing.safetensors", stderr);

        File.WriteAllBytes(dir.File("trunc.safetensors"), File.ReadAllBytes(model).AsSpan(0, 100).ToArray());
        (code, _, stderr) = Wte("info", dir.File("trunc.safetensors"));
        Assert.NotEqual(0, code);
        Assert.Contains("trunc.safetensors", stderr);

        (code, _, stderr) = Wte("bench", "--device", "cuda", "--model", "test_tiny");
        Assert.NotEqual(0, code);
        Assert.Contains("cuda", stderr);

        string image = SaveImage(dir, "ok.png", 10, 10, 4);
        (code, _, stderr) = Wte("predict", model, image, "--mean", "0.5,0.5");
        Assert.NotEqual(0, code);
        Assert.Contains("--mean", stderr);
    }
}

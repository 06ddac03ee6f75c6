using System.Text.Json;
using WhereToEdit.Cli;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using Xunit;

namespace WhereToEdit.Tests.IO;

/// <summary>`wte patch apply --format timm|hf`: folders whose own config files carry architecture, preprocessing and labels.</summary>
public sealed class ModelExportTests
{
    private static string RepoFile(string relative) => Repo.File(relative);

    private static (int Code, string Out, string Err) Run(params string[] args) => Repo.Wte(args);

    [Fact]
    public void Patched_model_exported_as_timm_and_hf_folders_loads_back_identically()
    {
        using var dir = new TempDir();
        string model = RepoFile("assets/fashion_mnist/vit.safetensors");
        string image = RepoFile("assets/fashion_mnist/benchmark/natural/5_7/00290.png");
        string patch = dir.File("p.safetensors");
        var (code, _, err) = Run("edit", model, "--method", "ft-l2", "--coef", "0", "--image", image, "--label", "5", "--lr", "0.00024", "--out", patch);
        Assert.True(code == 0, err);
        foreach (string format in new[] { "wte", "timm", "hf" })
        {
            string outPath = dir.File(format == "wte" ? "patched.safetensors" : format);
            (code, _, err) = Run("patch", "apply", model, patch, "--out", outPath, "--format", format);
            Assert.True(code == 0, $"{format}: {err}");
        }
        var reference = ModelFolder.Load(dir.File("patched.safetensors"));
        foreach (var (folder, convention, configSource) in new[] { ("timm", NamingConvention.Timm, "timm config.json"), ("hf", NamingConvention.HuggingFace, "preprocessor_config.json") })
        {
            var loaded = ModelFolder.Load(dir.File(folder));
            Assert.Equal(convention, loaded.SourceConvention);
            Assert.Contains(configSource, loaded.PreprocessingSource);
            Assert.Equal(reference.Architecture, loaded.Architecture);
            Assert.Equal(reference.Preprocessing, loaded.Preprocessing);
            Assert.Equal(reference.Labels, loaded.Labels);
            foreach (var t in reference.Weights.Tensors) Assert.Equal(t.Data, loaded.Weights[t.Name].Data);
            // The folder's safetensors carries no wte metadata: the config files alone describe the model.
            Assert.DoesNotContain(SafeTensors.Read(Path.Combine(dir.File(folder), "model.safetensors")).Metadata.Keys, k => k.StartsWith("wte.", StringComparison.Ordinal));
        }
        using var hf = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.File("hf"), "config.json")));
        Assert.Equal("Sandal", hf.RootElement.GetProperty("id2label").GetProperty("5").GetString());
        Assert.Equal(5, hf.RootElement.GetProperty("label2id").GetProperty("Sandal").GetInt32());
    }

    [Fact]
    public void Export_refuses_a_non_empty_folder_and_an_unknown_format_leaving_nothing()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("busy"));
        File.WriteAllText(Path.Combine(dir.File("busy"), "keep.txt"), "mine");
        var tensors = new TensorFile([new NamedTensor("x", [1], [1f])]);
        var e = Assert.Throws<IOException>(() => ModelExport.Write(dir.File("busy"), ExportFormat.Timm, tensors, VitConfig.VitBase16,
            new Preprocessing(ResizeMode.Direct, 224, 224, Interpolation.Bilinear, [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]), null));
        Assert.Contains("not empty", e.Message);
        Assert.Equal("mine", File.ReadAllText(Path.Combine(dir.File("busy"), "keep.txt")));
        Assert.Contains("expected wte, timm or hf", Assert.Throws<ArgumentException>(() => ModelExport.ParseFormat("onnx")).Message);
    }

    [Theory]
    [InlineData(224, 248)]
    [InlineData(224, 256)]
    [InlineData(28, 28)]
    [InlineData(384, 384)]
    [InlineData(224, 241)]
    public void Crop_pct_round_trips_through_timms_floor(int crop, int resize)
    {
        double pct = ModelExport.CropPct(crop, resize);
        Assert.Equal(resize, (int)Math.Floor(crop / pct));
    }
}

using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Parity;

/// <summary>
/// `wte predict`'s path (hub folder + timm config.json preprocessing → image → logits) against PyTorch with
/// torchvision-style PIL preprocessing (tests/reference/make_predict_fixture.py).
/// </summary>
public sealed class PredictParityTests(ITestOutputHelper output)
{
    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    [Theory]
    [InlineData("no_resample")]
    [InlineData("resample")]
    public void Preprocessing_and_logits_match_pytorch(string image)
    {
        var reference = ReferenceFixture.Load("predict");
        var loaded = ModelFolder.Load(Fixture("predict_model"));
        Assert.Equal(Interpolation.Bicubic, loaded.Preprocessing.Interpolation);
        Assert.Equal(36, loaded.Preprocessing.ResizeSize);
        Assert.Equal(32, loaded.Preprocessing.CropSize);
        var pixels = new ImageLoader().Load(Fixture($"predict_{image}.png"), loaded.Preprocessing);
        var expectedPixels = reference[$"pixels_{image}"];
        double maxUnits = 0, meanUnits = 0;
        for (int i = 0; i < pixels.Length; i++)
        {
            double d = Math.Abs(pixels[i] - expectedPixels[i]) * 0.5 * 255;   // back to 0–255 units (std 0.5)
            maxUnits = Math.Max(maxUnits, d);
            meanUnits += d / pixels.Length;
        }
        output.WriteLine($"{image}: pixel difference vs PIL mean {meanUnits:F4}, max {maxUnits:F4} (0–255 units)");
        Assert.True(maxUnits < 1e-3, $"preprocessed pixels differ from PIL's by up to {maxUnits} units");

        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var vit = VitCheckpoint.Load(be, loaded);
        var predictions = Predictor.Run(vit, new ImageLoader(), loaded.Preprocessing, [Fixture($"predict_{image}.png")], 1, 3, loaded.Labels);
        Compare.Check(output, $"logits ({image})", predictions[0].Logits, reference[$"logits_{image}"]);
        Assert.Equal(loaded.Labels![predictions[0].Top[0].Index], predictions[0].Top[0].Label);
    }
}

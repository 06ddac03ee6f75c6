using System.Text.Json;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Cli;

/// <summary>
/// The README's "First session" walkthrough through the real CLI, step by step: predict a shipped failure, fix it with
/// the default options, predict again, validate before/after, apply and revert the patch, export timm and Hugging Face
/// folders and use one with a JPEG. (The demo that opens the walkthrough takes minutes and is not repeated here.)
/// </summary>
public sealed class NewcomerWalkthroughTests
{
    private static readonly string Model = Repo.File("assets/fashion_mnist/vit.safetensors");
    private static readonly string Hypernet = Repo.File("assets/fashion_mnist/hypernet.safetensors");
    private static readonly string Failure = Repo.File("assets/fashion_mnist/benchmark/natural/0_3/00674.png");
    private static readonly string Failures = Repo.File("assets/fashion_mnist/benchmark/natural");
    private static readonly string Jpeg = Repo.File("assets/examples/tshirt.jpg");

    private static JsonElement Json(params string[] args)
    {
        var (code, stdout, stderr) = Repo.Wte([.. args, "--json"]);
        Assert.True(code == 0, $"wte {string.Join(" ", args)} → exit {code}: {stderr}");
        using var doc = JsonDocument.Parse(stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)[0]);
        return doc.RootElement.Clone();
    }

    private static int Top1(string model, string image) => Json("predict", model, image, "-k", "1").GetProperty("top")[0].GetProperty("index").GetInt32();

    [Fact]
    public void The_readme_walkthrough_runs_through_the_cli()
    {
        using var dir = new TempDir();
        string Out(string name) => dir.File("first/" + name);   // a folder that does not exist yet

        // The shipped model gets this T-shirt wrong (Dress).
        string baseFingerprint = Json("info", Model).GetProperty("fingerprint").GetString()!;
        Assert.Equal(3, Top1(Model, Failure));

        // Fix it with the default options: exit 0, fixed.
        var edit = Json("edit", Model, "--hypernet", Hypernet, "-i", Failure, "-l", "T-shirt/top", "-o", Out("fix.safetensors"));
        Assert.True(edit.GetProperty("success").GetBoolean());
        var info = Json("patch", "info", Out("fix.safetensors"));
        Assert.Equal(baseFingerprint, info.GetProperty("base_fingerprint").GetString());

        // Apply, predict again.
        var applied = Json("patch", "apply", Model, Out("fix.safetensors"), "-o", Out("fixed.safetensors"));
        Assert.Equal(info.GetProperty("edited_fingerprint").GetString(), applied.GetProperty("fingerprint").GetString());
        Assert.Equal(0, Top1(Out("fixed.safetensors"), Failure));

        // Pictures: the edit's mask and the before/after panel (PNG + SVG each).
        foreach (var files in new[] { Json("plot", "mask", Out("fix.safetensors"), "-o", Out("plots/mask")),
                                      Json("plot", "edit", Model, Out("fix.safetensors"), "-i", Failure, "-o", Out("plots/edit")) })
        {
            Assert.Equal(2, files.GetProperty("files").GetArrayLength());
            foreach (var f in files.GetProperty("files").EnumerateArray()) Assert.True(new FileInfo(f.GetString()!).Length > 1000, f.GetString());
        }

        // Validate on the shipped failures (every one wrong before): the patch fixes some, and the report says how many.
        var (code, text, err) = Repo.Wte("validate", Model, Failures, "--patch", Out("fix.safetensors"), "-o", Out("validation"));
        Assert.True(code == 0, err);
        Assert.Contains("before", text);
        var validation = Json("validate", Model, Failures, "-p", Out("fix.safetensors"));
        Assert.Equal(0, validation.GetProperty("before").GetProperty("top1").GetDouble());
        Assert.True(validation.GetProperty("fixed").GetInt32() >= 1);
        Assert.True(validation.GetProperty("after").GetProperty("top1").GetDouble() > 0);
        Assert.True(File.Exists(Out("validation/validation.csv")));

        // Revert: bit for bit the base; reverting on the unpatched base is refused.
        var reverted = Json("patch", "revert", Out("fixed.safetensors"), Out("fix.safetensors"), "-o", Out("restored.safetensors"));
        Assert.Equal(baseFingerprint, reverted.GetProperty("fingerprint").GetString());
        (code, _, err) = Repo.Wte("patch", "revert", Model, Out("fix.safetensors"), "-o", Out("nonsense.safetensors"));
        Assert.Equal(1, code);
        Assert.StartsWith("wte: ", err);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));

        // Export timm and Hugging Face folders; each loads back and predicts like the patched file.
        Json("patch", "apply", Model, Out("fix.safetensors"), "--format", "timm", "-o", Out("timm"));
        Json("patch", "apply", Model, Out("fix.safetensors"), "--format", "hf", "-o", Out("hf"));
        foreach (string file in new[] { "timm/model.safetensors", "timm/config.json", "hf/model.safetensors", "hf/config.json", "hf/preprocessor_config.json" })
            Assert.True(File.Exists(Out(file)), file);
        Assert.Equal(applied.GetProperty("fingerprint").GetString(), Json("info", Out("timm")).GetProperty("fingerprint").GetString());
        Assert.Equal("HuggingFace", Json("info", Out("hf")).GetProperty("naming").GetString());
        Assert.Equal(0, Top1(Out("timm"), Failure));
        Assert.Equal(0, Top1(Out("hf"), Failure));

        // Bring your own image: a colour JPEG of another size is converted to grey and resized as the model says.
        var jpeg = Json("predict", Out("hf"), Jpeg, "-k", "3");
        Assert.Equal(3, jpeg.GetProperty("top").GetArrayLength());
        (code, text, err) = Repo.Wte("predict", Out("hf"), Jpeg);
        Assert.True(code == 0, err);
        Assert.Contains("T-shirt/top", text);
    }
}

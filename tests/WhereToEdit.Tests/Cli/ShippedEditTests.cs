using System.Text.Json;
using WhereToEdit.Cli;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Cli;

/// <summary>`wte edit` on the shipped model with default options: the width rule's learning rate fixes a real failure; an unfixed edit says what to raise and exits non-zero.</summary>
public sealed class ShippedEditTests
{
    private static string? Assets()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "assets", "fashion_mnist");
            if (File.Exists(Path.Combine(candidate, "vit.safetensors"))) return candidate;
        }
        return null;
    }

    private static (string Image, string Label) FirstNaturalFailure(string assets)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(assets, "benchmark", "manifest.json")));
        var group = doc.RootElement.GetProperty("subsets").EnumerateArray().First(s => s.GetProperty("name").GetString() == "natural")
            .GetProperty("groups")[0];
        return (Path.Combine(assets, "benchmark", group.GetProperty("images")[0].GetString()!), group.GetProperty("label").GetInt32().ToString());
    }

    [SkippableFact]
    public void Default_options_fix_the_first_shipped_failure()
    {
        string? assets = Assets();
        Skip.If(assets is null, "assets/fashion_mnist not found above the test binary");
        var (image, label) = FirstNaturalFailure(assets!);
        using var dir = new TempDir();
        var o = new StringWriter();
        var e = new StringWriter();
        int code = WteCommands.Run(["edit", Path.Combine(assets!, "vit.safetensors"), "--hypernet", Path.Combine(assets!, "hypernet.safetensors"),
            "--image", image, "--label", label, "--out", dir.File("p.safetensors"), "--json", "--threads", "2"], o, e);
        Assert.True(code == 0, e.ToString());
        using var result = JsonDocument.Parse(o.ToString());
        Assert.True(result.RootElement.GetProperty("success").GetBoolean());
        Assert.Equal(2.4e-4, result.RootElement.GetProperty("learning_rate").GetDouble(), 9);   // 2e-5 × 768/64
    }

    [SkippableFact]
    public void An_unfixed_edit_names_the_option_to_raise_and_exits_non_zero()
    {
        string? assets = Assets();
        Skip.If(assets is null, "assets/fashion_mnist not found above the test binary");
        var (image, label) = FirstNaturalFailure(assets!);
        using var dir = new TempDir();
        var e = new StringWriter();
        int code = WteCommands.Run(["edit", Path.Combine(assets!, "vit.safetensors"), "--method", "random",
            "--image", image, "--label", label, "--out", dir.File("p.safetensors"), "--max-steps", "1", "--threads", "2"], new StringWriter(), e);
        Assert.Equal(2, code);
        Assert.Contains("--max-steps (now 1)", e.ToString());
        Assert.Contains("--keep", e.ToString());
    }
}

using WhereToEdit.Cli;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Reports;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Reports;

/// <summary>`wte plot`: mask heat map, before/after panel and training curves are real PNG + SVG files of the right content.</summary>
public sealed class FiguresTests
{
    private static string RepoFile(string relative) => Repo.File(relative);

    private static (int Code, string Out, string Err) Run(params string[] args) => Repo.Wte(args);

    private static void AssertPngAndSvg(string stem, int minWidth)
    {
        using (var png = SixLabors.ImageSharp.Image.Load(stem + ".png"))
            Assert.True(png.Width >= minWidth, $"{stem}.png is {png.Width} wide");
        Assert.Contains("<svg", File.ReadAllText(stem + ".svg"));
        Assert.Empty(Directory.EnumerateFiles(Path.GetDirectoryName(stem)!, "*.tmp.*"));
    }

    [Fact]
    public void Mask_and_before_after_panel_of_a_real_hprd_edit()
    {
        using var dir = new TempDir();
        string model = RepoFile("assets/fashion_mnist/vit.safetensors"), hypernet = RepoFile("assets/fashion_mnist/hypernet.safetensors");
        string image = RepoFile("assets/fashion_mnist/benchmark/natural/5_7/00290.png"), patch = dir.File("h.safetensors");
        var (code, _, err) = Run("edit", model, "--hypernet", hypernet, "--image", image, "--label", "5", "--lr", "0.00024", "--out", patch);
        Assert.True(code == 0, err);

        (code, var stdout, err) = Run("plot", "mask", patch, "--out", dir.File("mask"));
        Assert.True(code == 0, err);
        Assert.Equal([dir.File("mask.png"), dir.File("mask.svg")], stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        AssertPngAndSvg(dir.File("mask"), 720);
        // The title states the kept units, which the patch fixes.
        long kept = EditPatch.Load(patch).Units.Sum(u => (long)u.Indices.Length);
        Assert.Contains($"{kept:N0} of", File.ReadAllText(dir.File("mask.svg")));

        (code, _, err) = Run("plot", "edit", model, patch, "--image", image, "--out", dir.File("panel"));
        Assert.True(code == 0, err);
        AssertPngAndSvg(dir.File("panel"), 800);
        string svg = File.ReadAllText(dir.File("panel.svg"));
        Assert.Contains("Sandal", svg);
        Assert.Contains("before", svg);

        (code, _, err) = Run("plot", "edit", model, patch, "--out", dir.File("panel2"));
        Assert.Equal(1, code);
        Assert.Contains("--image", err);
    }

    [Fact]
    public void Curves_one_plot_per_column_and_clear_errors()
    {
        using var dir = new TempDir();
        var files = Figures.Curves(RepoFile("assets/fashion_mnist/pretrain-log.csv"), dir.File("curves"));
        Assert.Contains(dir.File(Path.Combine("curves", "loss.png")), files);
        Assert.DoesNotContain(files, f => f.Contains("steps_per_s", StringComparison.Ordinal) || f.Contains("epoch", StringComparison.Ordinal));
        AssertPngAndSvg(dir.File(Path.Combine("curves", "loss")), 720);

        var e = Assert.Throws<ArgumentException>(() => Figures.Curves(RepoFile("assets/fashion_mnist/pretrain-log.csv"), dir.File("c2"), ["nope"]));
        Assert.Contains("has no column 'nope'", e.Message);
        File.WriteAllText(dir.File("empty.csv"), "step,loss\n");
        Assert.Throws<InvalidDataException>(() => Figures.Curves(dir.File("empty.csv"), dir.File("c3")));
    }
}

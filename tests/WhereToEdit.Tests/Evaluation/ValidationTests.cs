using System.Text.Json;
using WhereToEdit.Cli;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Evaluation;

/// <summary>`wte validate` on the shipped model: the benchmark's natural failures as a labelled folder, before and after a real patch.</summary>
public sealed class ValidationTests
{
    private static string RepoFile(string relative) => Repo.File(relative);

    private static readonly string Model = RepoFile("assets/fashion_mnist/vit.safetensors");
    private static readonly string Natural = RepoFile("assets/fashion_mnist/benchmark/natural");

    private static (int Code, string Out, string Err) Run(params string[] args) => Repo.Wte(args);

    [Fact]
    public void Failures_score_zero_before_and_a_patch_fixes_some_with_files_written()
    {
        using var dir = new TempDir();
        // Folders are named <true>_<predicted>: the true class is the index prefix, and every image is a failure.
        var (code, stdout, err) = Run("validate", Model, Natural, "--json", "--threads", "2");
        Assert.True(code == 0, err);
        using (var doc = JsonDocument.Parse(stdout))
        {
            var r = doc.RootElement;
            int images = Directory.EnumerateFiles(Natural, "*.png", SearchOption.AllDirectories).Count();
            Assert.Equal(images, r.GetProperty("images").GetInt32());
            Assert.Equal(0.0, r.GetProperty("before").GetProperty("top1").GetDouble());
            Assert.True(r.GetProperty("before").GetProperty("top5").GetDouble() > 0.5);
            Assert.Equal(JsonValueKind.Null, r.GetProperty("after").ValueKind);
            Assert.Equal(images, r.GetProperty("per_class").EnumerateArray().Sum(c => c.GetProperty("images").GetInt32()));
        }

        // A real edit of one Sandal→Sneaker failure with fine-tuning (no hypernetwork needed), then validate with it.
        string image = Path.Combine(Natural, "5_7", "00290.png"), patch = dir.File("edit.safetensors");
        (code, _, err) = Run("edit", Model, "--method", "ft-l2", "--coef", "0", "--image", image, "--label", "5", "--lr", "0.00024", "--out", patch);
        Assert.True(code == 0, err);
        string outDir = dir.File("report");
        (code, stdout, err) = Run("validate", Model, Natural, "--patch", patch, "--out", outDir, "--json", "--threads", "2");
        Assert.True(code == 0, err);
        using (var doc = JsonDocument.Parse(stdout))
        {
            var r = doc.RootElement;
            double after = r.GetProperty("after").GetProperty("top1").GetDouble();
            Assert.True(after > 0, "the patch fixed nothing, not even its own image");
            Assert.True(r.GetProperty("fixed").GetInt32() >= 1);
            Assert.Equal(0, r.GetProperty("broken").GetInt32());   // nothing was right before
            var sandal = r.GetProperty("per_class").EnumerateArray().Single(c => c.GetProperty("index").GetInt32() == 5);
            Assert.True(sandal.GetProperty("top1_after").GetDouble() > 0);
            Assert.NotEqual(r.GetProperty("before").GetProperty("fingerprint").GetString(), r.GetProperty("after").GetProperty("fingerprint").GetString());
        }
        var csv = File.ReadAllLines(Path.Combine(outDir, "validation.csv"));
        Assert.Equal("class,label,images,top1_before,top1_after", csv[0]);
        Assert.StartsWith("all,,", csv[^1]);
        using (var saved = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "validation.json"))))
            Assert.Equal(1, saved.RootElement.GetProperty("patches").GetArrayLength());
        Assert.Empty(Directory.EnumerateFiles(outDir, "*.tmp"));
    }

    [Fact]
    public void A_folder_that_names_no_class_is_refused_listing_the_classes()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("zebra"));
        File.Copy(Path.Combine(Natural, "5_7", "00290.png"), Path.Combine(dir.File("zebra"), "a.png"));
        var (code, _, err) = Run("validate", Model, dir.Path);
        Assert.Equal(1, code);
        Assert.Contains("zebra: folder name is not a class of the model", err);
        Assert.Contains("Ankle boot", err);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public void Label_names_are_accepted_as_class_folders()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("Sandal"));
        File.Copy(Path.Combine(Natural, "5_7", "00290.png"), Path.Combine(dir.File("Sandal"), "a.png"));
        var (code, stdout, err) = Run("validate", Model, dir.Path, "--json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(5, doc.RootElement.GetProperty("per_class")[0].GetProperty("index").GetInt32());
    }

    [Fact]
    public void Folder_and_idx_together_are_refused()
    {
        var (code, _, err) = Run("validate", Model, Natural, "--idx", "x-images-idx3-ubyte.gz");
        Assert.Equal(1, code);
        Assert.Contains("not both", err);
    }

    [SkippableFact]
    public void Idx_test_set_gives_the_shipped_models_recorded_accuracy()
    {
        const string images = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
        Skip.IfNot(File.Exists(images), "Debian's dataset-fashion-mnist is not installed");
        var (code, stdout, err) = Run("validate", Model, "--idx", images, "--json", "--batch", "256");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(stdout);
        // The benchmark manifest records 8810 of 10000 test images right for this model.
        Assert.Equal(10000, doc.RootElement.GetProperty("images").GetInt32());
        Assert.Equal(0.8810, doc.RootElement.GetProperty("before").GetProperty("top1").GetDouble(), 6);
        Assert.Equal(10, doc.RootElement.GetProperty("per_class").GetArrayLength());
    }
}

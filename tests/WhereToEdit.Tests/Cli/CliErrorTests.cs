using System.Text.Json;
using WhereToEdit.Cli;
using Xunit;

namespace WhereToEdit.Tests.Cli;

/// <summary>One convention for command-line errors: one line naming the flag, with a hint; JSON under --json.</summary>
public sealed class CliErrorTests
{
    private static readonly string Model = RepoFile("assets/fashion_mnist/vit.safetensors");

    private static string RepoFile(string relative) => Repo.File(relative);

    private static (int Code, string Out, string Err) Run(params string[] args) => Repo.Wte(args);

    private static string SingleLine(string err)
    {
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        return lines[0].TrimEnd('\r');
    }

    [Fact]
    public void Unknown_option_is_an_error_naming_the_closest_option_not_an_image_path()
    {
        var (code, _, err) = Run("predict", Model, "--topk", "3", "x.png");
        Assert.Equal(1, code);
        Assert.Equal("wte: predict: unknown option '--topk' (did you mean --top-k?)", SingleLine(err));
    }

    [Fact]
    public void Unknown_option_far_from_every_option_points_to_help()
    {
        var (code, _, err) = Run("edit", Model, "--zzzzzzzzzz");
        Assert.Equal(1, code);
        Assert.Equal("wte: edit: unknown option '--zzzzzzzzzz' (see wte edit --help)", SingleLine(err));
    }

    [Fact]
    public void Missing_required_options_and_arguments_are_one_line_each_command()
    {
        var (code, _, err) = Run("edit", Model);
        Assert.Equal(1, code);
        string line = SingleLine(err);
        Assert.StartsWith("wte: edit: ", line);
        Assert.Contains("--image is required", line);
        Assert.Contains("--label is required", line);

        (code, _, err) = Run("info");
        Assert.Equal(1, code);
        Assert.Equal("wte: info: missing MODEL (see wte info --help)", SingleLine(err));
    }

    [Fact]
    public void Bad_option_values_name_the_option_without_dotnet_type_names()
    {
        var (code, _, err) = Run("predict", Model, "x.png", "--top-k", "many");
        Assert.Equal(1, code);
        string line = SingleLine(err);
        Assert.Equal("wte: predict: --top-k 'many': expected an integer (see wte predict --help)", line);
        Assert.DoesNotContain("System.", line);
    }

    [Fact]
    public void Errors_under_json_are_a_json_object_on_stdout()
    {
        var (code, stdout, err) = Run("predict", Model, "/nonexistent-wte-image.png", "--json");
        Assert.Equal(1, code);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal("/nonexistent-wte-image.png: no such file or folder", doc.RootElement.GetProperty("error").GetString());
        Assert.Equal("wte: /nonexistent-wte-image.png: no such file or folder", SingleLine(err));

        (code, stdout, _) = Run("predict", Model, "--topk", "3", "--json");
        Assert.Equal(1, code);
        using var parseDoc = JsonDocument.Parse(stdout);
        Assert.Contains("unknown option '--topk'", parseDoc.RootElement.GetProperty("error").GetString());
    }

    [Fact]
    public void Exception_messages_lose_parameter_names_and_actual_values()
    {
        var e = new ArgumentOutOfRangeException("LearningRate", -1.0, "the learning rate must be positive");
        Assert.Equal("the learning rate must be positive", CliErrors.Describe(e));
        Assert.Equal("a; b", CliErrors.Describe(new InvalidOperationException("a\nb")));
    }
}

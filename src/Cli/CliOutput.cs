using System.CommandLine;
using WhereToEdit.Engine.Jobs;

namespace WhereToEdit.Cli;

/// <summary>
/// Where every command writes: stdout, stderr, and the global <c>--json</c> switch. Under <c>--json</c> a command
/// prints its job's result as one JSON object on stdout (<see cref="JobJson"/>; `predict`: JSON lines, one object per
/// image) and errors become <c>{"error": …}</c> (<see cref="CliErrors.Report"/>); progress stays on stderr.
/// </summary>
internal sealed class CliOutput(TextWriter stdout, TextWriter stderr)
{
    /// <summary>The root's recursive --json option: every command accepts it.</summary>
    public Option<bool> JsonOption { get; } = new("--json")
    {
        Description = "print the result as JSON on stdout (errors as {\"error\": ...}); predict prints JSON lines, one object per image",
        Recursive = true,
    };

    public TextWriter Out { get; } = stdout;
    public TextWriter Err { get; } = stderr;

    public bool Json(ParseResult parse) => parse.GetValue(JsonOption);

    /// <summary>The job's result as JSON under --json, else the text; returns <paramref name="code"/>.</summary>
    public int Print<T>(ParseResult parse, T result, Action<TextWriter> text, int code = 0)
    {
        if (Json(parse)) Out.WriteLine(JobJson.Serialize(result));
        else text(Out);
        return code;
    }

    /// <summary>A progress bar on stderr (none when <paramref name="quiet"/>).</summary>
    public IJobProgress Progress(bool quiet = false) => quiet ? NullJobProgress.Instance : new ProgressBar(Err);
}

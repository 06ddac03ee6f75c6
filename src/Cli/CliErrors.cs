using System.CommandLine;
using System.CommandLine.Parsing;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace WhereToEdit.Cli;

/// <summary>
/// One convention for every command's errors: one <c>wte: …</c> line naming the flag, file or field (plus a
/// hint when one is known), or <c>{"error": …}</c> on stdout when the command line asks for <c>--json</c>.
/// Parse problems are caught before a command runs, so an unknown option never becomes an image path.
/// </summary>
public static partial class CliErrors
{
    /// <summary>The first problem with a parsed command line, as one line; null when it can run.</summary>
    public static string? ParseProblem(ParseResult parse)
    {
        var command = parse.CommandResult.Command;
        string name = CommandPath(parse.CommandResult);   // "wte predict"; the line reads "wte: predict: …"
        // An unknown "--flag" lands in a variadic argument (predict's IMAGE…) or among the unmatched tokens.
        foreach (var token in parse.Tokens)
            if (token.Type == TokenType.Argument && LooksLikeOption(token.Value))
                return UnknownOption(token.Value, command, name);
        foreach (string token in parse.UnmatchedTokens)
            if (LooksLikeOption(token)) return UnknownOption(token, command, name);
        if (parse.Errors.Count == 0) return null;
        var messages = parse.Errors.Select(e => Rephrase(e.Message, command)).Distinct().ToList();
        return $"{Prefix(name)}{string.Join("; ", messages)} (see {name} --help)";
    }

    /// <summary>An exception as one line without .NET's internal names.</summary>
    public static string Describe(Exception e)
    {
        while (e is System.Reflection.TargetInvocationException or AggregateException && e.InnerException is not null) e = e.InnerException;
        string m = e is ArgumentException a && a.ParamName is { } p ? a.Message.Replace($" (Parameter '{p}')", "") : e.Message;
        m = ActualValue().Replace(m, "");
        return OneLine(m);
    }

    /// <summary>Writes the error as one "wte: …" line (and as {"error": …} on stdout under --json); returns the exit code (1).</summary>
    public static int Report(string message, IReadOnlyList<string> args, TextWriter stdout, TextWriter stderr)
    {
        if (args.Contains("--json"))
            stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, string> { ["error"] = message }));
        stderr.WriteLine($"wte: {message}");
        return 1;
    }

    /// <summary>"predict: " for "wte predict"; nothing for the root command.</summary>
    private static string Prefix(string commandPath) => commandPath == "wte" ? "" : commandPath["wte ".Length..] + ": ";

    private static bool LooksLikeOption(string token) =>
        token.Length > 1 && token[0] == '-' && token != "--" && !double.TryParse(token, System.Globalization.CultureInfo.InvariantCulture, out _);

    private static string UnknownOption(string token, Command command, string commandName)
    {
        string flag = token.Split('=', 2)[0];
        var names = command.Options.SelectMany(o => o.Aliases.Prepend(o.Name)).Where(n => n.StartsWith('-')).Distinct().ToList();
        if (command.Subcommands.Count > 0 && names.Count <= 3)
            return $"{Prefix(commandName)}unknown option '{flag}' (expected one of: {string.Join(", ", command.Subcommands.Select(c => c.Name))})";
        // The root's recursive options (--json, --max-memory) count as the command's own.
        for (var parent = command.Parents.OfType<Command>().FirstOrDefault(); parent is not null; parent = parent.Parents.OfType<Command>().FirstOrDefault())
            names.AddRange(parent.Options.Where(o => o.Recursive).Select(o => o.Name));
        string? closest = names.Where(n => n.Length > 2).OrderBy(n => Distance(flag, n)).FirstOrDefault();
        return closest is not null && Distance(flag, closest) <= Math.Max(2, flag.Length / 3)
            ? $"{Prefix(commandName)}unknown option '{flag}' (did you mean {closest}?)"
            : $"{Prefix(commandName)}unknown option '{flag}' (see {commandName} --help)";
    }

    private static string CommandPath(CommandResult result)
    {
        var parts = new List<string>();
        for (SymbolResult? r = result; r is CommandResult c; r = c.Parent)
            parts.Insert(0, c.Parent is null ? "wte" : c.Command.Name);
        return string.Join(" ", parts);
    }

    /// <summary>System.CommandLine's messages with .NET type names replaced by words.</summary>
    private static string Rephrase(string message, Command command)
    {
        if (message.StartsWith("Required argument missing", StringComparison.Ordinal))
            return $"missing {string.Join(" ", command.Arguments.Select(a => a.Name.ToUpperInvariant()))}";
        var unknown = Unrecognized().Match(message);
        if (unknown.Success) return $"unknown command or argument '{unknown.Groups["token"].Value}'";
        if (message.StartsWith("Required command was not provided", StringComparison.Ordinal))
            return $"no command given (one of: {string.Join(", ", command.Subcommands.Select(c => c.Name))})";
        var parse = CannotParse().Match(message);
        if (parse.Success)
            return $"{parse.Groups["opt"].Value} '{parse.Groups["value"].Value}': expected {TypeWord(parse.Groups["type"].Value)}";
        var required = RequiredOption().Match(message);
        if (required.Success) return $"{required.Groups["opt"].Value} is required";
        return OneLine(message.TrimEnd('.'));
    }

    private static string TypeWord(string type) => type switch
    {
        "System.Int32" or "System.Int64" or "System.Nullable`1[System.Int32]" => "an integer",
        "System.UInt64" or "System.Nullable`1[System.UInt64]" => "a non-negative integer",
        "System.Double" or "System.Single" or "System.Nullable`1[System.Double]" or "System.Nullable`1[System.Single]" => "a number",
        "System.Boolean" => "true or false",
        _ => "a value of another kind",
    };

    /// <summary>An error is one line: listings are joined with "; " and a very long message is cut.</summary>
    internal static string OneLine(string m)
    {
        string line = string.Join("; ", m.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        return line.Length <= 2000 ? line : line[..2000] + " …";
    }

    public static bool IsOutOfMemory(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException) if (x is OutOfMemoryException or InsufficientMemoryException) return true;
        return false;
    }

    private static int Distance(string a, string b)
    {
        var d = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) d[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            int diag = d[0];
            d[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int up = d[j];
                d[j] = Math.Min(Math.Min(d[j] + 1, d[j - 1] + 1), diag + (char.ToLowerInvariant(a[i - 1]) == char.ToLowerInvariant(b[j - 1]) ? 0 : 1));
                diag = up;
            }
        }
        return d[b.Length];
    }

    [GeneratedRegex(@"Cannot parse argument '(?<value>.*)' for option '(?<opt>[^']+)' as expected type '(?<type>[^']+)'")]
    private static partial Regex CannotParse();

    [GeneratedRegex(@"Unrecognized command or argument '(?<token>.*)'")]
    private static partial Regex Unrecognized();

    [GeneratedRegex(@"Option '(?<opt>[^']+)' is required")]
    private static partial Regex RequiredOption();

    [GeneratedRegex(@"\s*Actual value was [^.\n]*\.?")]
    private static partial Regex ActualValue();
}

using System.CommandLine;

namespace WhereToEdit.Cli;

/// <summary>
/// The short forms of the common options, the same on every command that has the long one (shown in --help).
/// <c>--json</c> has none on purpose: <c>-j</c> reads as "jobs" in make and cargo, which here is <c>-t/--threads</c>.
/// </summary>
public static class ShortFlags
{
    public static readonly IReadOnlyDictionary<string, string> Map = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["--out"] = "-o",
        ["--model"] = "-m",
        ["--image"] = "-i",
        ["--label"] = "-l",
        ["--top-k"] = "-k",
        ["--batch"] = "-b",
        ["--patch"] = "-p",
        ["--device"] = "-d",
        ["--threads"] = "-t",
    };

    /// <summary>Adds the short forms to every option of the tree under <paramref name="command"/>.</summary>
    internal static void AddTo(Command command)
    {
        var used = command.Options.SelectMany(o => o.Aliases).ToHashSet(StringComparer.Ordinal);
        foreach (var option in command.Options)
            if (Map.TryGetValue(option.Name, out string? shortName) && !option.Aliases.Contains(shortName))
            {
                if (!used.Add(shortName)) throw new InvalidOperationException($"{command.Name}: short flag {shortName} is taken twice");
                option.Aliases.Add(shortName);
            }
        foreach (var sub in command.Subcommands) AddTo(sub);
    }
}

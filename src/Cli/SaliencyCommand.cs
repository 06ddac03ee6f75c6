using System.CommandLine;
using System.Globalization;
using WhereToEdit.Engine.Jobs;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command SaliencyCommand(CliOutput io)
    {
        var model = new Option<string>("--model") { Description = "the model (file or hub folder)", Required = true };
        var benchmark = new Option<string>("--benchmark") { Description = "a benchmark manifest.json (wte benchmark build)", Required = true };
        var keep = new Option<double>("--keep") { Description = "fraction of hidden units in each saliency mask", DefaultValueFactory = _ => 0.1 };
        var subsets = new Option<string?>("--subsets") { Description = "comma list of subsets (default: all)" };
        var editBlocks = new Option<string?>("--edit-blocks") { Description = "edited blocks, e.g. 7,8,9 (default: 7,8,9 of 12)" };
        var threads = ThreadsOption();
        var command = new Command("saliency", "Pre-check: IoU of gradient-saliency masks of failures within groups vs across groups (is there group-specific \"where\"?).")
        {
            model, benchmark, keep, subsets, editBlocks, threads,
        };
        command.SetAction(parse =>
        {
            var r = SaliencyJob.Run(new SaliencyJobOptions
            {
                ModelPath = parse.GetValue(model)!, BenchmarkPath = parse.GetValue(benchmark)!, Keep = parse.GetValue(keep),
                Subsets = parse.GetValue(subsets)?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries),
                EditBlocks = parse.GetValue(editBlocks) is { } eb
                    ? eb.Split(',', StringSplitOptions.TrimEntries).Select(s => int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int b)
                        ? b : throw new ArgumentException($"--edit-blocks '{eb}': '{s}' is not a block index")).ToArray()
                    : null,
                Backend = new BackendChoice { Threads = parse.GetValue(threads) },
            }, io.Progress());
            return io.Print(parse, r, stdout =>
            {
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"gradient-saliency masks (top {r.Keep:P0} of {r.TotalGates} units by ‖∇W‖ of the CE to the true label; two random masks: IoU {r.RandomIoU:0.000})"));
                stdout.WriteLine($"{"subset",-14} {"images",7} {"within",8} {"across",8} {"diff",7}");
                foreach (var o in r.Subsets)
                    stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{o.Subset,-14} {o.Images,7} {o.WithinGroups,8:F3} {o.AcrossGroups,8:F3} {o.Difference,7:F3}"));
            });
        });
        return command;
    }
}

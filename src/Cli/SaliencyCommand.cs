using System.CommandLine;
using System.Globalization;
using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command SaliencyCommand(TextWriter stdout)
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
            double k = parse.GetValue(keep);
            if (!(k > 0 && k <= 1)) throw new ArgumentException($"--keep {k.ToString(CultureInfo.InvariantCulture)}: must be in (0, 1]");
            var manifest = BenchmarkManifest.Read(parse.GetValue(benchmark)!);
            var wanted = parse.GetValue(subsets)?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            if (wanted is not null) foreach (string name in wanted) _ = manifest.Subset(name);
            var loaded = ModelFolder.Load(parse.GetValue(model)!);
            using var backend = BackendFactory.Create("cpu", parse.GetValue(threads));
            using var vit = VitCheckpoint.Load(backend, loaded);
            var target = parse.GetValue(editBlocks) is { } eb
                ? new EditTarget(vit.Config, eb.Split(',', StringSplitOptions.TrimEntries).Select(s => int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int b)
                    ? b : throw new ArgumentException($"--edit-blocks '{eb}': '{s}' is not a block index")).ToArray())
                : EditTarget.Default(vit.Config);
            var loader = new ImageLoader();
            using var saliency = new GradientSaliency(vit, target);
            double random = k / (2 - k);
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"gradient-saliency masks (top {k:P0} of {target.TotalGates} units by ‖∇W‖ of the CE to the true label; two random masks: IoU {random:0.000})"));
            stdout.WriteLine($"{"subset",-14} {"images",7} {"within",8} {"across",8} {"diff",7}");
            foreach (var subset in manifest.Subsets.Where(s => wanted is null || wanted.Contains(s.Name)))
            {
                var images = subset.Groups.SelectMany(g => g.Images.Select(i => (g.Name, g.Label, loader.Load(manifest.ImagePath(i), loaded.Preprocessing)))).ToList();
                var o = saliency.Overlap(subset.Name, images, k);
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{o.Subset,-14} {o.Images,7} {o.WithinGroups,8:F3} {o.AcrossGroups,8:F3} {o.Difference,7:F3}"));
            }
            return 0;
        });
        return command;
    }
}

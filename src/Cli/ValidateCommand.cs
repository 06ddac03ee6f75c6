using System.CommandLine;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.Jobs;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command ValidateCommand(CliOutput io)
    {
        var model = new Argument<string>("MODEL") { Description = "a model file or hub folder" };
        var folder = new Argument<string?>("FOLDER") { Description = "labelled images: one subfolder per class (an index, <index>_<name>, or a label name)", Arity = ArgumentArity.ZeroOrOne };
        var idx = new Option<string?>("--idx") { Description = "IDX images file (e.g. t10k-images-idx3-ubyte.gz) instead of FOLDER" };
        var idxLabels = new Option<string?>("--idx-labels") { Description = "IDX labels file (default: --idx with images-idx3 → labels-idx1)" };
        var patches = new Option<string[]>("--patch") { Description = "edit patch(es) to apply, in order; scores are reported before and after", AllowMultipleArgumentsPerToken = false };
        var limit = new Option<int?>("--limit") { Description = "only the first N images" };
        var batch = new Option<int>("--batch") { Description = "images per forward pass", DefaultValueFactory = _ => 64 };
        var outDir = new Option<string?>("--out") { Description = "folder for validation.json and validation.csv" };
        var device = DeviceOption();
        var threads = ThreadsOption();
        var precision = PrecisionOption();
        var command = new Command("validate", "Top-1/top-5 and per-class accuracy on labelled images, before and after edit patches.")
        {
            model, folder, idx, idxLabels, patches, limit, batch, outDir, device, threads, precision,
        };
        command.SetAction(parse =>
        {
            string path = parse.GetValue(model)!;
            var options = new ValidationOptions
            {
                Folder = parse.GetValue(folder), IdxImages = parse.GetValue(idx), IdxLabels = parse.GetValue(idxLabels),
                Patches = parse.GetValue(patches) ?? [], Limit = parse.GetValue(limit), Batch = parse.GetValue(batch),
            };
            var result = ValidateJob.Run(new ValidateJobOptions
            {
                ModelPath = path, Validation = options, OutDir = parse.GetValue(outDir),
                Backend = new BackendChoice { Device = parse.GetValue(device)!, Threads = parse.GetValue(threads), Precision = parse.GetValue(precision)! },
            });
            var stdout = io.Out;
            if (io.Json(parse)) { stdout.WriteLine(ModelValidation.ToJson(result)); return 0; }
            stdout.WriteLine($"{result.Source}: {result.Images} images, {result.Classes} classes");
            stdout.WriteLine($"{"",-8} {"top-1",8} {"top-5",8}  fingerprint");
            stdout.WriteLine($"{"before",-8} {result.Before.Top1,8:P2} {result.Before.Top5,8:P2}  {result.Before.Fingerprint}");
            if (result.After is { } a)
            {
                stdout.WriteLine($"{"after",-8} {a.Top1,8:P2} {a.Top5,8:P2}  {a.Fingerprint}  ({result.Patches.Count} patch(es); {result.Fixed} fixed, {result.Broken} broken)");
            }
            stdout.WriteLine();
            stdout.WriteLine(result.After is null ? $"{"class",-24} {"images",7} {"top-1",8}" : $"{"class",-24} {"images",7} {"before",8} {"after",8}");
            foreach (var c in result.PerClass)
                stdout.WriteLine(c.Top1After is double after
                    ? $"{$"{c.Index} {c.Label}",-24} {c.Images,7} {c.Top1Before,8:P1} {after,8:P1}"
                    : $"{$"{c.Index} {c.Label}",-24} {c.Images,7} {c.Top1Before,8:P1}");
            return 0;
        });
        return command;
    }
}

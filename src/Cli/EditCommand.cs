using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Jobs;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command EditCommand(CliOutput io)
    {
        var model = new Argument<string>("MODEL") { Description = "the model to edit (file or hub folder; may already carry patches)" };
        var hypernet = new Option<string?>("--hypernet") { Description = "hypernetwork file (required for --method hprd)" };
        var images = new Option<string[]>("--image") { Description = "failure image(s) to fix (repeat for several)", Required = true, AllowMultipleArgumentsPerToken = true };
        var label = new Option<string>("--label") { Description = "correct class: an index or a label name", Required = true };
        var keep = new Option<double>("--keep") { Description = "fraction of hidden units the mask keeps (HPRD, random)", DefaultValueFactory = _ => 0.1 };
        var method = new Option<string>("--method") { Description = "hprd, ft-l1, ft-l2 or random", DefaultValueFactory = _ => "hprd" };
        var lr = new Option<float?>("--lr") { Description = "RMSprop learning rate (default: the paper's 2e-5 at width 768 scaled by 768/width, docs/SCALING.md: 2.4e-4 for the shipped width-64 model)" };
        var maxSteps = new Option<int>("--max-steps") { Description = "at most this many update steps", DefaultValueFactory = _ => 100 };
        var coef = new Option<float>("--coef") { Description = "FT-L1/L2 penalty coefficient c", DefaultValueFactory = _ => 0f };
        var seed = new Option<ulong>("--seed") { Description = "seed of the random mask", DefaultValueFactory = _ => 0UL };
        var baseModel = new Option<string?>("--base") { Description = "the original model the hypernetwork was trained for, when MODEL already carries patches" };
        var output = new Option<string>("--out") { Description = "where to write the edit patch (.safetensors)", Required = true };
        var device = DeviceOption();
        var threads = ThreadsOption();
        var command = new Command("edit", "Fix a model's mistake on the given image(s) by editing a few MLP weights; writes an edit patch.")
        {
            model, hypernet, images, label, keep, method, lr, maxSteps, coef, seed, baseModel, output, device, threads,
        };
        command.SetAction(parse =>
        {
            var job = EditJob.Run(new EditJobOptions
            {
                ModelPath = parse.GetValue(model)!, HypernetPath = parse.GetValue(hypernet), Images = parse.GetValue(images)!, Label = parse.GetValue(label)!,
                Method = parse.GetValue(method)!, Keep = parse.GetValue(keep), LearningRate = parse.GetValue(lr), MaxSteps = parse.GetValue(maxSteps),
                Coefficient = parse.GetValue(coef), Seed = parse.GetValue(seed), BasePath = parse.GetValue(baseModel), OutPath = parse.GetValue(output)!,
                Backend = new BackendChoice { Device = parse.GetValue(device)!, Threads = parse.GetValue(threads) },
            }, io.Progress());
            var result = job.Edit;
            var (stdout, stderr) = (io.Out, io.Err);
            if (io.Json(parse)) stdout.WriteLine(JsonSerializer.Serialize(result));
            else
            {
                string Name(int c) => job.ClassNames is { } l && c < l.Count ? $"{c} ({l[c]})" : c.ToString(CultureInfo.InvariantCulture);
                string Probs(float[] p) => string.Join(", ", p.Select(v => v.ToString("F4", CultureInfo.InvariantCulture)));
                stdout.WriteLine($"{(result.Success ? "fixed" : "NOT fixed")}: {job.Images.Count} image(s) → {Name(job.Label)} with {result.Method}, {result.Steps} steps, {result.WallMs:F0} ms");
                stdout.WriteLine($"  prediction  {string.Join(", ", result.PredictionsBefore.Select(Name))} → {string.Join(", ", result.PredictionsAfter.Select(Name))}");
                stdout.WriteLine($"  p(label)    {Probs(result.TargetProbBefore)} → {Probs(result.TargetProbAfter)}");
                stdout.WriteLine($"  loss        {result.InitialLoss:F4} → {result.FinalLoss:F4}");
                stdout.WriteLine($"  mask        {result.KeptGates} of {result.TotalGates} hidden units; {result.WeightsChanged:N0} of {result.WeightsEditable:N0} editable weights changed");
                stdout.WriteLine($"  patch       {job.PatchPath}");
            }
            if (!result.Success)
            {
                var o = job.Options!;
                string lrText = o.LearningRate.ToString("G3", CultureInfo.InvariantCulture);
                var m = EditMethods.Parse(parse.GetValue(method)!);
                stderr.WriteLine($"wte: the edit did not fix every image within {o.MaxSteps} steps (lr {lrText}); the patch was written anyway. " +
                                 $"Raise --max-steps (now {o.MaxSteps}) or --lr (now {lrText})" +
                                 (m is EditMethod.Hprd or EditMethod.Random ? $", or --keep (now {parse.GetValue(keep).ToString(CultureInfo.InvariantCulture)})."
                                  : m.IsFineTuning() && o.Coefficient > 0 ? $", or lower --coef (now {o.Coefficient.ToString(CultureInfo.InvariantCulture)})." : "."));
                return 2;
            }
            return 0;
        });
        return command;
    }
}

using System.CommandLine;
using WhereToEdit.Engine.IO;
using System.Text.Json;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Jobs;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command PatchCommand(CliOutput io)
    {
        var command = new Command("patch", "Apply, revert or describe edit patches.");

        var applyModel = new Argument<string>("MODEL") { Description = "the model the patch was made for (file or hub folder)" };
        var applyPatch = new Argument<string>("PATCH") { Description = "an edit patch written by wte edit" };
        var scale = new Option<float>("--scale") { Description = "apply original + α·delta", DefaultValueFactory = _ => 1f };
        var applyOut = new Option<string>("--out") { Description = "the patched model (.safetensors, or a folder with --format timm|hf)", Required = true };
        var format = new Option<string>("--format")
        {
            Description = "wte (one .safetensors with wte metadata), timm (hub folder: model.safetensors + config.json) or hf (transformers folder)",
            DefaultValueFactory = _ => "wte",
        };
        var apply = new Command("apply", "Write MODEL with the patch applied to --out.") { applyModel, applyPatch, scale, applyOut, format };
        apply.SetAction(parse => Rewrite(io, parse, "applied", new PatchJobOptions
        {
            ModelPath = parse.GetValue(applyModel)!, PatchPath = parse.GetValue(applyPatch)!, OutPath = parse.GetValue(applyOut)!, Scale = parse.GetValue(scale),
            Format = ModelExport.ParseFormat(parse.GetValue(format)!),
        }));

        var revertModel = new Argument<string>("MODEL") { Description = "a patched model" };
        var revertPatch = new Argument<string>("PATCH") { Description = "the patch to remove" };
        var revertOut = new Option<string>("--out") { Description = "the restored model (.safetensors)", Required = true };
        var revert = new Command("revert", "Write MODEL with the patch removed to --out (bit-identical to the patch's base).") { revertModel, revertPatch, revertOut };
        revert.SetAction(parse => Rewrite(io, parse, "reverted", new PatchJobOptions
        {
            ModelPath = parse.GetValue(revertModel)!, PatchPath = parse.GetValue(revertPatch)!, OutPath = parse.GetValue(revertOut)!, Revert = true,
        }));

        var infoPatch = new Argument<string>("PATCH");
        var info = new Command("info", "Describe an edit patch.") { infoPatch };
        info.SetAction(parse =>
        {
            var patch = EditPatch.Load(parse.GetValue(infoPatch)!);
            var stdout = io.Out;
            if (io.Json(parse)) stdout.WriteLine(JsonSerializer.Serialize(patch.Info, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
            else
            {
                stdout.WriteLine(patch.Describe());
                foreach (var u in patch.Units)
                    stdout.WriteLine($"  unit {u.Index}  {u.Parameter,-28} {(u.Axis == Engine.Tensors.MaskAxis.Rows ? "rows" : "columns"),-7} {u.Indices.Length} selected");
                if (patch.Info.Result is { } r)
                    stdout.WriteLine($"  result: {(r.Success ? "fixed" : "not fixed")} in {r.Steps} steps, loss {r.InitialLoss:F4} → {r.FinalLoss:F4}, {r.WeightsChanged:N0} weights changed");
            }
            return 0;
        });

        command.Subcommands.Add(apply);
        command.Subcommands.Add(revert);
        command.Subcommands.Add(info);
        return command;
    }

    private static int Rewrite(CliOutput io, ParseResult parse, string verb, PatchJobOptions options)
    {
        var result = PatchJob.Run(options);
        return io.Print(parse, result, stdout =>
        {
            foreach (string note in result.Notes) stdout.WriteLine($"note: {note}");
            stdout.WriteLine($"{verb} {options.PatchPath} → {result.OutPath} (fingerprint {result.Fingerprint})");
        });
    }
}

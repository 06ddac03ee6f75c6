using System.CommandLine;
using System.Text.Json;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command PatchCommand(TextWriter stdout)
    {
        var command = new Command("patch", "Apply, revert or describe edit patches.");

        var applyModel = new Argument<string>("MODEL") { Description = "the model the patch was made for (file or hub folder)" };
        var applyPatch = new Argument<string>("PATCH") { Description = "an edit patch written by wte edit" };
        var scale = new Option<float>("--scale") { Description = "apply original + α·delta", DefaultValueFactory = _ => 1f };
        var applyOut = new Option<string>("--out") { Description = "the patched model (.safetensors)", Required = true };
        var apply = new Command("apply", "Write MODEL with the patch applied to --out.") { applyModel, applyPatch, scale, applyOut };
        apply.SetAction(parse => Rewrite(parse.GetValue(applyModel)!, parse.GetValue(applyPatch)!, parse.GetValue(applyOut)!, stdout,
            (patch, vit) => patch.Apply(vit, parse.GetValue(scale)), "applied"));

        var revertModel = new Argument<string>("MODEL") { Description = "a patched model" };
        var revertPatch = new Argument<string>("PATCH") { Description = "the patch to remove" };
        var revertOut = new Option<string>("--out") { Description = "the restored model (.safetensors)", Required = true };
        var revert = new Command("revert", "Write MODEL with the patch removed to --out (bit-identical to the patch's base).") { revertModel, revertPatch, revertOut };
        revert.SetAction(parse => Rewrite(parse.GetValue(revertModel)!, parse.GetValue(revertPatch)!, parse.GetValue(revertOut)!, stdout,
            (patch, vit) => patch.Revert(vit), "reverted"));

        var infoPatch = new Argument<string>("PATCH");
        var infoJson = new Option<bool>("--json") { Description = "print the patch header as JSON" };
        var info = new Command("info", "Describe an edit patch.") { infoPatch, infoJson };
        info.SetAction(parse =>
        {
            var patch = EditPatch.Load(parse.GetValue(infoPatch)!);
            if (parse.GetValue(infoJson)) stdout.WriteLine(JsonSerializer.Serialize(patch.Info, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
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

    private static int Rewrite(string modelPath, string patchPath, string outPath, TextWriter stdout, Action<EditPatch, VitModel> change, string verb)
    {
        new CommandPaths().Input(modelPath, "MODEL").Input(patchPath, "PATCH").Output(outPath, "--out").Check();
        var patch = EditPatch.Load(patchPath);
        var loaded = ModelFolder.Load(modelPath);
        using var backend = new CpuBackend();
        using var vit = VitCheckpoint.Load(backend, loaded);
        change(patch, vit);
        VitCheckpoint.Save(vit, outPath, loaded.Preprocessing, loaded.Labels);
        stdout.WriteLine($"{verb} {patchPath} → {outPath} (fingerprint {VitCheckpoint.Fingerprint(vit)})");
        return 0;
    }
}

using System.CommandLine;
using WhereToEdit.Engine.Jobs;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.IO;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command ConvertCommand(TextWriter stdout)
    {
        var input = new Argument<string>("IN") { Description = "a model: .safetensors, .npz, PyTorch .pth/.pt/.bin, or a hub-style folder" };
        var output = new Option<string>("--out") { Description = "the safetensors file to write (timm names + wte.* metadata)", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "stored element type: f32, f16 or bf16", DefaultValueFactory = _ => "f32" };
        var heads = new Option<int?>("--heads") { Description = "attention heads, when the input does not say (stored in the output)" };
        var command = new Command("convert", "Convert any readable model to a self-describing safetensors file (timm names, architecture, preprocessing, labels).")
        {
            input, output, dtype, heads,
        };
        command.SetAction(parse =>
        {
            string outPath = parse.GetValue(output)!;
            var type = parse.GetValue(dtype)!.Trim().ToLowerInvariant() switch
            {
                "f32" => TensorDType.F32,
                "f16" => TensorDType.F16,
                "bf16" => TensorDType.BF16,
                var other => throw new ArgumentException($"--dtype {other}: must be f32, f16 or bf16"),
            };
            if (parse.GetValue(heads) is int h && h <= 0) throw new ArgumentException($"--heads {h}: must be positive");
            JobInputs.RefuseOverwritingInput(outPath, parse.GetValue(input));
            var r = CheckpointConversion.Convert(parse.GetValue(input)!, outPath, type, new ModelLoadOptions { NumHeads = parse.GetValue(heads) });
            stdout.WriteLine($"read   {r.InputCheckpoint} ({r.InputFormat.ToString().ToLowerInvariant()}, {NamingText(r.InputNaming)} names)");
            stdout.WriteLine($"wrote  {r.OutputPath} (safetensors, timm names, {type}): {r.Parameters:N0} parameters in {r.Tensors} tensors, fingerprint {r.Fingerprint}");
            foreach (string note in r.Notes) stdout.WriteLine($"note   {note}");
            return 0;
        });
        return command;
    }

    private static Command ExportCommand(TextWriter stdout)
    {
        var input = new Argument<string>("HYPERNET") { Description = "a hypernetwork file (ours, from wte meta-train)" };
        var output = new Option<string>("--out") { Description = "the .pth to write: the reference's HyperNetwork_mask state dict (torch.load + load_state_dict)", Required = true };
        var command = new Command("export", "Write a hypernetwork as a reference-compatible PyTorch .pth (HyperNetwork_mask state dict).") { input, output };
        command.SetAction(parse =>
        {
            string outPath = parse.GetValue(output)!;
            JobInputs.RefuseOverwritingInput(outPath, parse.GetValue(input));
            using var backend = new CpuBackend(new CpuBackendOptions { Threads = 1 });
            var (c, blocks) = CheckpointConversion.ExportHypernet(backend, parse.GetValue(input)!, outPath);
            stdout.WriteLine($"wrote  {outPath} (PyTorch, reference HyperNetwork_mask names): width {c.EmbedDim}, {c.Depth} blocks, " +
                             $"{c.Units} mask heads of {c.UnitSize} gates for blocks [{string.Join(",", blocks)}] (the reference edits blocks layer-2..layer: pass layer={blocks[^1]})");
            return 0;
        });
        return command;
    }
}

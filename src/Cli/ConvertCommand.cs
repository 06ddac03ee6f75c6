using System.CommandLine;
using WhereToEdit.Engine.Jobs;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command ConvertCommand(CliOutput io)
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
            var r = ConvertJob.Run(new ConvertJobOptions
            {
                InPath = parse.GetValue(input)!, OutPath = parse.GetValue(output)!, DType = parse.GetValue(dtype)!, Heads = parse.GetValue(heads),
            });
            return io.Print(parse, r, stdout =>
            {
                stdout.WriteLine($"read   {r.InputCheckpoint} ({r.InputFormat.ToString().ToLowerInvariant()}, {NamingText(r.InputNaming)} names)");
                stdout.WriteLine($"wrote  {r.OutputPath} (safetensors, timm names, {ConvertJob.ParseDType(parse.GetValue(dtype)!)}): " +
                                 $"{r.Parameters:N0} parameters in {r.Tensors} tensors, fingerprint {r.Fingerprint}");
                foreach (string note in r.Notes) stdout.WriteLine($"note   {note}");
            });
        });
        return command;
    }

    private static Command ExportCommand(CliOutput io)
    {
        var input = new Argument<string>("HYPERNET") { Description = "a hypernetwork file (ours, from wte meta-train)" };
        var output = new Option<string>("--out") { Description = "the .pth to write: the reference's HyperNetwork_mask state dict (torch.load + load_state_dict)", Required = true };
        var command = new Command("export", "Write a hypernetwork as a reference-compatible PyTorch .pth (HyperNetwork_mask state dict).") { input, output };
        command.SetAction(parse =>
        {
            var r = ConvertJob.Export(parse.GetValue(input)!, parse.GetValue(output)!);
            return io.Print(parse, r, stdout => stdout.WriteLine(
                $"wrote  {r.OutPath} (PyTorch, reference HyperNetwork_mask names): width {r.Width}, {r.Depth} blocks, {r.Units} mask heads of {r.UnitSize} gates " +
                $"for blocks [{string.Join(",", r.EditBlocks)}] (the reference edits blocks layer-2..layer: pass layer={r.EditBlocks[^1]})"));
        });
        return command;
    }
}

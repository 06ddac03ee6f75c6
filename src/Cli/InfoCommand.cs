using System.CommandLine;
using System.Text.Json;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command InfoCommand(CliOutput io)
    {
        var model = new Argument<string>("MODEL") { Description = "a .safetensors, .npz or PyTorch .pth/.pt/.bin file, or a hub-style folder (model.safetensors or pytorch_model.bin + config.json)" };
        var command = new Command("info", "Describe a model: format, naming convention, architecture, parameters, preprocessing, labels.") { model };
        command.SetAction(parse =>
        {
            string path = parse.GetValue(model)!;
            var loaded = ModelFolder.Load(path);
            var a = loaded.Architecture.Validate();
            string fingerprint = VitCheckpoint.Fingerprint(loaded.Weights);
            string source = loaded.Provenance.HeadsSource;
            string headsNote = loaded.Provenance.HeadsOrigin switch
            {
                HeadsOrigin.TimmPreset => $"{source} (not stored in the file: taken from the timm preset of the same shapes)",
                HeadsOrigin.DimOver64Guess => $"{source} (GUESSED: pass a config.json to be sure)",
                _ => source,
            };
            var stdout = io.Out;
            if (io.Json(parse))
            {
                stdout.WriteLine(JsonSerializer.Serialize(new
                {
                    model = path, checkpoint = loaded.Paths.CheckpointPath, config = loaded.Paths.ConfigPath,
                    format = loaded.Paths.Format.ToString().ToLowerInvariant(), naming = loaded.SourceConvention.ToString(),
                    architecture = a, heads_source = headsNote, parameters = a.ParameterCount(), tensors = loaded.Weights.Tensors.Count,
                    fingerprint, preprocessing = loaded.Preprocessing.ToString(), preprocessing_source = loaded.PreprocessingSource,
                    labels = loaded.Labels, notes = loaded.Notes, warning = loaded.Weights.NonFiniteWarning(),
                }));
                return 0;
            }
            stdout.WriteLine($"model          {path}");
            stdout.WriteLine($"checkpoint     {loaded.Paths.CheckpointPath} ({loaded.Paths.Format.ToString().ToLowerInvariant()}, {NamingText(loaded.SourceConvention)} names)");
            if (loaded.Paths.ConfigPath is not null) stdout.WriteLine($"config         {loaded.Paths.ConfigPath}");
            stdout.WriteLine($"architecture   ViT: image {a.ImageSize}, patch {a.PatchSize}, in_chans {a.InChans}, width {a.EmbedDim}, depth {a.Depth}, " +
                             $"heads {a.NumHeads}, MLP {a.MlpHidden}, classes {a.NumClasses}, LayerNorm eps {a.LayerNormEps:G3}, qkv bias {(a.QkvBias ? "yes" : "no")}");
            stdout.WriteLine($"heads from     {headsNote}");
            stdout.WriteLine($"parameters     {a.ParameterCount():N0} in {loaded.Weights.Tensors.Count} tensors");
            stdout.WriteLine($"fingerprint    {fingerprint}");
            stdout.WriteLine($"preprocessing  {loaded.Preprocessing} ({loaded.PreprocessingSource})");
            stdout.WriteLine(loaded.Labels is { Count: > 0 } labels
                ? $"labels         {labels.Count}: {string.Join(", ", labels.Take(5))}{(labels.Count > 5 ? ", …" : "")}"
                : "labels         none (class indices only)");
            foreach (string note in loaded.Notes) stdout.WriteLine($"note           {note}");
            if (loaded.Weights.NonFiniteWarning() is { } warning) stdout.WriteLine($"WARNING        {warning}");
            return 0;
        });
        return command;
    }

    private static string NamingText(NamingConvention c) => c switch
    {
        NamingConvention.Timm => "timm",
        NamingConvention.HuggingFace => "Hugging Face ViTForImageClassification",
        _ => "Google AugReg (Flax)",
    };
}

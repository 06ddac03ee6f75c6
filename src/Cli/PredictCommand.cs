using System.CommandLine;
using System.Text.Json;
using WhereToEdit.Engine.Jobs;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command PredictCommand(CliOutput io)
    {
        var model = new Argument<string>("MODEL") { Description = "a .safetensors, .npz or PyTorch .pth/.pt/.bin file, or a hub-style folder" };
        var images = new Argument<string[]>("IMAGE") { Description = "image files or folders of images", Arity = ArgumentArity.OneOrMore };
        var topK = new Option<int>("--top-k") { Description = "classes to print per image", DefaultValueFactory = _ => 5 };
        var batch = new Option<int>("--batch") { Description = "images per forward pass", DefaultValueFactory = _ => 8 };
        var device = DeviceOption();
        var threads = ThreadsOption();
        var precision = PrecisionOption();
        var pre = new PreprocessingOptions();
        var command = new Command("predict", "Classify images with a model, using the preprocessing the model file carries (overridable).")
        {
            model, images, topK, batch, device, threads, precision,
        };
        foreach (var o in pre.All) command.Options.Add(o);
        command.SetAction(parse =>
        {
            var result = PredictJob.Run(new PredictJobOptions
            {
                ModelPath = parse.GetValue(model)!, Images = parse.GetValue(images)!, TopK = parse.GetValue(topK), Batch = parse.GetValue(batch),
                Preprocessing = pre.Parse(parse), Backend = new BackendChoice { Device = parse.GetValue(device)!, Threads = parse.GetValue(threads), Precision = parse.GetValue(precision)! },
            });
            var stdout = io.Out;
            foreach (var r in result.Predictions)
            {
                if (io.Json(parse))   // JSON lines: one object per image
                    stdout.WriteLine(JsonSerializer.Serialize(new
                    {
                        image = r.Image,
                        top = r.Top.Select(t => new { index = t.Index, label = t.Label, prob = t.Probability }),
                    }));
                else
                {
                    stdout.WriteLine(r.Image);
                    foreach (var t in r.Top) stdout.WriteLine($"  {t.Index,5}  {t.Probability,8:P2}  {t.Label}");
                }
            }
            return 0;
        });
        return command;
    }
}

using System.CommandLine;
using System.Text.Json;
using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static readonly string[] ImageExtensions = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"];

    private static Command PredictCommand(TextWriter stdout)
    {
        var model = new Argument<string>("MODEL") { Description = "a .safetensors or .npz file, or a hub-style folder" };
        var images = new Argument<string[]>("IMAGE") { Description = "image files or folders of images", Arity = ArgumentArity.OneOrMore };
        var topK = new Option<int>("--top-k") { Description = "classes to print per image", DefaultValueFactory = _ => 5 };
        var batch = new Option<int>("--batch") { Description = "images per forward pass", DefaultValueFactory = _ => 8 };
        var json = new Option<bool>("--json") { Description = "one JSON object per line per image: {\"image\", \"top\": [{\"index\", \"label\", \"prob\"}]}" };
        var device = DeviceOption();
        var threads = ThreadsOption();
        var pre = new PreprocessingOptions();
        var command = new Command("predict", "Classify images with a model, using the preprocessing the model file carries (overridable).")
        {
            model, images, topK, batch, json, device, threads,
        };
        foreach (var o in pre.All) command.Options.Add(o);
        command.SetAction(parse =>
        {
            string path = parse.GetValue(model)!;
            int k = parse.GetValue(topK), b = parse.GetValue(batch);
            if (k <= 0) throw new ArgumentException($"--top-k {k}: must be positive");
            if (b <= 0) throw new ArgumentException($"--batch {b}: must be positive");
            var files = ExpandImages(parse.GetValue(images)!);
            var loaded = ModelFolder.Load(path);
            var preprocessing = pre.Apply(parse, loaded.Preprocessing, path);
            var loader = new ImageLoader();
            foreach (string f in files) loader.Identify(f);   // refuse unreadable or over-large images before any output
            using var backend = BackendFactory.Create(parse.GetValue(device)!, parse.GetValue(threads));
            using var vit = VitCheckpoint.Load(backend, loaded);
            var results = Predictor.Run(vit, loader, preprocessing, files, b, k, loaded.Labels);
            foreach (var r in results)
            {
                if (parse.GetValue(json))
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

    /// <summary>Files as given; folders expand to their image files (recursively, sorted).</summary>
    internal static List<string> ExpandImages(IEnumerable<string> inputs)
    {
        var files = new List<string>();
        foreach (string input in inputs)
        {
            if (Directory.Exists(input))
            {
                var found = FolderWalk.Files(input, f => ImageExtensions.Contains(Path.GetExtension(f).ToLowerInvariant()));
                if (found.Count == 0) throw new ArgumentException($"{input}: folder holds no images ({string.Join(", ", ImageExtensions)})");
                files.AddRange(found);
            }
            else if (File.Exists(input)) files.Add(input);
            else throw new FileNotFoundException($"{input}: no such file or folder", input);
        }
        return files;
    }
}

using System.CommandLine;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.Editing;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    /// <summary>Where the shipped Fashion-MNIST model, hypernetwork and benchmark live, relative to the repository root.</summary>
    internal const string AssetsFolder = "assets/fashion_mnist";

    /// <summary>
    /// The edit learning rate for the shipped model: the paper's 2e-5 for ViT-B/16 (width 768) scaled by 768/64 for
    /// this ViT's width 64 — an RMSprop step moves every selected weight by about lr, and a hidden unit's effect grows
    /// with its row's width. Measured on the benchmark (docs/RESULTS.md): at 2e-5 even full fine-tuning rarely
    /// reaches the stop rule within 100 steps here.
    /// </summary>
    internal const float DemoLearningRate = 2e-5f * 768 / 64;

    /// <summary>Finds assets/fashion_mnist from the working directory or the binary's location upwards.</summary>
    internal static string FindAssets(string? given)
    {
        if (given is not null)
            return File.Exists(Path.Combine(given, "vit.safetensors")) ? given : throw new DirectoryNotFoundException($"--assets {given}: no vit.safetensors there");
        foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, AssetsFolder);
                if (File.Exists(Path.Combine(candidate, "vit.safetensors"))) return candidate;
            }
        throw new DirectoryNotFoundException($"cannot find {AssetsFolder}/ (the shipped model, hypernetwork and benchmark) above {Directory.GetCurrentDirectory()}; run from the repository or pass --assets");
    }

    private static Command DemoCommand(TextWriter stdout, TextWriter stderr)
    {
        var assets = new Option<string?>("--assets") { Description = $"folder with vit.safetensors, hypernet.safetensors and benchmark/ (default: {AssetsFolder} of the repository)" };
        var output = new Option<string>("--out") { Description = "output folder for records, tables and plots", DefaultValueFactory = _ => "out/demo" };
        var edits = new Option<int>("--max-edits-per-group") { Description = "edits per group in the reduced sweep (2: the fewest that give within-group mask IoU)", DefaultValueFactory = _ => 2 };
        var broadImages = new Option<int>("--broad-images") { Description = "images of the broad locality set used (stratified; 0 = all 2000)", DefaultValueFactory = _ => 500 };
        var threads = ThreadsOption();
        var command = new Command("demo", "The main job: edit the shipped Fashion-MNIST ViT's real mistakes with HPRD vs FT-L1, FT-L2 and random masks (reduced sweep).")
        {
            assets, output, edits, broadImages, threads,
        };
        command.SetAction(parse =>
        {
            string folder = FindAssets(parse.GetValue(assets));
            string model = Path.Combine(folder, "vit.safetensors"), hypernet = Path.Combine(folder, "hypernet.safetensors");
            string manifestPath = Path.Combine(folder, "benchmark", BenchmarkManifest.FileName);
            // The reduced sweep: every edit now also re-evaluates the broad locality set (the cost that dominates), so
            // the demo keeps the comparison the paper's claims hinge on: learned vs random masks at keep 0.1 (plus
            // HPRD at 0.25) and fine-tuning. `wte eval` runs the full sweep on all 2000 broad images.
            var settings = new List<EvalSetting>
            {
                new(EditMethod.Hprd, 0.25, 0), new(EditMethod.Hprd, 0.1, 0),
                new(EditMethod.Random, 0.1, 0), new(EditMethod.FtL2, 1, 0.001f),
            };
            int broadLimit = parse.GetValue(broadImages);
            if (broadLimit < 0) throw new ArgumentException($"--broad-images {broadLimit}: must be 0 (all) or positive");
            var options = new EvalOptions { MaxEditsPerGroup = parse.GetValue(edits), LearningRate = DemoLearningRate };
            RunEvaluation(new EvalRequest
            {
                ModelPath = model, HypernetPath = hypernet, Manifest = BenchmarkManifest.Read(manifestPath), Settings = settings, Options = options,
                OutDir = parse.GetValue(output)!, Threads = parse.GetValue(threads), Title = "wte demo (Fashion-MNIST, reduced sweep)", BroadLimit = broadLimit,
            }, stdout, stderr);
            stdout.WriteLine();
            stdout.WriteLine("The full protocol (all keep fractions and FT coefficients, every failure, 1 or 3 images per edit):");
            stdout.WriteLine($"  wte eval --model {model} --hypernet {hypernet} --benchmark {manifestPath} --lr {DemoLearningRate.ToString(System.Globalization.CultureInfo.InvariantCulture)} --out out/eval");
            stdout.WriteLine("Results of that run are in docs/RESULTS.md.");
            return 0;
        });
        return command;
    }
}

using System.CommandLine;
using System.Globalization;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.Jobs;
using WhereToEdit.Engine.Training;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command BenchmarkCommand(CliOutput io) =>
        new("benchmark", "Build or inspect an editing benchmark (natural failures, style shifts, sensitive locality set).")
        {
            BenchmarkBuildCommand(io), BenchmarkInfoCommand(io), BenchmarkBroadCommand(io),
        };

    private static Command BenchmarkBuildCommand(CliOutput io)
    {
        var model = new Option<string>("--model") { Description = "the base model (.safetensors / .npz / hub folder; 1 channel)", Required = true };
        var data = new Option<string>("--data") { Description = "folder with the Fashion-MNIST IDX files (the t10k test split is used)", DefaultValueFactory = _ => LabeledImagesIdx.DebianFashionMnist };
        var output = new Option<string>("--out") { Description = "output folder (new or empty): manifest.json + image folders", Required = true };
        var seed = new Option<ulong>("--seed") { Description = "seeds the per-group samples and the spotlights", DefaultValueFactory = _ => 0UL };
        var margin = new Option<double>("--margin") { Description = "locality set: correct images with top-1 − top-2 probability below this", DefaultValueFactory = _ => 0.05 };
        var maxPerGroup = new Option<int>("--max-per-group") { Description = "images kept per group (seeded sample)", DefaultValueFactory = _ => 12 };
        var maxGroups = new Option<int>("--max-groups") { Description = "groups kept per subset (the largest)", DefaultValueFactory = _ => 20 };
        var minPerGroup = new Option<int>("--min-per-group") { Description = "failures a group needs", DefaultValueFactory = _ => 5 };
        var maxLocality = new Option<int>("--max-locality") { Description = "locality images kept (seeded sample); 0 keeps all", DefaultValueFactory = _ => 0 };
        var name = new Option<string>("--name") { Description = "the benchmark's name in the manifest", DefaultValueFactory = _ => "fashion-mnist" };
        var batch = new Option<int>("--batch") { Description = "images per forward pass", DefaultValueFactory = _ => 256 };
        var broad = new Option<int>("--broad") { Description = "broad locality set: this many correctly classified test images, equally from every class (0: none)", DefaultValueFactory = _ => BroadLocality.DefaultCount };
        var device = DeviceOption();
        var threads = ThreadsOption();
        var command = new Command("build", "Build the benchmark from a base model's failures on the Fashion-MNIST test set (deterministic for a seed).")
        {
            model, data, output, seed, margin, maxPerGroup, maxGroups, minPerGroup, maxLocality, name, batch, broad, device, threads,
        };
        command.SetAction(parse =>
        {
            var result = BenchmarkBuildJob.Run(new BenchmarkBuildJobOptions
            {
                ModelPath = parse.GetValue(model)!, DataPath = parse.GetValue(data)!, OutPath = parse.GetValue(output)!,
                Build = new BenchmarkBuildOptions
                {
                    Seed = parse.GetValue(seed), Margin = parse.GetValue(margin), MaxPerGroup = parse.GetValue(maxPerGroup),
                    MaxGroups = parse.GetValue(maxGroups), MinPerGroup = parse.GetValue(minPerGroup), MaxLocality = parse.GetValue(maxLocality),
                    Name = parse.GetValue(name)!, Batch = parse.GetValue(batch),
                },
                BroadCount = parse.GetValue(broad),
                Backend = new BackendChoice { Device = parse.GetValue(device)!, Threads = parse.GetValue(threads) },
            }, io.Progress());
            return io.Print(parse, result, stdout => PrintBuild(stdout, result));
        });
        return command;
    }

    private static void PrintBuild(TextWriter stdout, BenchmarkBuildJobResult result)
    {
        if (result.BroadImages > 0) stdout.WriteLine($"broad locality set: {result.BroadImages} correctly classified test images ({BroadLocality.ImagesFile})");
        PrintBenchmark(stdout, result.Subsets.Select(s => (s.Name, s.Kind, s.Groups, s.Images, (int?)s.Failures, (int?)s.EligibleGroups)),
            result.LocalityName, result.LocalityImages, result.Margin, withStats: true);
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"base accuracy {result.BaseAccuracy:P2}; locality: {result.LocalityCandidates} candidates below margin {result.Margin}"));
        foreach (string note in result.Warnings) stdout.WriteLine(note);
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"wrote {result.ManifestPath} ({result.Images} images, {result.TotalBytes / 1024.0:F1} KiB)"));
    }
}

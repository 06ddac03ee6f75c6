using System.CommandLine;
using System.Globalization;
using WhereToEdit.Engine.Jobs;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command DemoCommand(CliOutput io)
    {
        var assets = new Option<string?>("--assets") { Description = $"folder with vit.safetensors, hypernet.safetensors and benchmark/ (default: {DemoSetup.AssetsFolder} of the repository)" };
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
            string folder = DemoSetup.FindAssets(parse.GetValue(assets));
            var options = DemoSetup.Options(folder, parse.GetValue(output)!, parse.GetValue(edits), new BackendChoice { Threads = parse.GetValue(threads) }, parse.GetValue(broadImages));
            var result = EvaluateJob.Run(options, io.Progress(), world: World);
            if (result is null) return 0;   // an MPI rank other than 0 ran its share of the edits
            return io.Print(parse, result, stdout =>
            {
                PrintEvaluation(stdout, result);
                stdout.WriteLine();
                stdout.WriteLine("The full protocol (all keep fractions and FT coefficients, every failure, 1 or 3 images per edit):");
                stdout.WriteLine($"  wte eval --model {options.ModelPath} --hypernet {options.HypernetPath} --benchmark {options.BenchmarkPath} --lr {DemoSetup.LearningRate.ToString(CultureInfo.InvariantCulture)} --out out/eval");
                stdout.WriteLine("Results of that run are in docs/RESULTS.md.");
            });
        });
        return command;
    }
}

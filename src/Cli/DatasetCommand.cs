using System.CommandLine;
using WhereToEdit.Engine.Jobs;
using WhereToEdit.Engine.Training;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command DatasetCommand(CliOutput io)
    {
        var data = new Option<string>("--data") { Description = "folder with the Fashion-MNIST IDX files", DefaultValueFactory = _ => LabeledImagesIdx.DebianFashionMnist };
        var output = new Option<string>("--out") { Description = "output folder (train-/t10k- IDX files + labels.txt)", Required = true };
        var seed = new Option<ulong>("--seed") { Description = "seed of every image's orientation", DefaultValueFactory = _ => 0UL };
        var orientations = new Command("orientations",
            "Write the garment × orientation task (every image turned 0/90/180/270°, 40 classes) for a second test bed; train on it with 'wte pretrain --data DIR --flip false'.")
        {
            data, output, seed,
        };
        orientations.SetAction(parse =>
        {
            var r = DatasetJob.Orientations(new DatasetJobOptions { DataPath = parse.GetValue(data)!, OutDir = parse.GetValue(output)!, Seed = parse.GetValue(seed) }, io.Progress());
            return io.Print(parse, r, stdout =>
                stdout.WriteLine($"wrote {r.Files.Count} files to {r.Folder}: {r.Classes} classes, {r.TrainImages} training and {r.TestImages} test images"));
        });
        return new Command("dataset", "Derived data sets for other test beds.") { orientations };
    }
}

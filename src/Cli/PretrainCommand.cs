using System.CommandLine;
using System.Globalization;
using WhereToEdit.Engine.Jobs;
using WhereToEdit.Engine.Training;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command PretrainCommand(CliOutput io)
    {
        var data = new Option<string>("--data") { Description = "folder with the Fashion-MNIST IDX files (train-/t10k-images-idx3-ubyte[.gz], ...-labels-idx1-ubyte[.gz])", DefaultValueFactory = _ => LabeledImagesIdx.DebianFashionMnist };
        var output = new Option<string>("--out") { Description = "the trained model (.safetensors, timm names + labels + preprocessing)", Required = true };
        var preset = new Option<string>("--preset") { Description = "architecture preset", DefaultValueFactory = _ => "vit_fashion_mnist" };
        var epochs = new Option<int>("--epochs") { DefaultValueFactory = _ => 15 };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 128 };
        var lr = new Option<float>("--lr") { Description = "peak AdamW learning rate", DefaultValueFactory = _ => 1e-3f };
        var wd = new Option<float>("--weight-decay") { DefaultValueFactory = _ => 0.05f };
        var warmup = new Option<double>("--warmup-epochs") { DefaultValueFactory = _ => 1.0 };
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 0UL };
        var flip = new Option<bool>("--flip") { Description = "random horizontal flips (turn off for orientation-sensitive data: 'wte dataset orientations')", DefaultValueFactory = _ => true };
        var limit = new Option<int>("--train-limit") { Description = "use only the first N training images (quick runs)", DefaultValueFactory = _ => 0 };
        var checkpointDir = new Option<string?>("--checkpoint-dir") { Description = "write resumable checkpoints here (every epoch and --checkpoint-every steps)" };
        var checkpointEvery = new Option<int>("--checkpoint-every") { DefaultValueFactory = _ => 0 };
        var resume = new Option<string?>("--resume") { Description = "continue from a checkpoint (same options)" };
        var log = new Option<string?>("--log") { Description = "CSV log: step, epoch, loss, lr, steps/s, test accuracy" };
        var device = DeviceOption();
        var threads = ThreadsOption();
        var command = new Command("pretrain", "Train the embedded default ViT on Fashion-MNIST (AdamW, warm-up + cosine, shifts and flips).")
        {
            data, output, preset, epochs, batch, lr, wd, warmup, seed, flip, limit, checkpointDir, checkpointEvery, resume, log, device, threads,
        };
        command.SetAction(parse =>
        {
            var result = PretrainJob.Run(new PretrainJobOptions
            {
                DataPath = parse.GetValue(data)!, OutPath = parse.GetValue(output)!, Preset = parse.GetValue(preset)!,
                Training = new PretrainOptions
                {
                    Epochs = parse.GetValue(epochs), Batch = parse.GetValue(batch), LearningRate = parse.GetValue(lr),
                    WeightDecay = parse.GetValue(wd), WarmupEpochs = parse.GetValue(warmup), Seed = parse.GetValue(seed),
                    CheckpointEvery = parse.GetValue(checkpointEvery), Flip = parse.GetValue(flip),
                },
                TrainLimit = parse.GetValue(limit), CheckpointDir = parse.GetValue(checkpointDir), ResumePath = parse.GetValue(resume), LogPath = parse.GetValue(log),
                Backend = new BackendChoice { Device = parse.GetValue(device)!, Threads = parse.GetValue(threads) },
            }, io.Progress());
            return io.Print(parse, result, stdout => stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"test accuracy {result.TestAccuracy:P2} on {result.TestImages} images; wrote {result.OutPath} (fingerprint {result.Fingerprint})")));
        });
        return command;
    }
}

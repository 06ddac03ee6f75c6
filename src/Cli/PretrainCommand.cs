using System.CommandLine;
using System.Globalization;
using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Training;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command PretrainCommand(TextWriter stdout, TextWriter stderr)
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
        var limit = new Option<int>("--train-limit") { Description = "use only the first N training images (quick runs)", DefaultValueFactory = _ => 0 };
        var checkpointDir = new Option<string?>("--checkpoint-dir") { Description = "write resumable checkpoints here (every epoch and --checkpoint-every steps)" };
        var checkpointEvery = new Option<int>("--checkpoint-every") { DefaultValueFactory = _ => 0 };
        var resume = new Option<string?>("--resume") { Description = "continue from a checkpoint (same options)" };
        var log = new Option<string?>("--log") { Description = "CSV log: step, epoch, loss, lr, steps/s, test accuracy" };
        var device = DeviceOption();
        var threads = ThreadsOption();
        var command = new Command("pretrain", "Train the embedded default ViT on Fashion-MNIST (AdamW, warm-up + cosine, shifts and flips).")
        {
            data, output, preset, epochs, batch, lr, wd, warmup, seed, limit, checkpointDir, checkpointEvery, resume, log, device, threads,
        };
        command.SetAction(parse =>
        {
            string outPath = parse.GetValue(output)!;
            new CommandPaths().Input(parse.GetValue(resume), "--resume", keptByFolderOutputs: true).Input(parse.GetValue(data), "--data").Output(outPath, "--out").Output(parse.GetValue(log), "--log")
                .OutputFolder(parse.GetValue(checkpointDir), "--checkpoint-dir", Pretrainer.IsCheckpointName).Check();
            var options = new PretrainOptions
            {
                Epochs = parse.GetValue(epochs), Batch = parse.GetValue(batch), LearningRate = parse.GetValue(lr),
                WeightDecay = parse.GetValue(wd), WarmupEpochs = parse.GetValue(warmup), Seed = parse.GetValue(seed),
                CheckpointEvery = parse.GetValue(checkpointEvery),
            };
            options.Validate();
            var config = VitConfig.Preset(parse.GetValue(preset)!);
            var train = LabeledImagesIdx.FashionMnist(parse.GetValue(data)!, train: true);
            var test = LabeledImagesIdx.FashionMnist(parse.GetValue(data)!, train: false);
            if (parse.GetValue(limit) is > 0 and var n && n < train.Count)
                train = new LabeledImages(train.Pixels.AsSpan(0, n * train.PixelsPerImage).ToArray(), train.Labels.AsSpan(0, n).ToArray(), train.Height, train.Width, train.Source + $" (first {n})");
            string? dir = parse.GetValue(checkpointDir);
            if (dir is not null) Directory.CreateDirectory(dir);

            using var backend = BackendFactory.Create(parse.GetValue(device)!, parse.GetValue(threads));
            using var model = new VitModel(backend, config);
            model.InitializeRandom(options.Seed);
            using var trainer = new Pretrainer(model, options);
            if (parse.GetValue(resume) is { } r) trainer.LoadCheckpoint(r);
            stderr.WriteLine($"pretrain {parse.GetValue(preset)} ({config.ParameterCount():N0} parameters) on {train.Count} images, {backend.Name}, from step {trainer.Step}");
            using var csv = parse.GetValue(log) is { } logPath ? CsvLog.Open(logPath, "step,epoch,loss,lr,steps_per_s,test_accuracy", "--log", trainer.Step > 0 ? trainer.Step : null) : null;
            var bar = new ProgressBar(stderr, "pretrain");
            double lastAccuracy = double.NaN;
            trainer.Train(train, test, p =>
            {
                if (p.TestAccuracy is double acc) lastAccuracy = acc;
                csv?.WriteRow(string.Create(CultureInfo.InvariantCulture, $"{p.Step},{p.Epoch},{p.Loss:G6},{p.LearningRate:G4},{p.StepsPerSecond:F3},{(p.TestAccuracy is double a ? a.ToString("F4", CultureInfo.InvariantCulture) : "")}"));
                bar.Report(p.Step, p.TotalSteps, p.StepsPerSecond, p.Eta,
                    string.Create(CultureInfo.InvariantCulture, $"epoch {p.Epoch} loss {p.Loss:F4} lr {p.LearningRate:G3}{(double.IsNaN(lastAccuracy) ? "" : $" test acc {lastAccuracy:P2}")}"),
                    force: p.TestAccuracy is not null);
            }, step =>
            {
                if (dir is not null) trainer.SaveCheckpoint(Path.Combine(dir, $"pretrain-{step:D6}.safetensors"));
            });
            double accuracy = trainer.Evaluate(test);
            var preprocessing = new Preprocessing(ResizeMode.Direct, config.ImageSize, config.ImageSize, Interpolation.Bilinear, [options.Mean], [options.Std]);
            VitCheckpoint.Save(model, outPath, preprocessing, LabeledImages.FashionMnistLabels);
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"test accuracy {accuracy:P2} on {test.Count} images; wrote {outPath} (fingerprint {VitCheckpoint.Fingerprint(model)})"));
            return 0;
        });
        return command;
    }
}

using System.Globalization;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Training;

namespace WhereToEdit.Engine.Jobs;

/// <summary>What `wte pretrain` is asked to do.</summary>
public sealed record PretrainJobOptions
{
    /// <summary>Folder with the Fashion-MNIST IDX files.</summary>
    public string DataPath { get; init; } = LabeledImagesIdx.DebianFashionMnist;
    /// <summary>The trained model (.safetensors, timm names + labels + preprocessing).</summary>
    public required string OutPath { get; init; }
    /// <summary>Architecture preset.</summary>
    public string Preset { get; init; } = "vit_fashion_mnist";
    /// <summary>The training options (epochs, batch, learning rate, weight decay, warm-up, seed, checkpoint interval, ...).</summary>
    public PretrainOptions Training { get; init; } = new();
    /// <summary>Use only the first N training images (0: all).</summary>
    public int TrainLimit { get; init; }
    /// <summary>Write resumable checkpoints here (every epoch and every <see cref="PretrainOptions.CheckpointEvery"/> steps).</summary>
    public string? CheckpointDir { get; init; }
    /// <summary>Continue from a checkpoint (same options).</summary>
    public string? ResumePath { get; init; }
    /// <summary>CSV log: step, epoch, loss, lr, steps/s, test accuracy.</summary>
    public string? LogPath { get; init; }
    public BackendChoice Backend { get; init; } = new();
}

/// <summary>What a pretraining run produced.</summary>
public sealed record PretrainJobResult
{
    public required string OutPath { get; init; }
    public required double TestAccuracy { get; init; }
    public required int TestImages { get; init; }
    public required int Steps { get; init; }
    public required string Fingerprint { get; init; }
}

/// <summary>
/// Trains a preset ViT on Fashion-MNIST (<see cref="Pretrainer"/>), with checkpoints, a CSV log and a final test
/// accuracy, and saves it with its preprocessing and labels.
/// </summary>
public static class PretrainJob
{
    public static PretrainJobResult Run(PretrainJobOptions o, IJobProgress? progress = null, CancellationToken cancel = default)
    {
        progress ??= NullJobProgress.Instance;
        new CommandPaths().Input(o.ResumePath, "--resume", keptByFolderOutputs: true).Input(o.DataPath, "--data").Output(o.OutPath, "--out").Output(o.LogPath, "--log")
            .OutputFolder(o.CheckpointDir, "--checkpoint-dir", Pretrainer.IsCheckpointName).Check();
        var options = o.Training;
        options.Validate();
        var train = LabeledImagesIdx.FashionMnist(o.DataPath, train: true);
        var test = LabeledImagesIdx.FashionMnist(o.DataPath, train: false);
        if (test.Names.Length != train.Names.Length || test.Count > 0 && test.Labels.Max() >= train.Names.Length)
            throw new ArgumentException($"--data {o.DataPath}: the test split's labels do not fit the {train.Names.Length} classes of the training split");
        // The head has one output per class the data names (10 for Fashion-MNIST, 40 for the orientation task).
        var config = VitConfig.Preset(o.Preset) with { NumClasses = train.Names.Length };
        if (o.TrainLimit > 0 && o.TrainLimit < train.Count)
        {
            int n = o.TrainLimit;
            train = new LabeledImages(train.Pixels.AsSpan(0, n * train.PixelsPerImage).ToArray(), train.Labels.AsSpan(0, n).ToArray(), train.Height, train.Width, train.Source + $" (first {n})", train.Names);
        }
        if (o.CheckpointDir is not null) Directory.CreateDirectory(o.CheckpointDir);

        using var backend = o.Backend.Create();
        using var model = new VitModel(backend, config);
        model.InitializeRandom(options.Seed);
        using var trainer = new Pretrainer(model, options);
        if (o.ResumePath is { } r) trainer.LoadCheckpoint(r);
        progress.Note($"pretrain {o.Preset} ({config.ParameterCount():N0} parameters) on {train.Count} images, {backend.Name}, from step {trainer.Step}");
        using var csv = o.LogPath is { } logPath ? CsvLog.Open(logPath, "step,epoch,loss,lr,steps_per_s,test_accuracy", "--log", trainer.Step > 0 ? trainer.Step : null) : null;
        double lastAccuracy = double.NaN;
        trainer.Train(train, test, p =>
        {
            if (p.TestAccuracy is double acc) lastAccuracy = acc;
            csv?.WriteRow(string.Create(CultureInfo.InvariantCulture, $"{p.Step},{p.Epoch},{p.Loss:G6},{p.LearningRate:G4},{p.StepsPerSecond:F3},{(p.TestAccuracy is double a ? a.ToString("F4", CultureInfo.InvariantCulture) : "")}"));
            var metrics = new Dictionary<string, double> { ["epoch"] = p.Epoch, ["loss"] = p.Loss, ["lr"] = p.LearningRate, ["steps_per_s"] = p.StepsPerSecond };
            if (p.TestAccuracy is double t) metrics["test_accuracy"] = t;
            progress.Report(new JobProgress("pretrain", p.Step, p.TotalSteps,
                string.Create(CultureInfo.InvariantCulture, $"epoch {p.Epoch} loss {p.Loss:F4} lr {p.LearningRate:G3}{(double.IsNaN(lastAccuracy) ? "" : $" test acc {lastAccuracy:P2}")}"),
                metrics) { Milestone = p.TestAccuracy is not null });
            cancel.ThrowIfCancellationRequested();
        }, step =>
        {
            if (o.CheckpointDir is not null) trainer.SaveCheckpoint(Path.Combine(o.CheckpointDir, $"pretrain-{step:D6}.safetensors"));
        });
        double accuracy = trainer.Evaluate(test);
        var preprocessing = new Preprocessing(ResizeMode.Direct, config.ImageSize, config.ImageSize, Interpolation.Bilinear, [options.Mean], [options.Std]);
        VitCheckpoint.Save(model, o.OutPath, preprocessing, train.Names);
        return new PretrainJobResult
        {
            OutPath = o.OutPath, TestAccuracy = accuracy, TestImages = test.Count, Steps = trainer.Step, Fingerprint = VitCheckpoint.Fingerprint(model),
        };
    }
}

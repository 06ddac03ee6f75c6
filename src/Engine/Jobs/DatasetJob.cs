using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Training;

namespace WhereToEdit.Engine.Jobs;

/// <summary>What `wte dataset orientations` is asked to write.</summary>
public sealed record DatasetJobOptions
{
    /// <summary>Folder with the Fashion-MNIST IDX files.</summary>
    public string DataPath { get; init; } = LabeledImagesIdx.DebianFashionMnist;
    /// <summary>Output folder: the four IDX files of the derived task and labels.txt.</summary>
    public required string OutDir { get; init; }
    /// <summary>Seed of every image's orientation.</summary>
    public ulong Seed { get; init; }
}

/// <summary>What was written.</summary>
public sealed record DatasetJobResult(string Folder, int Classes, int TrainImages, int TestImages, IReadOnlyList<string> Files);

/// <summary>Writes the garment × orientation task (<see cref="OrientationTask"/>) as a data folder the other jobs read.</summary>
public static class DatasetJob
{
    public static bool IsOutputName(string relative) =>
        relative is LabeledImagesIdx.NamesFile || (relative.EndsWith("-ubyte.gz", StringComparison.Ordinal) && !relative.Contains('/'));

    public static DatasetJobResult Orientations(DatasetJobOptions o, IJobProgress? progress = null)
    {
        new CommandPaths().Input(o.DataPath, "--data").OutputFolder(o.OutDir, "--out", IsOutputName).Check();
        var train = OrientationTask.Transform(LabeledImagesIdx.FashionMnist(o.DataPath, train: true), o.Seed, train: true);
        var test = OrientationTask.Transform(LabeledImagesIdx.FashionMnist(o.DataPath, train: false), o.Seed, train: false);
        progress?.Note($"orientation task: {train.Names.Length} classes, {train.Count} training and {test.Count} test images");
        var files = OrientationTask.Write(train, test, o.OutDir);
        return new DatasetJobResult(o.OutDir, train.Names.Length, train.Count, test.Count, files);
    }
}

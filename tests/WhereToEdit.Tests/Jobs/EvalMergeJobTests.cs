using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.Jobs;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Jobs;

/// <summary>`wte plot eval`: one report over the records of several `wte eval` runs.</summary>
public sealed class EvalMergeJobTests
{
    private static EditRecord R(string setting, float lr, string group, double gr, double lrBroad) => new()
    {
        Subset = "natural", Group = group, Label = 0, Method = setting.Split(' ')[0], Setting = setting, Keep = 0.1, LearningRate = lr,
        EditImages = [group + ".png"], Sr = 1, Gr = gr, Lr = 0.5, LrBroad = lrBroad, Steps = 10, FinalLoss = 0, KeptGates = 1,
        WeightsChanged = 1, WallMs = 1, WeightsBefore = "h",
    };

    private static void Write(string path, IEnumerable<EditRecord> records) =>
        File.WriteAllLines(path, records.Select(EvalReport.JsonLine));

    [Fact]
    public void Runs_merge_into_one_report_with_a_shared_point_kept_once_and_every_point_named_by_its_rate()
    {
        using var dir = new TempDir();
        string[] groups = ["a", "b", "c"];
        // A keep sweep at the run's one rate (plain names) and an lr sweep that repeats that rate.
        Write(dir.File("sweep.jsonl"), groups.SelectMany(g => new[] { R("hprd keep=0.1", 2.4e-4f, g, 0.7, 0.95), R("random keep=0.1", 2.4e-4f, g, 0.6, 0.96) }));
        Write(dir.File("lrs.jsonl"), groups.SelectMany(g => new[]
        {
            R("hprd keep=0.1 lr=0.00024", 2.4e-4f, g, 0.1, 0.1),          // the same point again: the first one is kept
            R("hprd keep=0.1 lr=0.00048", 4.8e-4f, g, 0.8, 0.93), R("random keep=0.1 lr=0.00048", 4.8e-4f, g, 0.8, 0.94),
        }));
        string before = File.ReadAllText(dir.File("sweep.jsonl"));
        var result = EvalMergeJob.Run(new EvalMergeJobOptions { EditsPaths = [dir.File("sweep.jsonl"), dir.File("lrs.jsonl")], OutDir = dir.File("out") });

        Assert.Equal(["hprd keep=0.1 lr=0.00024", "hprd keep=0.1 lr=0.00048", "random keep=0.1 lr=0.00024", "random keep=0.1 lr=0.00048"],
            result.Summary.Select(r => r.Setting).Order(StringComparer.Ordinal));
        Assert.Equal(0.7, result.Summary.Single(r => r.Setting == "hprd keep=0.1 lr=0.00024").Gr, 12);
        Assert.Equal((3, 4, 3), (result.Edits, result.Settings, result.Groups));
        Assert.Equal(12, File.ReadLines(result.EditsPath).Count());
        Assert.Equal(2, result.LearnedVsRandom.Count);                  // paired at each rate
        Assert.Equal(0.1, result.LearnedVsRandom.Single(d => d.Setting.EndsWith("0.00024", StringComparison.Ordinal)).Gr, 12);
        Assert.Contains("## Learned vs random masks", File.ReadAllText(result.SummaryPath));
        Assert.True(File.Exists(Path.Combine(result.PlotsFolder, "pareto_broad_natural.png")));
        Assert.Equal(before, File.ReadAllText(dir.File("sweep.jsonl")));   // inputs untouched
    }

    [Fact]
    public void Bad_records_are_refused_by_file_and_line_and_nothing_is_written()
    {
        using var dir = new TempDir();
        Write(dir.File("ok.jsonl"), [R("hprd keep=0.1", 2.4e-4f, "a", 0.5, 0.9)]);
        File.WriteAllText(dir.File("bad.jsonl"), EvalReport.JsonLine(R("hprd keep=0.1", 2.4e-4f, "a", 0.5, 0.9)) + "\n{not json\n");
        var e = Assert.Throws<InvalidDataException>(() => EvalMergeJob.Run(new EvalMergeJobOptions { EditsPaths = [dir.File("bad.jsonl")], OutDir = dir.File("out") }));
        Assert.Contains("bad.jsonl: line 2", e.Message);
        Assert.False(Directory.Exists(dir.File("out")));
        // A record from a wte that did not write the edit's learning rate cannot be placed on a curve.
        File.WriteAllText(dir.File("old.jsonl"), EvalReport.JsonLine(R("hprd keep=0.1", 0, "a", 0.5, 0.9)).Replace("\"learning_rate\":0,", "") + "\n");
        e = Assert.Throws<InvalidDataException>(() => EvalMergeJob.Run(new EvalMergeJobOptions { EditsPaths = [dir.File("old.jsonl")], OutDir = dir.File("out") }));
        Assert.Contains("old.jsonl: line 1 has no learning_rate", e.Message);
        Assert.False(Directory.Exists(dir.File("out")));
        // The output may not be one of the inputs' folders' files.
        Assert.ThrowsAny<Exception>(() => EvalMergeJob.Run(new EvalMergeJobOptions { EditsPaths = [dir.File("ok.jsonl")], OutDir = dir.File("ok.jsonl") }));
        Assert.True(File.Exists(dir.File("ok.jsonl")));
    }
}

using System.Text.Json;
using System.Text.Json.Serialization;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.IO;

namespace WhereToEdit.Engine.Jobs;

/// <summary>What `wte plot eval` is asked to do: the edit records of one or more `wte eval` runs, and where the report goes.</summary>
public sealed record EvalMergeJobOptions
{
    /// <summary>edits.jsonl files written by `wte eval` (e.g. an edit-lr sweep run beside a keep / coefficient sweep, or several seeds).</summary>
    public required IReadOnlyList<string> EditsPaths { get; init; }
    /// <summary>Output folder: the merged edits.jsonl, summary.md, plots/.</summary>
    public required string OutDir { get; init; }
    public string Title { get; init; } = "wte eval (merged)";
    /// <summary>Seeds the resampling intervals of the front gaps.</summary>
    public ulong Seed { get; init; }
}

/// <summary>
/// One report over several evaluation runs: their records are merged (a record repeating another's subset, group, setting,
/// learning rate and edit images, as a shared point of two sweeps does, is kept once: the first) and summarised exactly as
/// `wte eval` does (<see cref="EvaluateJob.WriteReport"/>), so curves that came from separate runs share one plot and one
/// front analysis. Mask IoU needs the masks, which edits.jsonl does not hold: it is left out.
/// </summary>
public static class EvalMergeJob
{
    private static readonly JsonSerializerOptions Json = new() { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    public static EvaluateJobResult Run(EvalMergeJobOptions o, IJobProgress? progress = null)
    {
        progress ??= NullJobProgress.Instance;
        if (o.EditsPaths.Count == 0) throw new ArgumentException("give at least one edits.jsonl (written by `wte eval`)");
        var paths = new CommandPaths();
        foreach (string path in o.EditsPaths) paths.Input(path, "EDITS");
        paths.OutputFolder(o.OutDir, "--out", EvalReport.IsOutputName).Check();

        var records = new List<EditRecord>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        int repeated = 0;
        foreach (string path in o.EditsPaths)
        {
            int line = 0;
            foreach (string text in File.ReadLines(path))
            {
                line++;
                if (string.IsNullOrWhiteSpace(text)) continue;
                EditRecord record;
                try { record = JsonSerializer.Deserialize<EditRecord>(text, Json) ?? throw new JsonException("null"); }
                catch (JsonException e) { throw new InvalidDataException($"{path}: line {line} is not an edit record of `wte eval` ({e.Message})"); }
                if (!(record.LearningRate > 0))
                    throw new InvalidDataException($"{path}: line {line} has no learning_rate (written by a wte from before the field existed): its points cannot be placed on a learning-rate curve");
                string key = string.Join("\n", record.Subset, record.Group, EvalSetting.WithoutRate(record.Setting), record.LearningRate.ToString("R"), string.Join("\n", record.EditImages));
                if (seen.Add(key)) records.Add(record);
                else repeated++;
            }
        }
        if (records.Count == 0) throw new InvalidDataException($"{string.Join(", ", o.EditsPaths)}: no edit records");
        // The same point can carry two names (plain in one run, "… lr=…" in an lr sweep): name every record by its rate
        // when the merged runs differ in rate, so each point is one setting.
        bool rates = records.Select(r => r.LearningRate).Distinct().Count() > 1;
        if (rates)
            records = records.Select(r => EvalSetting.WithoutRate(r.Setting) != r.Setting ? r
                : r with { Setting = r.Setting + EvalSetting.RateSuffix(r.LearningRate) }).ToList();
        if (repeated > 0) progress.Note($"{repeated} record(s) repeated an earlier one (same subset, group, setting, rate and images) and were kept once");

        using var outFolder = new OutputFolder(o.OutDir);
        string jsonl = Path.Combine(o.OutDir, "edits.jsonl");
        AtomicFile.WriteAllText(jsonl, string.Concat(records.Select(r => EvalReport.JsonLine(r) + "\n")));
        var report = EvaluateJob.WriteReport(o.OutDir, o.Title,
            $"Merged from {string.Join(", ", o.EditsPaths.Select(p => $"`{p}`"))}: {records.Count} edit records. ± : 95 % confidence half-width over edits.",
            records, o.Seed);
        outFolder.Commit();
        return report with
        {
            Groups = records.Select(r => (r.Subset, r.Group)).Distinct().Count(),
            Edits = records.GroupBy(r => (r.Subset, r.Setting)).Max(g => g.Count()),
            Settings = records.Select(r => r.Setting).Distinct().Count(),
            EditsPath = jsonl,
        };
    }
}

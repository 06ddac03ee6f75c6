using System.Globalization;
using System.Text;
using WhereToEdit.Engine.Distributed;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Engine.Jobs;

/// <summary>What `wte eval` (and `wte demo`) is asked to do: a benchmark, the sweep, the protocol's options, the output folder.</summary>
public sealed record EvaluateJobOptions
{
    /// <summary>The ORIGINAL model (file or hub folder).</summary>
    public required string ModelPath { get; init; }
    /// <summary>The hypernetwork (needed for hprd).</summary>
    public string? HypernetPath { get; init; }
    /// <summary>A benchmark manifest.json (or its folder); or else <see cref="FailuresPath"/> and <see cref="LocalityPath"/>.</summary>
    public string? BenchmarkPath { get; init; }
    /// <summary>The paper's layout: a folder of &lt;class index&gt;_&lt;name&gt;/ failure folders.</summary>
    public string? FailuresPath { get; init; }
    /// <summary>With <see cref="FailuresPath"/>: a flat folder of locality images.</summary>
    public string? LocalityPath { get; init; }
    /// <summary>Methods to run: hprd, ft-l1, ft-l2, random.</summary>
    public IReadOnlyList<string> Methods { get; init; } = ["hprd", "ft-l1", "ft-l2", "random"];
    /// <summary>Keep fractions swept for hprd and random (the paper's).</summary>
    public IReadOnlyList<double> Keeps { get; init; } = [0.75, 0.5, 0.25, 0.1, 0.05];
    /// <summary>FT-L1/L2 coefficients swept (the paper's).</summary>
    public IReadOnlyList<double> Coefficients { get; init; } = [0.1, 0.05, 0.025, 0.01, 0.005, 0.001, 0];
    /// <summary>The protocol's options: images per edit, learning rate, step cap, GR formula, edits per group, seed.</summary>
    public EvalOptions Protocol { get; init; } = new();
    /// <summary>Subsets to run (null: all).</summary>
    public IReadOnlyList<string>? Subsets { get; init; }
    /// <summary>Output folder: edits.jsonl, summary.md, plots/.</summary>
    public required string OutDir { get; init; }
    /// <summary>The heading of summary.md and the plots.</summary>
    public string Title { get; init; } = "wte eval";
    public BackendChoice Backend { get; init; } = new();
    /// <summary>Use at most this many images of the benchmark's broad locality set (stratified; 0 = all).</summary>
    public int BroadLimit { get; init; }
    /// <summary>
    /// Edit learning rates swept for every method (each method's GR–LR result becomes a curve); empty: the one rate of
    /// <see cref="EvalOptions.LearningRate"/>. A single rate here is the same as setting that one.
    /// </summary>
    public IReadOnlyList<double> LearningRates { get; init; } = [];
    /// <summary>An explicit list of settings instead of the methods × keeps / coefficients grid (the demo's reduced sweep).</summary>
    public IReadOnlyList<EvalSetting>? ExplicitSettings { get; init; }

    /// <summary>The sweep: for each method in order, each keep fraction (hprd, random) or coefficient (FT).</summary>
    public List<EvalSetting> Settings()
    {
        if (ExplicitSettings is { Count: > 0 } given) return given.ToList();
        var methods = Methods.Select(EditMethods.Parse).Distinct().ToList();
        foreach (double keep in Keeps) if (!(keep > 0 && keep <= 1)) throw new ArgumentException($"--keeps: {keep} is outside (0, 1]");
        foreach (double c in Coefficients) if (c < 0) throw new ArgumentException($"--coefs: {c} is negative");
        if (Keeps.Count == 0) throw new ArgumentException("--keeps: empty list");
        if (Coefficients.Count == 0) throw new ArgumentException("--coefs: empty list");
        foreach (double lr in LearningRates)
            if (!(lr > 0) || double.IsInfinity(lr)) throw new ArgumentException($"--lr: {lr.ToString(CultureInfo.InvariantCulture)} is not a positive number");
        float?[] rates = LearningRates.Count > 1 ? LearningRates.Distinct().Select(lr => (float?)(float)lr).ToArray() : [null];
        return methods.SelectMany(m => (m.IsFineTuning()
            ? Coefficients.Select(c => new EvalSetting(m, 1, (float)c))
            : Keeps.Select(k => new EvalSetting(m, k, 0)))
            .SelectMany(s => rates.Select(lr => s with { LearningRate = lr }))).ToList();
    }
}

/// <summary>What an evaluation wrote and measured.</summary>
public sealed record EvaluateJobResult
{
    /// <summary>Mean SR, GR, LR and steps per (subset, setting).</summary>
    public required IReadOnlyList<MetricRow> Summary { get; init; }
    /// <summary>HPRD mask IoU within vs across groups.</summary>
    public required IReadOnlyList<MaskOverlap> Overlaps { get; init; }
    /// <summary>Every HPRD setting minus the random mask of the same keep, paired over the same edits.</summary>
    public IReadOnlyList<PairedDifference> LearnedVsRandom { get; init; } = [];
    /// <summary>HPRD and random masks against the fine-tuning front, HPRD against the random-mask front, at the same LR.</summary>
    public IReadOnlyList<FrontGap> FrontGaps { get; init; } = [];
    public required int Groups { get; init; }
    /// <summary>Edits per setting.</summary>
    public required int Edits { get; init; }
    public required int Settings { get; init; }
    public required int LocalityImages { get; init; }
    public required string EditsPath { get; init; }
    public required string SummaryPath { get; init; }
    public required string PlotsFolder { get; init; }
    public required int PlotFiles { get; init; }
}

/// <summary>
/// The paper's single-edit protocol over a benchmark (method.md §7): loads model, hypernetwork and benchmark, runs every
/// setting with <see cref="EditEvaluator"/>, writes edits.jsonl (one record per edit, as it goes), summary.md and the
/// Pareto plots.
/// </summary>
public static class EvaluateJob
{
    /// <summary>
    /// Under MPI (<paramref name="world"/> of several ranks) the edits are shared out by cost; rank 0 gathers every record and
    /// alone writes and reports; the other ranks return null after their share.
    /// </summary>
    public static EvaluateJobResult? Run(EvaluateJobOptions o, IJobProgress? progress = null, CancellationToken cancel = default, ICommunicator? world = null)
    {
        world ??= SingleProcess.Instance;
        progress = world.IsRoot() ? progress ?? NullJobProgress.Instance : NullJobProgress.Instance;
        var settings = o.Settings();
        var p = o.LearningRates.Count == 1 ? o.Protocol with { LearningRate = (float)o.LearningRates[0] } : o.Protocol;
        if (p.ImagesPerEdit is < 1 or > 3) throw new ArgumentException($"--images-per-edit {p.ImagesPerEdit}: must be 1, 2 or 3");
        BenchmarkManifest manifest = o.BenchmarkPath is { } b
            ? BenchmarkManifest.Read(b)
            : o.FailuresPath is { } f
                ? BenchmarkManifest.FromPaperLayout(f, o.LocalityPath ?? throw new ArgumentException("--failures needs --locality"))
                : throw new ArgumentException("give --benchmark MANIFEST or --failures DIR --locality DIR");
        new CommandPaths().Input(o.ModelPath, "--model").Input(o.HypernetPath, "--hypernet").Inputs(manifest.InputFiles(), "--benchmark")
            .OutputFolder(o.OutDir, "--out", EvalReport.IsOutputName).Check();
        var loaded = ModelFolder.Load(o.ModelPath);
        if (settings.Any(s => s.Method == EditMethod.Hprd) && o.HypernetPath is null)
            throw new ArgumentException("the hprd method needs --hypernet");
        if (o.Subsets is { } wanted)
            foreach (string name in wanted) _ = manifest.Subset(name);
        var loader = new ImageLoader();
        float[] Load(string relative) => loader.Load(manifest.ImagePath(relative), loaded.Preprocessing);
        var groups = manifest.Subsets.Where(s => o.Subsets is null || o.Subsets.Contains(s.Name))
            .SelectMany(s => s.Groups.Select(g => new EvalGroup(s.Name, g.Name, g.Label, g.Images, g.Images.Select(Load).ToList()))).ToList();
        var locality = manifest.Locality.Images.Select(Load).ToList();
        if (o.BroadLimit < 0) throw new ArgumentException($"--broad-images {o.BroadLimit}: must be 0 (all) or positive");
        var broad = BroadLocality.Load(manifest.Folder, loaded.Preprocessing, o.BroadLimit);
        cancel.ThrowIfCancellationRequested();

        using var backend = (o.Backend with { Threads = world.ThreadsPerRank(o.Backend.Threads) }).Create();
        using var model = VitCheckpoint.Load(backend, loaded);
        if (float.IsNaN(p.LearningRate)) p = p with { LearningRate = (float)ScalingRules.EditLearningRate(model.Config.EmbedDim) };
        if (!(p.LearningRate > 0) || float.IsInfinity(p.LearningRate))
            throw new ArgumentException($"--lr {p.LearningRate.ToString(CultureInfo.InvariantCulture)}: must be a positive number");
        if (manifest.BaseModelFingerprint is { } fp && !string.Equals(fp, VitCheckpoint.Fingerprint(model), StringComparison.OrdinalIgnoreCase))
            progress.Note($"note: the benchmark was built for model {fp}; evaluating {o.ModelPath} (its failures are re-checked: only images this model gets wrong are edited)");
        using var loadedNet = o.HypernetPath is { } hp ? HypernetFile.Load(backend, hp, model) : null;
        var target = loadedNet is not null ? new EditTarget(model.Config, loadedNet.EditBlocks) : EditTarget.Default(model.Config);
        using var evaluator = new EditEvaluator(model, loadedNet?.Network, target, locality, broad);
        int edits = evaluator.CountEdits(groups, p);
        int total = edits * settings.Count;
        progress.Note($"{o.Title}: {groups.Count} groups, {edits} edits × {settings.Count} settings = {total} edits; locality set {locality.Count} images{(broad is null ? "" : $", broad locality set {broad.Count}")}; {backend.Name}");
        if (!world.IsRoot())
        {
            evaluator.Run(groups, settings, p, world);   // its share of the edits, sent to rank 0
            return null;
        }
        using var outFolder = new OutputFolder(o.OutDir);   // removed again if this run fails (when this run created it)
        string jsonl = Path.Combine(o.OutDir, "edits.jsonl");
        List<EditRecord> records;
        using (var jsonlFile = new AtomicWrite(jsonl))   // a failed or cancelled run leaves no half-written record file
        {
            using (var writer = new StreamWriter(jsonlFile.Stream, leaveOpen: true))
            {
                int done = 0;
                records = evaluator.Run(groups, settings, p, world, r =>
                {
                    writer.WriteLine(EvalReport.JsonLine(r));
                    done++;
                    progress.Report(new JobProgress("edits", done, total, $"{r.Subset}/{r.Group} {r.Setting}",
                        new Dictionary<string, double> { ["sr"] = r.Sr, ["gr"] = r.Gr, ["lr"] = r.Lr, ["steps"] = r.Steps }));
                    cancel.ThrowIfCancellationRequested();
                });
            }
            jsonlFile.Commit();
        }

        var report = WriteReport(o.OutDir, o.Title,
            $"Model `{o.ModelPath}`, hypernetwork `{o.HypernetPath ?? "none"}`, benchmark `{manifest.Name}`; " +
            $"{p.ImagesPerEdit} image(s) per edit, lr {(o.LearningRates.Count > 1 ? string.Join(", ", o.LearningRates.Select(r => r.ToString(CultureInfo.InvariantCulture))) + " (swept)" : p.LearningRate.ToString(CultureInfo.InvariantCulture))}, " +
            $"≤ {p.MaxSteps} steps, GR formula {p.GrFormula.ToString().ToLowerInvariant()}, locality set {locality.Count}" +
            (broad is null ? "." : $", broad locality set {broad.Count} (correctly classified test images, every class). ± : 95 % confidence half-width over edits."),
            records, p.Seed);
        outFolder.Commit();
        return report with { Groups = groups.Count, Edits = edits, Settings = settings.Count, LocalityImages = locality.Count, EditsPath = jsonl };
    }

    /// <summary>
    /// summary.md (overall and per-group tables, the plots, mask IoU, HPRD − random paired, the front gaps) and the
    /// Pareto plots of a set of edit records, in <paramref name="outDir"/>; the counts of the result are left for the caller.
    /// </summary>
    internal static EvaluateJobResult WriteReport(string outDir, string title, string header, IReadOnlyList<EditRecord> records, ulong seed)
    {
        var summary = EvalReport.Summarise(records);
        var perGroup = EvalReport.Summarise(records, perGroup: true);
        var overlaps = EvalReport.Overlaps(records);
        var learnedVsRandom = EvalReport.LearnedVsRandom(records);
        var frontGaps = EvalReport.FrontGaps(records, seed: seed);
        string plotsFolder = Path.Combine(outDir, "plots");
        var plots = EvalReport.ParetoPlots(summary, plotsFolder, title);
        var md = new StringBuilder();
        md.AppendLine($"# {title}");
        md.AppendLine();
        md.AppendLine(header);
        md.AppendLine();
        md.AppendLine("## Overall (mean over edits)");
        md.AppendLine();
        md.AppendLine(EvalReport.MarkdownTable(summary));
        md.AppendLine("## GR against LR");
        md.AppendLine();
        md.AppendLine("One line per method through its settings; the dashed line is the Pareto front, its points labelled with their settings.");
        md.AppendLine();
        foreach (string png in plots.Where(f => f.EndsWith(".png", StringComparison.Ordinal)))
        {
            string link = Path.GetRelativePath(outDir, png).Replace('\\', '/');
            md.AppendLine($"![{Path.GetFileNameWithoutExtension(png)}]({link})");
        }
        md.AppendLine();
        if (overlaps.Count > 0)
        {
            md.AppendLine("## Mask overlap (HPRD)");
            md.AppendLine();
            md.AppendLine(EvalReport.OverlapTable(overlaps));
        }
        if (learnedVsRandom.Count > 0)
        {
            md.AppendLine("## Learned vs random masks (HPRD − random at the same keep, paired over the same edits)");
            md.AppendLine();
            md.AppendLine(EvalReport.PairedTable(learnedVsRandom));
        }
        if (frontGaps.Count > 0)
        {
            md.AppendLine("## Against the fronts (GR above or below a method family's Pareto front at the same LR)");
            md.AppendLine();
            md.AppendLine("The front of fine-tuning (every FT-L1/FT-L2 setting of the run) or of random masks (every keep), taken as straight " +
                          "lines between its points; a setting outside the front's LR range has no gap (–). Intervals: 1000 resamples of the edits.");
            md.AppendLine();
            md.AppendLine(EvalReport.FrontGapTable(frontGaps));
        }
        md.AppendLine("## Per group");
        md.AppendLine();
        md.AppendLine(EvalReport.MarkdownTable(perGroup, withGroup: true));
        string summaryPath = Path.Combine(outDir, "summary.md");
        AtomicFile.WriteAllText(summaryPath, md.ToString());
        return new EvaluateJobResult
        {
            Summary = summary, Overlaps = overlaps, LearnedVsRandom = learnedVsRandom, FrontGaps = frontGaps, Groups = 0, Edits = 0, Settings = 0, LocalityImages = 0,
            EditsPath = "", SummaryPath = summaryPath, PlotsFolder = plotsFolder, PlotFiles = plots.Count,
        };
    }

    /// <summary>
    /// The parsed name of a GR formula: corrected (F_g minus the edit images) or reference ((correct − 1)/N).
    /// </summary>
    public static GrFormula ParseGrFormula(string text) => text.Trim().ToLowerInvariant() switch
    {
        "corrected" => GrFormula.Corrected,
        "reference" => GrFormula.Reference,
        var other => throw new ArgumentException($"--gr-formula '{other}': expected corrected or reference"),
    };
}

using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Serialization;
using WhereToEdit.Engine.Distributed;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.MetaTraining;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Engine.Jobs;

/// <summary>
/// Meta-training knobs that were given; null = the default (fresh run) or the checkpoint's value (resume, where only
/// <see cref="Iterations"/> and <see cref="CheckpointEvery"/> may differ from the checkpoint's).
/// </summary>
public sealed record MetaTrainOverrides
{
    public int? Iterations { get; init; }
    public int? Batch { get; init; }
    public int? OuterSteps { get; init; }
    public int? InnerSteps { get; init; }
    public float? MaskLr { get; init; }
    public float? InnerLr { get; init; }
    public float? SparsityWeight { get; init; }
    /// <summary>How λ reaches each gate: per-gate or reference-width (docs/SCALING.md).</summary>
    public string? SparsityNorm { get; init; }
    public double? CropScaleMin { get; init; }
    public double? CropScaleMax { get; init; }
    public int? DiagnosticsEvery { get; init; }
    public float? Temperature { get; init; }
    public double? HypernetLr { get; init; }
    public double? CosineTMax { get; init; }
    public int? StageBSteps { get; init; }
    public int? HypernetDepth { get; init; }
    public ulong? Seed { get; init; }
    public int[]? EditBlocks { get; init; }
    /// <summary>The reference's CutMix corner bounds on or off; null keeps the base value (on for fresh runs).</summary>
    public bool? CutMixReferenceBounds { get; init; }
    public int? CheckpointEvery { get; init; }

    public MetaTrainOptions Apply(MetaTrainOptions o) => o with
    {
        Iterations = Iterations ?? o.Iterations,
        Batch = Batch ?? o.Batch,
        OuterSteps = OuterSteps ?? o.OuterSteps,
        InnerSteps = InnerSteps ?? o.InnerSteps,
        MaskLr = MaskLr ?? o.MaskLr,
        InnerLr = InnerLr ?? o.InnerLr,
        SparsityWeight = SparsityWeight ?? o.SparsityWeight,
        SparsityNorm = SparsityNorm ?? o.SparsityNorm,
        CropScaleMin = CropScaleMin ?? o.CropScaleMin,
        CropScaleMax = CropScaleMax ?? o.CropScaleMax,
        DiagnosticsEvery = DiagnosticsEvery ?? o.DiagnosticsEvery,
        Temperature = Temperature ?? o.Temperature,
        HypernetLr = HypernetLr ?? o.HypernetLr,
        CosineTMax = CosineTMax ?? o.CosineTMax,
        StageBSteps = StageBSteps ?? o.StageBSteps,
        HypernetDepth = HypernetDepth ?? o.HypernetDepth,
        Seed = Seed ?? o.Seed,
        EditBlocks = EditBlocks ?? o.EditBlocks,
        CutMixReferenceBounds = CutMixReferenceBounds ?? o.CutMixReferenceBounds,
        CheckpointEvery = CheckpointEvery ?? o.CheckpointEvery,
    };
}

/// <summary>What `wte meta-train` is asked to do.</summary>
public sealed record MetaTrainJobOptions
{
    /// <summary>The base ViT (file or hub folder); with <see cref="Bench"/> also a preset name (random weights).</summary>
    public required string ModelPath { get; init; }
    /// <summary>A folder of training images (ImageFolder or flat); or else <see cref="IdxPath"/>.</summary>
    public string? DataPath { get; init; }
    /// <summary>An IDX images file, gzipped or not.</summary>
    public string? IdxPath { get; init; }
    /// <summary>Where the trained hypernetwork goes (optional with <see cref="Bench"/>).</summary>
    public string? OutPath { get; init; }
    public string? CheckpointDir { get; init; }
    public string? ResumePath { get; init; }
    /// <summary>CSV log, one line per iteration (appended to when resuming).</summary>
    public string? LogPath { get; init; }
    /// <summary>Time iterations (data optional: noise images; output optional; 1 iteration by default).</summary>
    public bool Bench { get; init; }
    public MetaTrainOverrides Overrides { get; init; } = new();
    public BackendChoice Backend { get; init; } = new();
}

/// <summary>`wte meta-train --bench`: seconds per iteration and its parts.</summary>
public sealed record MetaTrainTiming
{
    [JsonPropertyName("model")] public required string Model { get; init; }
    [JsonPropertyName("backend")] public required string Backend { get; init; }
    [JsonPropertyName("threads")] public required int Threads { get; init; }
    [JsonPropertyName("ranks")] public int Ranks { get; init; } = 1;
    [JsonPropertyName("batch")] public required int Batch { get; init; }
    [JsonPropertyName("outer_steps")] public required int OuterSteps { get; init; }
    [JsonPropertyName("inner_steps")] public required int InnerSteps { get; init; }
    [JsonPropertyName("edit_blocks")] public required int[] EditBlocks { get; init; }
    [JsonPropertyName("blocks_per_pass")] public required int BlocksPerPass { get; init; }
    [JsonPropertyName("batched_passes_per_iteration")] public required int BatchedPassesPerIteration { get; init; }
    [JsonPropertyName("single_image_passes_per_iteration")] public required int SingleImagePassesPerIteration { get; init; }
    [JsonPropertyName("iterations")] public required int Iterations { get; init; }
    [JsonPropertyName("seconds_per_iteration")] public required double SecondsPerIteration { get; init; }
    [JsonPropertyName("first_iteration_s")] public required double FirstIterationSeconds { get; init; }
    /// <summary>Process CPU time per iteration (all threads; includes spin-waits).</summary>
    [JsonPropertyName("cpu_seconds_per_iteration")] public required double CpuSecondsPerIteration { get; init; }
    [JsonPropertyName("data_s")] public required double DataSeconds { get; init; }
    [JsonPropertyName("stage_a_s")] public required double StageASeconds { get; init; }
    [JsonPropertyName("stage_b_s")] public required double StageBSeconds { get; init; }
}

/// <summary>What a meta-training run did.</summary>
public sealed record MetaTrainJobResult
{
    /// <summary>The hypernetwork file written (null: none asked for).</summary>
    public string? OutPath { get; init; }
    /// <summary>Iterations completed (including those before a resume).</summary>
    public required int Iteration { get; init; }
    /// <summary>Iterations this run did.</summary>
    public required int IterationsRun { get; init; }
    public required string BaseFingerprint { get; init; }
    /// <summary>The options in force (a resumed run's are the checkpoint's).</summary>
    public required MetaTrainOptions Options { get; init; }
    public required int[] EditBlocks { get; init; }
    /// <summary>The last iteration's numbers (null when none ran).</summary>
    public IterationStats? Last { get; init; }
    /// <summary>With <see cref="MetaTrainJobOptions.Bench"/>: the timing record.</summary>
    public MetaTrainTiming? Timing { get; init; }
}

/// <summary>
/// Meta-trains the mask hypernetwork (method.md §4): opens the data (before the model, so a bad path fails fast), loads
/// the base model (or a preset with random weights for timing), starts or resumes a <see cref="MetaTrainer"/>, writes
/// the CSV log, checkpoints and the hypernetwork file.
/// </summary>
public static class MetaTrainJob
{
    /// <summary>
    /// Under MPI (<paramref name="world"/> of several ranks) each rank runs stage A for its slice of every batch; rank 0
    /// alone writes the log, checkpoints and the hypernetwork and reports progress.
    /// </summary>
    public static MetaTrainJobResult Run(MetaTrainJobOptions o, IJobProgress? progress = null, CancellationToken cancel = default, ICommunicator? world = null)
    {
        world ??= SingleProcess.Instance;
        progress = world.IsRoot() ? progress ?? NullJobProgress.Instance : NullJobProgress.Instance;
        if (o.DataPath is not null && o.IdxPath is not null) throw new ArgumentException("give either --data FOLDER or --idx IMAGES, not both");
        if (o.DataPath is null && o.IdxPath is null && !o.Bench) throw new ArgumentException("meta-train needs training images: --data FOLDER or --idx IMAGES");
        if (o.OutPath is null && !o.Bench) throw new ArgumentException("--out HYPERNET is required (where the trained hypernetwork goes)");
        if (o.ResumePath is not null && !File.Exists(o.ResumePath)) throw new FileNotFoundException($"--resume {o.ResumePath}: no such file");
        new CommandPaths().Input(o.Bench && VitConfig.Presets.ContainsKey(o.ModelPath) && !Path.Exists(o.ModelPath) ? null : o.ModelPath, "MODEL")
            .Input(o.DataPath, "--data").Input(o.IdxPath, "--idx").Input(o.ResumePath, "--resume", keptByFolderOutputs: true)
            .Output(o.OutPath, "--out").Output(o.LogPath, "--log").OutputFolder(o.CheckpointDir, "--checkpoint-dir", MetaTrainer.IsCheckpointName).Check();
        var defaults = new MetaTrainOptions { Iterations = o.Bench ? 1 : new MetaTrainOptions().Iterations };
        var fresh = o.Overrides.Apply(defaults).Validate();   // option errors before any loading

        IImageSource source = o.DataPath is not null ? new FolderImageSource(o.DataPath)
            : o.IdxPath is not null ? new IdxImageSource(IdxReader.ReadImages(o.IdxPath))
            : new SyntheticImageSource(Math.Max(64, 2 * fresh.Batch), 256, 256);

        using var backend = (o.Backend with { Threads = world.ThreadsPerRank(o.Backend.Threads) }).Create();
        float[] mean, std;
        VitModel vit;
        if (o.Bench && !File.Exists(o.ModelPath) && !Directory.Exists(o.ModelPath) && VitConfig.Presets.ContainsKey(o.ModelPath))
        {
            vit = new VitModel(backend, VitConfig.Preset(o.ModelPath));
            vit.InitializeRandom(fresh.Seed);
            mean = Enumerable.Repeat(0.5f, vit.Config.InChans).ToArray();
            std = mean.ToArray();
        }
        else
        {
            var loaded = ModelFolder.Load(o.ModelPath);
            vit = VitCheckpoint.Load(backend, loaded);
            mean = loaded.Preprocessing.Mean;
            std = loaded.Preprocessing.Std;
        }
        using var _ = vit;
        // A fresh run's defaults follow the width rules (docs/SCALING.md); explicit options win.
        fresh = o.Overrides.Apply(MetaTrainOptions.ForWidth(vit.Config.EmbedDim) with { Iterations = defaults.Iterations, DiagnosticsEvery = o.Bench ? 0 : 25 }).Validate();
        if (o.OutPath is not null) OutputPaths.CreateParentFolder(o.OutPath, "--out");
        if (o.LogPath is not null) OutputPaths.CreateParentFolder(o.LogPath, "--log");

        using var trainer = o.ResumePath is not null
            ? MetaTrainer.Resume(vit, mean, std, source, o.ResumePath, o.Overrides.Apply, communicator: world)
            : new MetaTrainer(vit, mean, std, source, fresh, communicator: world);
        var options = trainer.Options;
        using var csv = o.LogPath is null || !world.IsRoot() ? null : CsvLog.Open(o.LogPath, IterationStats.CsvHeader, "--log", o.ResumePath is not null ? trainer.Iteration : null);
        string ranks = world.Size > 1 ? $" × {world.Size} MPI ranks" : "";
        var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
        var all = new List<IterationStats>();
        progress.Note($"meta-train: {source.Description}; blocks [{string.Join(",", trainer.Target.Blocks)}], B {options.Batch}, " +
                      $"{options.OuterSteps}×({options.InnerSteps}+1) batched passes per iteration; iterations {trainer.Iteration + 1}..{options.Iterations}; {backend.Name}{ranks}");
        progress.Note(string.Create(CultureInfo.InvariantCulture,
            $"meta-train: inner lr {options.InnerLr:G4}, hypernetwork lr {options.HypernetLr:G4}, λ {options.SparsityWeight:G4} {options.SparsityNorm}, crop scale {options.CropScaleMin:G3}–{options.CropScaleMax:G3}, CutMix reference bounds {(options.CutMixReferenceBounds ? "on" : "off")}, diagnostics every {options.DiagnosticsEvery}"));
        bool warned = false;
        trainer.Run(o.CheckpointDir, stats =>
        {
            all.Add(stats);
            if (stats.ProbeIoUAcross is { } probe)
            {
                // A fresh hypernetwork is input-independent too: judge it once it had time to learn.
                bool flat = probe > MetaDiagnostics.InputIndependentIoU && stats.Iteration >= MetaDiagnostics.WarnAfterIterations;
                if (flat && !warned)
                    progress.Note(string.Create(CultureInfo.InvariantCulture,
                        $"meta-train: warning: at iteration {stats.Iteration} the hypernetwork gives nearly the same mask for every input (probe images' top-10 % masks overlap {probe:0.000} IoU; two random masks: 0.053). Its masks no longer depend on the input; see docs/SCALING.md."));
                warned = flat;
            }
            csv?.WriteRow(stats.ToCsv());
            progress.Report(new JobProgress("meta-train", stats.Iteration, options.Iterations,
                string.Create(CultureInfo.InvariantCulture, $"outer KL {stats.OuterKl:G4} (−{100 * stats.KlReduction:0.0}%)  mask sparsity {100 * stats.MaskSparsity:0.00}%  bce {stats.BceLast:G4}") +
                (stats.LabelIoUSame is { } same && stats.ProbeIoUAcross is { } probeIoU
                    ? string.Create(CultureInfo.InvariantCulture, $"  labels IoU same {same:0.000} / across {stats.LabelIoUAcross:0.000}  probe masks IoU across {probeIoU:0.000}") : "") + ranks,
                new Dictionary<string, double>
                {
                    ["outer_kl"] = stats.OuterKl, ["mask_sparsity"] = stats.MaskSparsity, ["bce_last"] = stats.BceLast,
                    ["lr"] = stats.LearningRate, ["seconds"] = stats.Seconds,
                }));
        }, cancel);
        double cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpuBefore).TotalSeconds;
        if (o.OutPath is not null && world.IsRoot()) trainer.SaveHypernet(o.OutPath);

        MetaTrainTiming? timing = null;
        if (o.Bench)
        {
            int passes = options.OuterSteps * (options.InnerSteps + 1);
            timing = new MetaTrainTiming
            {
                Model = o.ModelPath, Backend = backend.Name, Threads = backend.Threads, Ranks = world.Size, Batch = options.Batch, OuterSteps = options.OuterSteps,
                InnerSteps = options.InnerSteps, EditBlocks = trainer.Target.Blocks.ToArray(), BlocksPerPass = vit.Config.Depth - trainer.Target.FirstBlock,
                BatchedPassesPerIteration = passes, SingleImagePassesPerIteration = passes * options.Batch, Iterations = all.Count,
                SecondsPerIteration = all.Count == 0 ? 0 : all.Average(s => s.Seconds),
                FirstIterationSeconds = all.Count == 0 ? 0 : all[0].Seconds,
                CpuSecondsPerIteration = all.Count == 0 ? 0 : cpuSeconds / all.Count,
                DataSeconds = all.Count == 0 ? 0 : all.Average(s => s.DataSeconds),
                StageASeconds = all.Count == 0 ? 0 : all.Average(s => s.StageASeconds),
                StageBSeconds = all.Count == 0 ? 0 : all.Average(s => s.StageBSeconds),
            };
        }
        return new MetaTrainJobResult
        {
            OutPath = o.OutPath, Iteration = trainer.Iteration, IterationsRun = all.Count, BaseFingerprint = trainer.BaseFingerprint,
            Options = options, EditBlocks = trainer.Target.Blocks.ToArray(), Last = all.Count > 0 ? all[^1] : null, Timing = timing,
        };
    }

}

using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.MetaTraining;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    /// <summary>The meta-training knobs; null = the default (fresh run) or the checkpoint's value (resume).</summary>
    private sealed class MetaKnobs
    {
        public readonly Option<int?> Iterations = new("--iterations") { Description = "meta-training iterations (default 10000; 1 with --bench)" };
        public readonly Option<int?> Batch = new("--batch") { Description = "edit samples B per iteration; 2B images are drawn (default 8)" };
        public readonly Option<int?> OuterSteps = new("--outer-steps") { Description = "RMSprop steps on the free mask logits z per iteration (default 10)" };
        public readonly Option<int?> InnerSteps = new("--inner-steps") { Description = "first-order masked SGD steps per outer step (default 5)" };
        public readonly Option<float?> MaskLr = new("--mask-lr") { Description = "RMSprop learning rate on z (default 0.1)" };
        public readonly Option<float?> InnerLr = new("--inner-lr") { Description = "inner SGD learning rate (default: the reference's 1e-3 × 768/width, docs/SCALING.md)" };
        public readonly Option<float?> SparsityWeight = new("--sparsity-weight") { Description = "λ of λ·mean(m) (default 1.0)" };
        public readonly Option<string?> SparsityNorm = new("--sparsity-norm") { Description = "how λ reaches each gate: per-gate (λ/(B·R·H), the reference's formula) or reference-width (λ/(B·R·3072)) (default per-gate; docs/SCALING.md)" };
        public readonly Option<string?> CropScale = new("--crop-scale") { Description = "RandomResizedCrop area range MIN,MAX (default 0.25,1 as the reference)" };
        public readonly Option<int?> DiagnosticsEvery = new("--diagnostics-every") { Description = "label-stability and input-dependence diagnostics every N iterations, 0 = never (default 25; each costs one extra stage A)" };
        public readonly Option<float?> Temperature = new("--temperature") { Description = "distillation temperature T (default 5)" };
        public readonly Option<double?> HypernetLr = new("--hypernet-lr") { Description = "hypernetwork RMSprop base learning rate (default: the reference's 1e-4 × 768/width, docs/SCALING.md)" };
        public readonly Option<double?> TMax = new("--t-max") { Description = "cosine schedule T_max in iterations (default 2e4)" };
        public readonly Option<int?> StageBSteps = new("--stage-b-steps") { Description = "hypernetwork RMSprop steps per iteration (default 4)" };
        public readonly Option<int?> Depth = new("--hypernet-depth") { Description = "Transformer blocks of the hypernetwork (default 3)" };
        public readonly Option<ulong?> Seed = new("--seed") { Description = "seed of the data order, crops, CutMix, z and the hypernetwork init (default 0)" };
        public readonly Option<string?> EditBlocks = new("--edit-blocks") { Description = "edited blocks, e.g. 7,8,9 (default: 7,8,9 of 12, scaled to other depths)" };
        public readonly Option<bool?> ReferenceBounds = new("--cutmix-reference-bounds") { Description = "draw CutMix corners like the reference (randint(0, G−h): never the last row/column); default true for fresh runs, '--cutmix-reference-bounds false' for every position" };
        public readonly Option<int?> CheckpointEvery = new("--checkpoint-every") { Description = "iterations between checkpoints (default 500)" };

        public IEnumerable<Option> All => [Iterations, Batch, OuterSteps, InnerSteps, MaskLr, InnerLr, SparsityWeight, SparsityNorm, CropScale, DiagnosticsEvery, Temperature, HypernetLr, TMax,
            StageBSteps, Depth, Seed, EditBlocks, ReferenceBounds, CheckpointEvery];

        public MetaTrainOptions Apply(ParseResult p, MetaTrainOptions o) => o with
        {
            Iterations = p.GetValue(Iterations) ?? o.Iterations,
            Batch = p.GetValue(Batch) ?? o.Batch,
            OuterSteps = p.GetValue(OuterSteps) ?? o.OuterSteps,
            InnerSteps = p.GetValue(InnerSteps) ?? o.InnerSteps,
            MaskLr = p.GetValue(MaskLr) ?? o.MaskLr,
            InnerLr = p.GetValue(InnerLr) ?? o.InnerLr,
            SparsityWeight = p.GetValue(SparsityWeight) ?? o.SparsityWeight,
            SparsityNorm = p.GetValue(SparsityNorm) ?? o.SparsityNorm,
            CropScaleMin = p.GetValue(CropScale) is { } cs ? ParseRange(cs).Min : o.CropScaleMin,
            CropScaleMax = p.GetValue(CropScale) is { } cs2 ? ParseRange(cs2).Max : o.CropScaleMax,
            DiagnosticsEvery = p.GetValue(DiagnosticsEvery) ?? o.DiagnosticsEvery,
            Temperature = p.GetValue(Temperature) ?? o.Temperature,
            HypernetLr = p.GetValue(HypernetLr) ?? o.HypernetLr,
            CosineTMax = p.GetValue(TMax) ?? o.CosineTMax,
            StageBSteps = p.GetValue(StageBSteps) ?? o.StageBSteps,
            HypernetDepth = p.GetValue(Depth) ?? o.HypernetDepth,
            Seed = p.GetValue(Seed) ?? o.Seed,
            EditBlocks = p.GetValue(EditBlocks) is { } blocks ? ParseBlocks(blocks) : o.EditBlocks,
            CutMixReferenceBounds = p.GetValue(ReferenceBounds) ?? o.CutMixReferenceBounds,
            CheckpointEvery = p.GetValue(CheckpointEvery) ?? o.CheckpointEvery,
        };

        private static (double Min, double Max) ParseRange(string text)
        {
            var parts = text.Split(',', StringSplitOptions.TrimEntries);
            if (parts.Length != 2 || !double.TryParse(parts[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double min)
                || !double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double max))
                throw new ArgumentException($"--crop-scale '{text}': expected MIN,MAX like 0.25,1");
            return (min, max);
        }

        private static int[] ParseBlocks(string text)
        {
            var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 0) throw new ArgumentException($"--edit-blocks '{text}': expected block indices like 7,8,9");
            return parts.Select(s => int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int b)
                ? b : throw new ArgumentException($"--edit-blocks '{text}': '{s}' is not a block index")).ToArray();
        }
    }

    private static Command MetaTrainCommand(TextWriter stdout, TextWriter stderr)
    {
        var model = new Argument<string>("MODEL") { Description = "the base ViT (a .safetensors or .npz file, or a hub-style folder); with --bench also a preset name (random weights)" };
        var data = new Option<string?>("--data") { Description = "a folder of training images (ImageFolder class/xxx.jpg or flat)" };
        var idx = new Option<string?>("--idx") { Description = "an IDX images file (e.g. Fashion-MNIST train-images-idx3-ubyte.gz), gzipped or not" };
        var output = new Option<string?>("--out") { Description = "where to write the trained hypernetwork (.safetensors)" };
        var checkpointDir = new Option<string?>("--checkpoint-dir") { Description = "folder for checkpoints meta-NNNNNN.safetensors" };
        var resume = new Option<string?>("--resume") { Description = "continue from a checkpoint (its options are kept; only --iterations and --checkpoint-every may change)" };
        var log = new Option<string?>("--log") { Description = "CSV log, one line per iteration (appended to when resuming)" };
        var bench = new Option<bool>("--bench") { Description = "time iterations and print one JSON line (data optional: noise images; --out optional)" };
        var noProgress = new Option<bool>("--no-progress") { Description = "no progress bar on stderr" };
        var device = DeviceOption();
        var threads = ThreadsOption();
        var gemm = GemmOption();
        var knobs = new MetaKnobs();
        var command = new Command("meta-train", "Meta-train the mask hypernetwork (learning WHERE to edit) on unlabelled images.")
        {
            model, data, idx, output, checkpointDir, resume, log, bench, noProgress, device, threads, gemm,
        };
        foreach (var o in knobs.All) command.Options.Add(o);
        command.SetAction(parse =>
        {
            string modelPath = parse.GetValue(model)!;
            bool isBench = parse.GetValue(bench);
            string? outPath = parse.GetValue(output), ckptDir = parse.GetValue(checkpointDir), resumePath = parse.GetValue(resume), logPath = parse.GetValue(log);
            string? dataPath = parse.GetValue(data), idxPath = parse.GetValue(idx);
            if (dataPath is not null && idxPath is not null) throw new ArgumentException("give either --data FOLDER or --idx IMAGES, not both");
            if (dataPath is null && idxPath is null && !isBench) throw new ArgumentException("meta-train needs training images: --data FOLDER or --idx IMAGES");
            if (outPath is null && !isBench) throw new ArgumentException("--out HYPERNET is required (where the trained hypernetwork goes)");
            if (resumePath is not null && !File.Exists(resumePath)) throw new FileNotFoundException($"--resume {resumePath}: no such file");
            var defaults = new MetaTrainOptions { Iterations = isBench ? 1 : new MetaTrainOptions().Iterations };
            var fresh = knobs.Apply(parse, defaults).Validate();   // option errors before any loading (width rules applied below)

            // Data before the model: a bad data path fails fast.
            IImageSource source = dataPath is not null ? new FolderImageSource(dataPath)
                : idxPath is not null ? new IdxImageSource(IdxReader.ReadImages(idxPath))
                : new SyntheticImageSource(Math.Max(64, 2 * fresh.Batch), 256, 256);

            using var backend = BackendFactory.Create(parse.GetValue(device)!, parse.GetValue(threads), ParseGemm(parse.GetValue(gemm)!));
            float[] mean, std;
            VitModel vit;
            if (isBench && !File.Exists(modelPath) && !Directory.Exists(modelPath) && VitConfig.Presets.ContainsKey(modelPath))
            {
                vit = new VitModel(backend, VitConfig.Preset(modelPath));
                vit.InitializeRandom(fresh.Seed);
                mean = Enumerable.Repeat(0.5f, vit.Config.InChans).ToArray();
                std = mean.ToArray();
            }
            else
            {
                var loaded = ModelFolder.Load(modelPath);
                vit = VitCheckpoint.Load(backend, loaded);
                mean = loaded.Preprocessing.Mean;
                std = loaded.Preprocessing.Std;
            }
            using var _ = vit;
            // A fresh run's defaults follow the width rules (docs/SCALING.md); explicit flags win.
            fresh = knobs.Apply(parse, MetaTrainOptions.ForWidth(vit.Config.EmbedDim) with { Iterations = defaults.Iterations, DiagnosticsEvery = isBench ? 0 : 25 }).Validate();
            if (outPath is not null) EnsureParentFolder(outPath);
            if (logPath is not null) EnsureParentFolder(logPath);

            using var trainer = resumePath is not null
                ? MetaTrainer.Resume(vit, mean, std, source, resumePath, o => knobs.Apply(parse, o))
                : new MetaTrainer(vit, mean, std, source, fresh);
            var o = trainer.Options;
            using var csv = logPath is null ? null : OpenLog(logPath, append: resumePath is not null);
            bool showProgress = !parse.GetValue(noProgress);
            bool inPlace = ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected;
            int startIteration = trainer.Iteration;
            var clock = Stopwatch.StartNew();
            var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
            var all = new List<IterationStats>();
            if (showProgress)
                stderr.WriteLine($"meta-train: {source.Description}; blocks [{string.Join(",", trainer.Target.Blocks)}], B {o.Batch}, " +
                                 $"{o.OuterSteps}×({o.InnerSteps}+1) batched passes per iteration; iterations {trainer.Iteration + 1}..{o.Iterations}; {backend.Name}");
            if (showProgress)
                stderr.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"meta-train: inner lr {o.InnerLr:G4}, hypernetwork lr {o.HypernetLr:G4}, λ {o.SparsityWeight:G4} {o.SparsityNorm}, crop scale {o.CropScaleMin:G3}–{o.CropScaleMax:G3}, CutMix reference bounds {(o.CutMixReferenceBounds ? "on" : "off")}, diagnostics every {o.DiagnosticsEvery}"));
            bool warned = false;
            trainer.Run(ckptDir, stats =>
            {
                all.Add(stats);
                csv?.WriteLine(stats.ToCsv());
                csv?.Flush();
                if (showProgress) Progress(stderr, inPlace, stats, o.Iterations, startIteration, clock.Elapsed.TotalSeconds);
                if (stats.ProbeIoUAcross is { } probe)
                {
                    // A fresh hypernetwork is input-independent too: judge it once it had time to learn.
                    bool flat = probe > MetaDiagnostics.InputIndependentIoU && stats.Iteration >= MetaDiagnostics.WarnAfterIterations;
                    if (flat && !warned)
                        stderr.WriteLine(string.Create(CultureInfo.InvariantCulture,
                            $"{(inPlace ? "\n" : "")}meta-train: warning: at iteration {stats.Iteration} the hypernetwork gives nearly the same mask for every input (probe images' top-10 % masks overlap {probe:0.000} IoU; two random masks: 0.053). Its masks no longer depend on the input; see docs/SCALING.md."));
                    warned = flat;
                }
            });
            double cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpuBefore).TotalSeconds;
            if (showProgress && inPlace && all.Count > 0) stderr.WriteLine();
            if (outPath is not null) trainer.SaveHypernet(outPath);

            if (isBench)
            {
                int passes = o.OuterSteps * (o.InnerSteps + 1);
                stdout.WriteLine(JsonSerializer.Serialize(new
                {
                    model = modelPath, backend = backend.Name, threads = backend.Threads, batch = o.Batch, outer_steps = o.OuterSteps, inner_steps = o.InnerSteps,
                    edit_blocks = trainer.Target.Blocks, blocks_per_pass = vit.Config.Depth - trainer.Target.FirstBlock,
                    batched_passes_per_iteration = passes, single_image_passes_per_iteration = passes * o.Batch, iterations = all.Count,
                    seconds_per_iteration = all.Count == 0 ? 0 : all.Average(s => s.Seconds),
                    first_iteration_s = all.Count == 0 ? 0 : all[0].Seconds,
                    cpu_seconds_per_iteration = all.Count == 0 ? 0 : cpuSeconds / all.Count,   // process CPU time (all threads; includes spin-waits)
                    data_s = all.Count == 0 ? 0 : all.Average(s => s.DataSeconds),
                    stage_a_s = all.Count == 0 ? 0 : all.Average(s => s.StageASeconds),
                    stage_b_s = all.Count == 0 ? 0 : all.Average(s => s.StageBSeconds),
                }));
            }
            else stdout.WriteLine($"wrote {outPath} ({trainer.Iteration} iterations, base {trainer.BaseFingerprint})");
            return 0;
        });
        return command;
    }

    private static void EnsureParentFolder(string path)
    {
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
    }

    private static StreamWriter OpenLog(string path, bool append)
    {
        bool header = !append || !File.Exists(path) || new FileInfo(path).Length == 0;
        var writer = new StreamWriter(path, append);
        if (header) writer.WriteLine(IterationStats.CsvHeader);
        return writer;
    }

    private static void Progress(TextWriter stderr, bool inPlace, IterationStats s, int total, int start, double elapsed)
    {
        int done = s.Iteration - start, left = total - s.Iteration;
        double rate = done / Math.Max(elapsed, 1e-9);
        const int width = 24;
        int filled = total == 0 ? width : (int)((long)width * s.Iteration / total);
        string bar = new string('#', filled) + new string('-', width - filled);
        string line = string.Create(CultureInfo.InvariantCulture,
            $"[{bar}] {s.Iteration}/{total}  {rate:0.000} it/s  ETA {Eta(left / Math.Max(rate, 1e-12))}  outer KL {s.OuterKl:G4} (−{100 * s.KlReduction:0.0}%)  mask sparsity {100 * s.MaskSparsity:0.00}%  bce {s.BceLast:G4}");
        if (s.LabelIoUSame is { } same && s.ProbeIoUAcross is { } probe)
            line += string.Create(CultureInfo.InvariantCulture, $"  labels (y>0.5) IoU same {same:0.000} / across {s.LabelIoUAcross:0.000}  probe masks IoU across {probe:0.000}");
        if (inPlace) stderr.Write("\r" + line);
        else stderr.WriteLine(line);
    }

    private static string Eta(double seconds)
    {
        if (!double.IsFinite(seconds) || seconds > 1e8) return "--";
        var t = TimeSpan.FromSeconds(Math.Round(seconds));
        return t.TotalHours >= 1 ? $"{(int)t.TotalHours}h{t.Minutes:00}m" : t.TotalMinutes >= 1 ? $"{t.Minutes}m{t.Seconds:00}s" : $"{t.Seconds}s";
    }
}

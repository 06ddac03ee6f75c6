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
        public readonly Option<float?> InnerLr = new("--inner-lr") { Description = "inner SGD learning rate (default 1e-3)" };
        public readonly Option<float?> SparsityWeight = new("--sparsity-weight") { Description = "λ of λ·mean(m) (default 1.0)" };
        public readonly Option<float?> Temperature = new("--temperature") { Description = "distillation temperature T (default 5)" };
        public readonly Option<double?> HypernetLr = new("--hypernet-lr") { Description = "hypernetwork RMSprop base learning rate (default 1e-4)" };
        public readonly Option<double?> TMax = new("--t-max") { Description = "cosine schedule T_max in iterations (default 2e4)" };
        public readonly Option<int?> StageBSteps = new("--stage-b-steps") { Description = "hypernetwork RMSprop steps per iteration (default 4)" };
        public readonly Option<int?> Depth = new("--hypernet-depth") { Description = "Transformer blocks of the hypernetwork (default 3)" };
        public readonly Option<ulong?> Seed = new("--seed") { Description = "seed of the data order, crops, CutMix, z and the hypernetwork init (default 0)" };
        public readonly Option<string?> EditBlocks = new("--edit-blocks") { Description = "edited blocks, e.g. 7,8,9 (default: 7,8,9 of 12, scaled to other depths)" };
        public readonly Option<bool> ReferenceBounds = new("--cutmix-reference-bounds") { Description = "draw CutMix corners like the reference (randint(0, G−h): never the last row/column)" };
        public readonly Option<int?> CheckpointEvery = new("--checkpoint-every") { Description = "iterations between checkpoints (default 500)" };

        public IEnumerable<Option> All => [Iterations, Batch, OuterSteps, InnerSteps, MaskLr, InnerLr, SparsityWeight, Temperature, HypernetLr, TMax,
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
            Temperature = p.GetValue(Temperature) ?? o.Temperature,
            HypernetLr = p.GetValue(HypernetLr) ?? o.HypernetLr,
            CosineTMax = p.GetValue(TMax) ?? o.CosineTMax,
            StageBSteps = p.GetValue(StageBSteps) ?? o.StageBSteps,
            HypernetDepth = p.GetValue(Depth) ?? o.HypernetDepth,
            Seed = p.GetValue(Seed) ?? o.Seed,
            EditBlocks = p.GetValue(EditBlocks) is { } blocks ? ParseBlocks(blocks) : o.EditBlocks,
            CutMixReferenceBounds = p.GetValue(ReferenceBounds) || o.CutMixReferenceBounds,
            CheckpointEvery = p.GetValue(CheckpointEvery) ?? o.CheckpointEvery,
        };

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
            new CommandPaths().Input(isBench && VitConfig.Presets.ContainsKey(modelPath) && !Path.Exists(modelPath) ? null : modelPath, "MODEL").Input(dataPath, "--data").Input(idxPath, "--idx")
                .Input(resumePath, "--resume", keptByFolderOutputs: true).Output(outPath, "--out").Output(logPath, "--log").OutputFolder(ckptDir, "--checkpoint-dir", MetaTrainer.IsCheckpointName).Check();
            var defaults = new MetaTrainOptions { Iterations = isBench ? 1 : new MetaTrainOptions().Iterations };
            var fresh = knobs.Apply(parse, defaults).Validate();   // option errors before any loading

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
            if (outPath is not null) EnsureParentFolder(outPath);
            if (logPath is not null) EnsureParentFolder(logPath);

            using var trainer = resumePath is not null
                ? MetaTrainer.Resume(vit, mean, std, source, resumePath, o => knobs.Apply(parse, o))
                : new MetaTrainer(vit, mean, std, source, fresh);
            var o = trainer.Options;
            using var csv = logPath is null ? null : CsvLog.Open(logPath, IterationStats.CsvHeader, "--log", resumePath is not null ? trainer.Iteration : null);
            bool showProgress = !parse.GetValue(noProgress);
            bool inPlace = ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected;
            int startIteration = trainer.Iteration;
            var clock = Stopwatch.StartNew();
            var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
            var all = new List<IterationStats>();
            if (showProgress)
                stderr.WriteLine($"meta-train: {source.Description}; blocks [{string.Join(",", trainer.Target.Blocks)}], B {o.Batch}, " +
                                 $"{o.OuterSteps}×({o.InnerSteps}+1) batched passes per iteration; iterations {trainer.Iteration + 1}..{o.Iterations}; {backend.Name}");
            trainer.Run(ckptDir, stats =>
            {
                all.Add(stats);
                csv?.WriteRow(stats.ToCsv());
                if (showProgress) Progress(stderr, inPlace, stats, o.Iterations, startIteration, clock.Elapsed.TotalSeconds);
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

    private static void Progress(TextWriter stderr, bool inPlace, IterationStats s, int total, int start, double elapsed)
    {
        int done = s.Iteration - start, left = total - s.Iteration;
        double rate = done / Math.Max(elapsed, 1e-9);
        const int width = 24;
        int filled = total == 0 ? width : (int)((long)width * s.Iteration / total);
        string bar = new string('#', filled) + new string('-', width - filled);
        string line = string.Create(CultureInfo.InvariantCulture,
            $"[{bar}] {s.Iteration}/{total}  {rate:0.000} it/s  ETA {Eta(left / Math.Max(rate, 1e-12))}  outer KL {s.OuterKl:G4}  mask sparsity {100 * s.MaskSparsity:0.00}%  bce {s.BceLast:G4}");
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

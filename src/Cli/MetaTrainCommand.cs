using System.CommandLine;
using WhereToEdit.Engine.Distributed;
using System.Globalization;
using System.Text.Json;
using WhereToEdit.Engine.Jobs;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    /// <summary>The meta-training knobs; unset = the default (fresh run) or the checkpoint's value (resume).</summary>
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

        public MetaTrainOverrides Parse(ParseResult p) => new()
        {
            Iterations = p.GetValue(Iterations), Batch = p.GetValue(Batch), OuterSteps = p.GetValue(OuterSteps), InnerSteps = p.GetValue(InnerSteps),
            MaskLr = p.GetValue(MaskLr), InnerLr = p.GetValue(InnerLr), SparsityWeight = p.GetValue(SparsityWeight), Temperature = p.GetValue(Temperature),
            SparsityNorm = p.GetValue(SparsityNorm), DiagnosticsEvery = p.GetValue(DiagnosticsEvery),
            CropScaleMin = p.GetValue(CropScale) is { } cs ? ParseRange(cs).Min : null, CropScaleMax = p.GetValue(CropScale) is { } cs2 ? ParseRange(cs2).Max : null,
            HypernetLr = p.GetValue(HypernetLr), CosineTMax = p.GetValue(TMax), StageBSteps = p.GetValue(StageBSteps), HypernetDepth = p.GetValue(Depth),
            Seed = p.GetValue(Seed), EditBlocks = p.GetValue(EditBlocks) is { } blocks ? ParseBlocks(blocks) : null,
            CutMixReferenceBounds = p.GetValue(ReferenceBounds), CheckpointEvery = p.GetValue(CheckpointEvery),
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

    private static Command MetaTrainCommand(CliOutput io)
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
            var result = MetaTrainJob.Run(new MetaTrainJobOptions
            {
                ModelPath = parse.GetValue(model)!, DataPath = parse.GetValue(data), IdxPath = parse.GetValue(idx), OutPath = parse.GetValue(output),
                CheckpointDir = parse.GetValue(checkpointDir), ResumePath = parse.GetValue(resume), LogPath = parse.GetValue(log), Bench = parse.GetValue(bench),
                Overrides = knobs.Parse(parse),
                Backend = new BackendChoice { Device = parse.GetValue(device)!, Threads = parse.GetValue(threads), Gemm = parse.GetValue(gemm)! },
            }, io.Progress(quiet: parse.GetValue(noProgress)), world: World);
            if (!World.IsRoot()) return 0;
            if (result.Timing is { } timing) io.Out.WriteLine(JsonSerializer.Serialize(timing));   // --bench: one JSON line, as always
            else io.Print(parse, result, stdout => stdout.WriteLine($"wrote {result.OutPath} ({result.Iteration} iterations, base {result.BaseFingerprint})"));
            return 0;
        });
        return command;
    }
}

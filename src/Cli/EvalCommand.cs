using System.CommandLine;
using System.Globalization;
using System.Text;
using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    /// <summary>Everything an evaluation run needs, shared by `wte eval` and `wte demo`.</summary>
    internal sealed record EvalRequest
    {
        public required string ModelPath { get; init; }
        public string? HypernetPath { get; init; }
        public required BenchmarkManifest Manifest { get; init; }
        public required IReadOnlyList<EvalSetting> Settings { get; init; }
        public required EvalOptions Options { get; init; }
        public IReadOnlyList<string>? Subsets { get; init; }
        public required string OutDir { get; init; }
        public string Device { get; init; } = "cpu";
        public int Threads { get; init; }
        public string Title { get; init; } = "wte eval";
        /// <summary>Use at most this many images of the broad locality set (stratified; 0 = all).</summary>
        public int BroadLimit { get; init; }
    }

    internal static List<double> ParseList(string text, string option)
    {
        var values = new List<double>();
        foreach (string part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            values.Add(double.TryParse(part, NumberStyles.Float, CultureInfo.InvariantCulture, out double v)
                ? v : throw new ArgumentException($"{option} '{text}': '{part}' is not a number"));
        if (values.Count == 0) throw new ArgumentException($"{option}: empty list");
        return values;
    }

    private static Command EvalCommand(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "the ORIGINAL model (file or hub folder)", Required = true };
        var hypernet = new Option<string?>("--hypernet") { Description = "hypernetwork for the model (needed for hprd)" };
        var benchmark = new Option<string?>("--benchmark") { Description = "a benchmark manifest.json (wte benchmark build)" };
        var failures = new Option<string?>("--failures") { Description = "the paper's layout: a folder of <class index>_<name>/ failure folders" };
        var locality = new Option<string?>("--locality") { Description = "with --failures: a flat folder of locality images" };
        var methods = new Option<string>("--methods") { Description = "comma list of hprd, ft-l1, ft-l2, random", DefaultValueFactory = _ => "hprd,ft-l1,ft-l2,random" };
        var keeps = new Option<string>("--keeps") { Description = "keep fractions for hprd and random", DefaultValueFactory = _ => "0.75,0.5,0.25,0.1,0.05" };
        var coefs = new Option<string>("--coefs") { Description = "FT-L1/L2 coefficients", DefaultValueFactory = _ => "0.1,0.05,0.025,0.01,0.005,0.001,0" };
        var perEdit = new Option<int>("--images-per-edit") { Description = "1–3 failure images per edit", DefaultValueFactory = _ => 1 };
        var lr = new Option<float>("--lr") { DefaultValueFactory = _ => 2e-5f };
        var maxSteps = new Option<int>("--max-steps") { DefaultValueFactory = _ => 100 };
        var grFormula = new Option<string>("--gr-formula") { Description = "corrected (F_g minus the edit images) or reference ((correct − 1)/N)", DefaultValueFactory = _ => "corrected" };
        var maxEdits = new Option<int>("--max-edits-per-group") { Description = "0 = one edit per failure", DefaultValueFactory = _ => 0 };
        var subsets = new Option<string?>("--subsets") { Description = "comma list of subsets to run (default: all)" };
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 0UL };
        var broadImages = new Option<int>("--broad-images") { Description = "use at most this many images of the benchmark's broad locality set (stratified; 0 = all)", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out") { Description = "output folder: edits.jsonl, summary.md, plots/", Required = true };
        var device = DeviceOption();
        var threads = ThreadsOption();
        var command = new Command("eval", "Run the paper's editing protocol (SR, GR, LR; sweeps; mask IoU; Pareto plots) on a benchmark.")
        {
            model, hypernet, benchmark, failures, locality, methods, keeps, coefs, perEdit, lr, maxSteps, grFormula, maxEdits, subsets, seed, broadImages, output, device, threads,
        };
        command.SetAction(parse =>
        {
            var methodList = parse.GetValue(methods)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(EditMethods.Parse).Distinct().ToList();
            var keepList = ParseList(parse.GetValue(keeps)!, "--keeps");
            foreach (double keep in keepList) if (!(keep > 0 && keep <= 1)) throw new ArgumentException($"--keeps: {keep} is outside (0, 1]");
            var coefList = ParseList(parse.GetValue(coefs)!, "--coefs");
            foreach (double c in coefList) if (c < 0) throw new ArgumentException($"--coefs: {c} is negative");
            int k = parse.GetValue(perEdit);
            if (k is < 1 or > 3) throw new ArgumentException($"--images-per-edit {k}: must be 1, 2 or 3");
            var formula = parse.GetValue(grFormula)!.Trim().ToLowerInvariant() switch
            {
                "corrected" => GrFormula.Corrected,
                "reference" => GrFormula.Reference,
                var other => throw new ArgumentException($"--gr-formula '{other}': expected corrected or reference"),
            };
            BenchmarkManifest manifest = parse.GetValue(benchmark) is { } b
                ? BenchmarkManifest.Read(b)
                : parse.GetValue(failures) is { } f
                    ? BenchmarkManifest.FromPaperLayout(f, parse.GetValue(locality) ?? throw new ArgumentException("--failures needs --locality"))
                    : throw new ArgumentException("give --benchmark MANIFEST or --failures DIR --locality DIR");
            var settings = methodList.SelectMany(m => m.IsFineTuning()
                ? coefList.Select(c => new EvalSetting(m, 1, (float)c))
                : keepList.Select(kk => new EvalSetting(m, kk, 0))).ToList();
            RunEvaluation(new EvalRequest
            {
                ModelPath = parse.GetValue(model)!, HypernetPath = parse.GetValue(hypernet), Manifest = manifest, Settings = settings,
                Options = new EvalOptions
                {
                    ImagesPerEdit = k, LearningRate = parse.GetValue(lr), MaxSteps = parse.GetValue(maxSteps), GrFormula = formula,
                    MaxEditsPerGroup = parse.GetValue(maxEdits), Seed = parse.GetValue(seed),
                },
                Subsets = parse.GetValue(subsets)?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries),
                OutDir = parse.GetValue(output)!, Device = parse.GetValue(device)!, Threads = parse.GetValue(threads),
                BroadLimit = parse.GetValue(broadImages) >= 0 ? parse.GetValue(broadImages) : throw new ArgumentException($"--broad-images {parse.GetValue(broadImages)}: must be 0 (all) or positive"),
            }, stdout, stderr);
            return 0;
        });
        return command;
    }

    /// <summary>Loads model, hypernetwork and benchmark, runs every setting, writes records, tables and plots.</summary>
    internal static List<MetricRow> RunEvaluation(EvalRequest request, TextWriter stdout, TextWriter stderr)
    {
        var manifest = request.Manifest;
        var loaded = ModelFolder.Load(request.ModelPath);
        if (request.Settings.Any(s => s.Method == EditMethod.Hprd) && request.HypernetPath is null)
            throw new ArgumentException("the hprd method needs --hypernet");
        if (request.Subsets is { } wanted)
            foreach (string name in wanted) _ = manifest.Subset(name);
        var loader = new ImageLoader();
        float[] Load(string relative) => loader.Load(manifest.ImagePath(relative), loaded.Preprocessing);
        var groups = manifest.Subsets.Where(s => request.Subsets is null || request.Subsets.Contains(s.Name))
            .SelectMany(s => s.Groups.Select(g => new EvalGroup(s.Name, g.Name, g.Label, g.Images, g.Images.Select(Load).ToList()))).ToList();
        var locality = manifest.Locality.Images.Select(Load).ToList();
        var broad = BroadLocality.Load(manifest.Folder, loaded.Preprocessing, request.BroadLimit);

        using var backend = BackendFactory.Create(request.Device, request.Threads);
        using var model = VitCheckpoint.Load(backend, loaded);
        if (manifest.BaseModelFingerprint is { } fp && !string.Equals(fp, VitCheckpoint.Fingerprint(model), StringComparison.OrdinalIgnoreCase))
            stderr.WriteLine($"note: the benchmark was built for model {fp}; evaluating {request.ModelPath} (its failures are re-checked: only images this model gets wrong are edited)");
        using var loadedNet = request.HypernetPath is { } hp ? HypernetFile.Load(backend, hp, model) : null;
        var net = loadedNet?.Network;
        var target = loadedNet is not null ? new EditTarget(model.Config, loadedNet.EditBlocks) : EditTarget.Default(model.Config);
        {
            using var evaluator = new EditEvaluator(model, net, target, locality, broad);
            int edits = evaluator.CountEdits(groups, request.Options);
            int total = edits * request.Settings.Count;
            stderr.WriteLine($"{request.Title}: {groups.Count} groups, {edits} edits × {request.Settings.Count} settings = {total} edits; locality set {locality.Count} images{(broad is null ? "" : $", broad locality set {broad.Count}")}; {backend.Name}");
            Directory.CreateDirectory(request.OutDir);
            string jsonl = Path.Combine(request.OutDir, "edits.jsonl");
            using var writer = new StreamWriter(jsonl + ".tmp");
            var bar = new ProgressBar(stderr, "edits");
            var clock = System.Diagnostics.Stopwatch.StartNew();
            int done = 0;
            var records = evaluator.Run(groups, request.Settings, request.Options, r =>
            {
                writer.WriteLine(EvalReport.JsonLine(r));
                done++;
                double rate = done / Math.Max(1e-9, clock.Elapsed.TotalSeconds);
                bar.Report(done, total, rate, TimeSpan.FromSeconds((total - done) / Math.Max(rate, 1e-9)), $"{r.Subset}/{r.Group} {r.Setting}");
            });
            writer.Close();
            File.Move(jsonl + ".tmp", jsonl, overwrite: true);

            var summary = EvalReport.Summarise(records);
            var perGroup = EvalReport.Summarise(records, perGroup: true);
            var overlaps = EvalReport.Overlaps(records);
            var plots = EvalReport.ParetoPlots(summary, Path.Combine(request.OutDir, "plots"), request.Title);
            var md = new StringBuilder();
            md.AppendLine($"# {request.Title}");
            md.AppendLine();
            md.AppendLine($"Model `{request.ModelPath}`, hypernetwork `{request.HypernetPath ?? "none"}`, benchmark `{manifest.Name}`; " +
                          $"{request.Options.ImagesPerEdit} image(s) per edit, lr {request.Options.LearningRate.ToString(CultureInfo.InvariantCulture)}, " +
                          $"≤ {request.Options.MaxSteps} steps, GR formula {request.Options.GrFormula.ToString().ToLowerInvariant()}, locality set {locality.Count}" +
                          (broad is null ? "." : $", broad locality set {broad.Count} (correctly classified test images, every class). ± : 95 % confidence half-width over edits."));
            md.AppendLine();
            md.AppendLine("## Overall (mean over edits)");
            md.AppendLine();
            md.AppendLine(EvalReport.MarkdownTable(summary));
            md.AppendLine("## Mask overlap (HPRD)");
            md.AppendLine();
            md.AppendLine(EvalReport.OverlapTable(overlaps));
            md.AppendLine("## Per group");
            md.AppendLine();
            md.AppendLine(EvalReport.MarkdownTable(perGroup, withGroup: true));
            File.WriteAllText(Path.Combine(request.OutDir, "summary.md"), md.ToString());
            stdout.WriteLine(EvalReport.ConsoleTable(summary));
            if (overlaps.Count > 0)
            {
                stdout.WriteLine("mask IoU (HPRD)   within groups  across groups");
                foreach (var o in overlaps)
                    stdout.WriteLine($"  {o.Subset,-12} {o.Setting,-18} {o.WithinGroups,8:F3}  {o.AcrossGroups,8:F3}");
            }
            stdout.WriteLine($"wrote {jsonl}, {Path.Combine(request.OutDir, "summary.md")} and {plots.Count} plot files in {Path.Combine(request.OutDir, "plots")}");
            return summary;
        }
    }
}

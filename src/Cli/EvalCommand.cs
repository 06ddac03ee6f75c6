using System.CommandLine;
using System.Globalization;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.Jobs;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    internal static List<double> ParseList(string text, string option)
    {
        var values = new List<double>();
        foreach (string part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            values.Add(double.TryParse(part, NumberStyles.Float, CultureInfo.InvariantCulture, out double v)
                ? v : throw new ArgumentException($"{option} '{text}': '{part}' is not a number"));
        if (values.Count == 0) throw new ArgumentException($"{option}: empty list");
        return values;
    }

    private static string[] SplitList(string text) => text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);

    private static Command EvalCommand(CliOutput io)
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
        var lr = new Option<string?>("--lr") { Description = "RMSprop learning rate of every edit, or a comma list to sweep it (each method's GR–LR curve) (default: the paper's 2e-5 at width 768 scaled by 768/width, as `wte edit`: 2.4e-4 for the shipped model)" };
        var maxSteps = new Option<int>("--max-steps") { DefaultValueFactory = _ => 100 };
        var grFormula = new Option<string>("--gr-formula") { Description = "corrected (F_g minus the edit images) or reference ((correct − 1)/N)", DefaultValueFactory = _ => "corrected" };
        var maxEdits = new Option<int>("--max-edits-per-group") { Description = "0 = one edit per failure", DefaultValueFactory = _ => 0 };
        var subsets = new Option<string?>("--subsets") { Description = "comma list of subsets to run (default: all)" };
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 0UL };
        var output = new Option<string>("--out") { Description = "output folder: edits.jsonl, summary.md, plots/", Required = true };
        var broadImages = new Option<int>("--broad-images") { Description = "use at most this many images of the benchmark's broad locality set (stratified; 0 = all)", DefaultValueFactory = _ => 0 };
        var device = DeviceOption();
        var threads = ThreadsOption();
        var command = new Command("eval", "Run the paper's editing protocol (SR, GR, LR; sweeps; mask IoU; Pareto plots) on a benchmark.")
        {
            model, hypernet, benchmark, failures, locality, methods, keeps, coefs, perEdit, lr, maxSteps, grFormula, maxEdits, subsets, seed, broadImages, output, device, threads,
        };
        command.SetAction(parse =>
        {
            var result = EvaluateJob.Run(new EvaluateJobOptions
            {
                ModelPath = parse.GetValue(model)!, HypernetPath = parse.GetValue(hypernet), BenchmarkPath = parse.GetValue(benchmark),
                FailuresPath = parse.GetValue(failures), LocalityPath = parse.GetValue(locality), Methods = SplitList(parse.GetValue(methods)!),
                Keeps = ParseList(parse.GetValue(keeps)!, "--keeps"), Coefficients = ParseList(parse.GetValue(coefs)!, "--coefs"),
                LearningRates = parse.GetValue(lr) is { } rates ? ParseList(rates, "--lr") : [],
                Protocol = new EvalOptions
                {
                    ImagesPerEdit = parse.GetValue(perEdit), LearningRate = float.NaN, MaxSteps = parse.GetValue(maxSteps),
                    GrFormula = EvaluateJob.ParseGrFormula(parse.GetValue(grFormula)!), MaxEditsPerGroup = parse.GetValue(maxEdits), Seed = parse.GetValue(seed),
                },
                Subsets = parse.GetValue(subsets) is { } s ? SplitList(s) : null, BroadLimit = parse.GetValue(broadImages),
                OutDir = parse.GetValue(output)!, Backend = new BackendChoice { Device = parse.GetValue(device)!, Threads = parse.GetValue(threads) },
            }, io.Progress(), world: World);
            return result is null ? 0 : io.Print(parse, result, stdout => PrintEvaluation(stdout, result));   // null on MPI ranks other than 0
        });
        return command;
    }

    private static string Gap(FrontGap g) => double.IsNaN(g.Gap) ? "– (LR outside the front's range)"
        : $"{EvalReport.Signed(g.Gap)} [{EvalReport.Signed(g.Low)} … {EvalReport.Signed(g.High)}]";

    private static string Signed(double v, double ci) => double.IsNaN(v) ? "–" : $"{EvalReport.Signed(v)} ± {ci:F3}";

    /// <summary>The console table, the HPRD mask IoU and where the files went (`wte eval`, `wte demo`).</summary>
    private static void PrintEvaluation(TextWriter stdout, EvaluateJobResult result)
    {
        stdout.WriteLine(EvalReport.ConsoleTable(result.Summary));
        if (result.Overlaps.Count > 0)
        {
            stdout.WriteLine("mask IoU (HPRD)   within groups  across groups");
            foreach (var o in result.Overlaps)
                stdout.WriteLine($"  {o.Subset,-12} {o.Setting.PadRight(Math.Max(18, result.Overlaps.Max(x => x.Setting.Length)))} {o.WithinGroups,8:F3}  {o.AcrossGroups,8:F3}");
        }
        if (result.LearnedVsRandom.Count > 0)
        {
            stdout.WriteLine();
            stdout.WriteLine("HPRD − random (same keep, paired over the same edits; ± 95 %)");
            int width = Math.Max(18, result.LearnedVsRandom.Max(d => d.Setting.Length));
            stdout.WriteLine($"  {"subset",-12} {"setting".PadRight(width)} {"pairs",5}  {"ΔGR",-15} {"ΔLR broad",-15}");
            foreach (var d in result.LearnedVsRandom)
                stdout.WriteLine($"  {d.Subset,-12} {d.Setting.PadRight(width)} {d.Pairs,5}  {Signed(d.Gr, d.GrCi),-15} {Signed(d.LrBroad, d.LrBroadCi),-15}");
        }
        var hprdGaps = result.FrontGaps.Where(g => g.Setting.StartsWith("hprd", StringComparison.Ordinal)
            && g.Locality == (result.FrontGaps.Any(x => x.Locality == "broad") ? "broad" : "sensitive")).ToList();
        if (hprdGaps.Count > 0)
        {
            int width = Math.Max(18, hprdGaps.Max(g => g.Setting.Length));
            stdout.WriteLine();
            stdout.WriteLine($"HPRD against the fronts (GR − the front's GR at the same LR {hprdGaps[0].Locality}; 95 % resampling interval)");
            foreach (var g in hprdGaps)
                stdout.WriteLine($"  {g.Subset,-12} {g.Setting.PadRight(width)} {g.Front,-13} {Gap(g)}");
        }
        stdout.WriteLine($"wrote {result.EditsPath}, {result.SummaryPath} and {result.PlotFiles} plot files in {result.PlotsFolder}");
    }
}

using System.CommandLine;
using System.Globalization;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.Jobs;
using WhereToEdit.Engine.Training;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command BenchmarkBroadCommand(CliOutput io)
    {
        var model = new Option<string>("--model") { Description = "the base model the benchmark was built for", Required = true };
        var data = new Option<string>("--data") { Description = "folder with the Fashion-MNIST IDX files (the t10k test split is used)", DefaultValueFactory = _ => LabeledImagesIdx.DebianFashionMnist };
        var benchmark = new Option<string>("--benchmark") { Description = "the benchmark folder (holding manifest.json) to add the set to", Required = true };
        var count = new Option<int>("--count") { Description = "images, equally from every class", DefaultValueFactory = _ => BroadLocality.DefaultCount };
        var seed = new Option<ulong>("--seed") { Description = "seeds the per-class samples", DefaultValueFactory = _ => 0UL };
        var threads = ThreadsOption();
        var command = new Command("broad", "Add a broad locality set (correctly classified test images from every class) to a benchmark folder.")
        {
            model, data, benchmark, count, seed, threads,
        };
        command.SetAction(parse =>
        {
            var r = BenchmarkBuildJob.AddBroadLocality(new BroadLocalityJobOptions
            {
                ModelPath = parse.GetValue(model)!, DataPath = parse.GetValue(data)!, BenchmarkPath = parse.GetValue(benchmark)!,
                Count = parse.GetValue(count), Seed = parse.GetValue(seed), Backend = new BackendChoice { Threads = parse.GetValue(threads) },
            }, io.Progress());
            return io.Print(parse, r, stdout => stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"wrote {r.Images} images ({r.PerClass} per class) to {r.ImagesPath} ({r.Bytes / 1024.0:F1} KiB with the labels)")));
        });
        return command;
    }

    private static Command BenchmarkInfoCommand(CliOutput io)
    {
        var path = new Argument<string>("MANIFEST") { Description = "a manifest.json or the folder holding it" };
        var command = new Command("info", "Check a benchmark manifest (strictly) and print its subsets, groups and notes.") { path };
        command.SetAction(parse =>
        {
            var m = BenchmarkManifest.Read(parse.GetValue(path)!);
            var summary = new
            {
                m.Name, BaseModel = m.BaseModelFingerprint, m.Notes,
                Subsets = m.Subsets.Select(s => new { s.Name, s.Kind, Groups = s.Groups.Count, Images = s.Groups.Sum(g => g.Images.Count) }).ToList(),
                Locality = new { m.Locality.Name, Images = m.Locality.Images.Count, m.Locality.Margin },
            };
            return io.Print(parse, summary, stdout =>
            {
                stdout.WriteLine($"{m.Name}  (base model {m.BaseModelFingerprint ?? "unknown"})");
                PrintBenchmark(stdout, summary.Subsets.Select(s => (s.Name, s.Kind, s.Groups, s.Images, (int?)null, (int?)null)),
                    m.Locality.Name, m.Locality.Images.Count, m.Locality.Margin, withStats: false);
                foreach (string note in m.Notes) stdout.WriteLine($"  note: {note}");
            });
        });
        return command;
    }

    private static void PrintBenchmark(TextWriter stdout, IEnumerable<(string Name, BenchmarkSubsetKind Kind, int Groups, int Images, int? Failures, int? Eligible)> rows,
                                       string localityName, int localityImages, double margin, bool withStats)
    {
        stdout.WriteLine(withStats ? $"{"subset",-16} {"kind",-8} {"groups",6} {"images",7} {"failures",9} {"eligible",9}"
                                   : $"{"subset",-16} {"kind",-8} {"groups",6} {"images",7}");
        foreach (var (n, kind, groups, images, failures, eligible) in rows)
        {
            string k = kind == BenchmarkSubsetKind.Natural ? "natural" : "style";
            stdout.WriteLine(failures is null ? $"{n,-16} {k,-8} {groups,6} {images,7}" : $"{n,-16} {k,-8} {groups,6} {images,7} {failures,9} {eligible,9}");
        }
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{"locality",-16} {localityName,-8} {"",6} {localityImages,7}   margin < {margin}"));
    }
}

using System.CommandLine;
using System.Text.Json;
using WhereToEdit.Engine.Jobs;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command BenchCommand(CliOutput io)
    {
        var model = new Option<string>("--model") { Description = "model preset (vit_tiny_patch16_224, vit_small_patch16_224, vit_base_patch16_224, ...)", DefaultValueFactory = _ => "vit_tiny_patch16_224" };
        var batch = new Option<int>("--batch") { Description = "images per forward / forward+backward", DefaultValueFactory = _ => 1 };
        var seconds = new Option<double>("--seconds") { Description = "minimum time per measurement", DefaultValueFactory = _ => 3.0 };
        var keep = new Option<double>("--keep") { Description = "fraction of hidden units the edit step's mask keeps", DefaultValueFactory = _ => 0.1 };
        var profile = new Option<bool>("--profile") { Description = "also print time per op, a table for each phase (forward, forward+backward, edit step; ms per call, ops synchronised one by one)" };
        var device = DeviceOption();
        var threads = ThreadsOption();
        var gemm = GemmOption();
        var precision = PrecisionOption();
        var command = new Command("bench", "Time a ViT preset's forward, forward+backward and HPRD edit step (fp32 unless --precision bf16, random weights).")
        {
            model, batch, device, threads, gemm, precision, seconds, keep, profile,
        };
        command.SetAction(parse =>
        {
            var job = BenchJob.Run(new BenchJobOptions
            {
                Model = parse.GetValue(model)!, Batch = parse.GetValue(batch), Seconds = parse.GetValue(seconds), Keep = parse.GetValue(keep), Profile = parse.GetValue(profile),
                Backend = new BackendChoice { Device = parse.GetValue(device)!, Threads = parse.GetValue(threads), Gemm = parse.GetValue(gemm)!, Precision = parse.GetValue(precision)! },
            });
            var result = job.Timing;
            var stdout = io.Out;
            if (io.Json(parse))
                stdout.WriteLine(JsonSerializer.Serialize(result));
            else
            {
                stdout.WriteLine($"{result.Model}  batch {result.Batch}  {result.Backend}  {result.Dtype}");
                stdout.WriteLine($"  forward            {result.ForwardImagesPerS,9:F2} images/s  ({result.ForwardGflopsPerS:F1} GFLOP/s)");
                stdout.WriteLine($"  forward+backward   {result.ForwardBackwardImagesPerS,9:F2} images/s  ({result.GflopsPerS:F1} GFLOP/s)");
                stdout.WriteLine($"  edit step (B=1)    {result.EditStepMs,9:F2} ms        (blocks {string.Join(",", result.EditBlocks)}, keep {result.EditKeep})");
            }
            if (job.Profile is { } table) (io.Json(parse) ? io.Err : stdout).WriteLine(table);
            return 0;
        });
        return command;
    }
}

using System.CommandLine;
using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Backends.Gpu;
using WhereToEdit.Engine.Backends.Gpu.Diagnostics;
using WhereToEdit.Engine.IO;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    /// <summary>
    /// `wte gpu-check`: the GPU backend's parity suite and timings on a CUDA device (see GpuCheck). Progress goes to
    /// stderr, the report (markdown, or JSON with --json) to stdout; --out also writes gpu-check.md/.json, --results
    /// splices the markdown into a results file. Exit 0: every parity check passed; 2: some failed; 1: no CUDA device
    /// or another error.
    /// </summary>
    private static Command GpuCheckCommand(CliOutput io)
    {
        var outDir = new Option<string?>("--out") { Description = "also write gpu-check.md and gpu-check.json into this folder" };
        var results = new Option<string?>("--results") { Description = "splice the markdown into this file between <!-- gpu-check:begin/end --> markers (e.g. perf/RESULTS.md)" };
        var seconds = new Option<double>("--seconds") { Description = "minimum time per measurement", DefaultValueFactory = _ => 2.0 };
        var deviceIndex = new Option<int>("--device-index") { Description = "CUDA device index", DefaultValueFactory = _ => 0 };
        var threads = new Option<int>("--threads") { Description = "CPU reference backend threads (default: all cores)", DefaultValueFactory = _ => 0 };
        var gemmSize = new Option<int>("--gemm-size") { Description = "SGEMM size n (n×n×n)", DefaultValueFactory = _ => 4096 };
        var noParity = new Option<bool>("--no-parity") { Description = "skip the parity suite" };
        var noTimings = new Option<bool>("--no-timings") { Description = "skip the timings" };
        var command = new Command("gpu-check", "On a CUDA device: every GPU op and native kernel against the CPU backend, then SGEMM (ours vs cuBLAS), ViT-B/16 throughput, the HPRD edit step and the fused masked RMSprop timings.")
        {
            outDir, results, seconds, deviceIndex, threads, gemmSize, noParity, noTimings,
        };
        command.SetAction(parse =>
        {
            double s = parse.GetValue(seconds);
            string? dir = parse.GetValue(outDir) is { Length: > 0 } d ? d : null;
            if (!(s > 0)) throw new ArgumentException($"--seconds {s}: must be positive");
            int n = parse.GetValue(gemmSize);
            if (n <= 0) throw new ArgumentException($"--gemm-size {n}: must be positive");
            new CommandPaths().OutputFolder(dir, "--out", name => name is "gpu-check.md" or "gpu-check.json").Check();
            if (!GpuBackend.TryCreateCuda(new GpuBackendOptions { DeviceIndex = parse.GetValue(deviceIndex) }, out var gpu, out string reason))
                throw new DeviceUnavailableException($"gpu-check needs a CUDA device: {reason}");
            using var _ = gpu;
            var options = new GpuCheckOptions
            {
                DeviceIndex = parse.GetValue(deviceIndex), Seconds = s, CpuThreads = parse.GetValue(threads), GemmSize = n,
                Parity = !parse.GetValue(noParity), Timings = !parse.GetValue(noTimings),
            };
            var result = GpuCheck.Run(gpu!, options, io.Err);
            string markdown = GpuCheck.Markdown(result);
            string report = GpuCheck.ToJson(result);
            if (dir is not null)
            {
                AtomicFile.WriteAllText(Path.Combine(dir, "gpu-check.md"), markdown);
                AtomicFile.WriteAllText(Path.Combine(dir, "gpu-check.json"), report);
            }
            if (parse.GetValue(results) is { Length: > 0 } file) GpuCheck.Splice(file, markdown);
            io.Out.Write(io.Json(parse) ? report + "\n" : markdown);
            return result.ParityPassed ? 0 : 2;
        });
        return command;
    }
}

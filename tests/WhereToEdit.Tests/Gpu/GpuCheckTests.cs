using WhereToEdit.Cli;
using WhereToEdit.Engine.Backends.Conformance;
using WhereToEdit.Engine.Backends.Gpu;
using WhereToEdit.Engine.Backends.Reference;
using WhereToEdit.Engine.Backends.Gpu.Diagnostics;
using WhereToEdit.Engine.Models;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Gpu;

/// <summary>
/// `wte gpu-check` without a device: the refusal, the parity suite and the timing code on the CPU emulator at tiny
/// shapes (native kernels through their host emulation), the markdown report and the RESULTS.md splice.
/// </summary>
[Collection(GpuEmulatorCollection.Name)]
public sealed class GpuCheckTests(GpuEmulatorFixture f, ITestOutputHelper output)
{
    [SkippableFact]
    public void Gpu_check_without_a_cuda_device_exits_1_and_says_why()
    {
        bool found = GpuBackend.TryCreateCuda(out var gpu, out string reason);
        gpu?.Dispose();
        Skip.If(found, $"this machine has a CUDA device ({reason})");
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = WteCommands.Run(["gpu-check", "--no-timings"], stdout, stderr);
        output.WriteLine(stderr.ToString());
        Assert.Equal(1, code);
        Assert.StartsWith("wte: gpu-check needs a CUDA device: no CUDA device", stderr.ToString());
        Assert.Equal("", stdout.ToString());
        Assert.Equal(1, WteCommands.Run(["gpu-check", "--seconds", "0"], new StringWriter(), stderr));
    }

    [Fact]
    public void The_parity_suite_passes_on_the_emulator_at_tiny_shapes()
    {
        using var reference = new ReferenceBackend();
        var checks = GpuParity.Run(f.Gpu, reference, ParityShapes.Tiny, c => output.WriteLine($"{(c.Passed ? "ok  " : "FAIL")} {c.RelativeError:E2} {c.Name} {c.Detail}"));
        Assert.True(checks.Count > 60, $"only {checks.Count} checks");
        // Every shared conformance case ran against the reference backend (so a wrong kernel cannot go unchecked).
        foreach (var c in ConformanceSuite.Cases) Assert.Contains(checks, check => check.Name.StartsWith(c.Name + ": ", StringComparison.Ordinal));
        Assert.All(checks, c => Assert.True(c.Passed, $"{c.Name}: {c.RelativeError:E2} > {c.Tolerance:E0} ({c.Detail})"));
        // Both paths of the masked optimizers and every native-only op are in the suite.
        Assert.Contains(checks, c => c.Name.StartsWith("rmsprop row mask", StringComparison.Ordinal) && c.Name.EndsWith(" native", StringComparison.Ordinal));
        Assert.Contains(checks, c => c.Name.StartsWith("sgd column mask", StringComparison.Ordinal) && !c.Name.EndsWith(" native", StringComparison.Ordinal));
        foreach (string kernel in new[] { "dw1_rows_gather", "dw2_cols_gather", "masked_rmsprop_rows_compact", "masked_sgd_cols_compact", "per_sample_delta_rows", "per_sample_delta_cols" })
            Assert.Contains(checks, c => c.Name.Contains(kernel, StringComparison.Ordinal));
        Assert.Contains(checks, c => c.Name.Contains("backward", StringComparison.Ordinal) && c.Name.StartsWith("vit", StringComparison.Ordinal));
        Assert.False(f.Gpu.NativeMaskedOptimizers);   // restored
    }

    [Fact]
    public void Relative_error_is_normwise_and_fails_on_non_finite_output()
    {
        Assert.Equal(0.1, GpuParity.RelativeError([1.1f, 0f], [1f, 0f]), 6);
        Assert.Equal(0.5, GpuParity.RelativeError([0.5f], [0f]), 6);
        Assert.Equal(double.PositiveInfinity, GpuParity.RelativeError([float.NaN], [1f]));
        Assert.Equal(0, GpuParity.RelativeError([float.NaN, 1f], [float.NaN, 1f]));   // NaN where the reference has NaN too
        Assert.False(new ParityCheck { Name = "x", RelativeError = double.NaN, Tolerance = 1 }.Passed);
    }

    [Fact]
    public void The_timings_run_on_the_emulator_at_tiny_sizes_and_the_report_renders()
    {
        var options = new GpuCheckOptions
        {
            Parity = false, Seconds = 0.01, GemmSize = 40, VitModel = "tiny",
            VitConfig = new VitConfig { ImageSize = 8, PatchSize = 4, EmbedDim = 8, Depth = 2, NumHeads = 2, MlpHidden = 16, NumClasses = 3 }, ForwardBatch = 2, TrainBatch = 2, MaskedHidden = 40, MaskedDim = 12, MaskedBatch = 1,
        };
        var log = new StringWriter();
        var result = GpuCheck.Run(f.Gpu, options, log);
        output.WriteLine(log.ToString());
        var names = result.Timings.Select(t => t.Name).ToArray();
        Assert.Contains("SGEMM 40³ ILGPU GemmKernel", names);
        Assert.Contains(names, n => n.Contains("ILGPU masked kernel", StringComparison.Ordinal));
        Assert.Contains(names, n => n.Contains("forward+backward, batch 2", StringComparison.Ordinal));
        Assert.Contains(names, n => n.Contains("HPRD edit step", StringComparison.Ordinal));
        Assert.All(result.Timings, t => Assert.True(t.Value > 0 && double.IsFinite(t.Value), t.Name));
        Assert.Contains(result.Notes, n => n.StartsWith("cuBLAS SGEMM: not measured: not on CUDA", StringComparison.Ordinal));
        Assert.False(f.Gpu.NativeMaskedOptimizers);

        var failed = result with { Parity = [new ParityCheck { Name = "bad", RelativeError = double.PositiveInfinity, Tolerance = 1e-4, Detail = "boom" }] };
        using (var json = System.Text.Json.JsonDocument.Parse(GpuCheck.ToJson(failed)))
        {
            var root = json.RootElement;
            Assert.Equal(result.Device.Name, root.GetProperty("device").GetProperty("name").GetString());
            Assert.Equal("Infinity", root.GetProperty("parity")[0].GetProperty("rel_err").GetString());
            Assert.False(root.GetProperty("parity_passed").GetBoolean());
            Assert.Equal(result.Timings.Count, root.GetProperty("timings").GetArrayLength());
        }

        string md = GpuCheck.Markdown(result with
        {
            Parity = [new ParityCheck { Name = "gemm NN", RelativeError = 2e-7, Tolerance = 1e-4 }, new ParityCheck { Name = "bad | op", RelativeError = double.PositiveInfinity, Tolerance = 1e-4, Detail = "boom" }],
        });
        output.WriteLine(md);
        Assert.Contains(result.Device.Name, md);
        Assert.Contains("NVIDIA driver", md);
        Assert.Contains("| timing | value | unit | notes |", md);
        Assert.Contains("**1 of 2 passed**", md);
        Assert.Contains("| bad \\| op | ∞ | 1E-4 | **FAIL** | boom |", md.Replace("Infinity", "∞", StringComparison.Ordinal));
    }

    [Fact]
    public void The_report_is_spliced_between_its_markers_and_leaves_the_rest_of_results_md_alone()
    {
        string dir = Path.Combine(Path.GetTempPath(), "wte-gpu-check-" + Guid.NewGuid().ToString("N"));
        try
        {
            string path = Path.Combine(dir, "RESULTS.md");
            GpuCheck.Splice(path, "first table\n");
            string created = File.ReadAllText(path);
            Assert.StartsWith("# Performance results", created);
            Assert.Contains($"{GpuCheck.BeginMarker}\nfirst table\n{GpuCheck.EndMarker}", created);
            File.WriteAllText(path, "# Performance results\n\n## CPU\n\n<!-- cpu-bench:begin -->\ncpu table\n<!-- cpu-bench:end -->\n\n## GPU\n\n"
                                    + $"{GpuCheck.BeginMarker}\nold\n{GpuCheck.EndMarker}\n\nfooter\n");
            GpuCheck.Splice(path, "new table");
            string text = File.ReadAllText(path);
            Assert.Equal("# Performance results\n\n## CPU\n\n<!-- cpu-bench:begin -->\ncpu table\n<!-- cpu-bench:end -->\n\n## GPU\n\n"
                         + $"{GpuCheck.BeginMarker}\nnew table\n{GpuCheck.EndMarker}\n\nfooter\n", text);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}

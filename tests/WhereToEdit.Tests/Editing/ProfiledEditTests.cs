using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Backends.Reference;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Jobs;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using Xunit;

namespace WhereToEdit.Tests.Editing;

/// <summary>
/// `wte bench --profile` times the edit step through a profiling wrapper: over the CPU backend the wrapper has the edit
/// kernels too, so the profiled edit runs the EditPass users run (before, the wrapper hid them and the profile showed
/// the full path), with the same numbers; and it profiles each phase (forward, forward+backward, edit step) on its own.
/// </summary>
public sealed class ProfiledEditTests
{
    private static readonly VitConfig Config = new()
    {
        ImageSize = 16, PatchSize = 4, InChans = 3, EmbedDim = 16, Depth = 4, NumHeads = 2, MlpHidden = 32, NumClasses = 5,
    };

    private static float[] EditedWeights(IBackend be, out ProfilingBackend? profile)
    {
        profile = be as ProfilingBackend;
        using var model = new VitModel(be, Config);
        TestModels.Randomise(model, 1);
        var target = EditTarget.Default(Config);
        var rng = new Rng(7);
        var image = Enumerable.Range(0, 3 * 16 * 16).Select(_ => (float)rng.NextNormal()).ToArray();
        using var editor = new ModelEditor(model, target);
        editor.Edit(image, [2], EditMask.Random(target, 0.25, seed: 3), new EditOptions { LearningRate = 1e-2f, MaxSteps = 3, StopLoss = -1 });
        return target.Units.SelectMany(u => model[u.Parameter].Value.ToArray()).ToArray();
    }

    [Fact]
    public void A_profiled_edit_runs_the_edit_pass_with_the_same_result()
    {
        using var cpu = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        var plain = EditedWeights(cpu, out _);
        using var wrapped = ProfilingBackend.Wrap(new CpuBackend(new CpuBackendOptions { Threads = 2 }));
        Assert.IsAssignableFrom<IEditKernels>(wrapped);
        var profiled = EditedWeights(wrapped, out var profile);
        Assert.Equal(plain, profiled);
        string report = profile!.Report();
        Assert.Contains("cls_attention_fwd", report);   // only the EditPass runs the [CLS]-only attention
        Assert.Contains("gather_columns", report);
    }

    [Fact]
    public void The_bench_profile_has_a_table_per_phase_with_each_phases_own_ops()
    {
        var result = BenchJob.Run(new BenchJobOptions
        {
            Model = "test_tiny", Seconds = 0.01, Profile = true, Backend = new BackendChoice { Threads = 2, Gemm = "managed" },
        });
        var phases = result.Profile!.Split(Environment.NewLine + Environment.NewLine);
        Assert.Equal(3, phases.Length);
        Assert.StartsWith("forward (batch 1): ", phases[0]);
        Assert.StartsWith("forward+backward (batch 1): ", phases[1]);
        Assert.StartsWith("edit step (batch 1, blocks ", phases[2]);
        // A forward computes no gradient and touches no optimizer state; a training step does; the edit step runs the EditPass.
        Assert.DoesNotContain("gemm (input grad)", phases[0]);
        Assert.DoesNotContain("fill", phases[0]);
        Assert.Contains("gemm (weight grad)", phases[1]);
        Assert.DoesNotContain("rmsprop_step", phases[1]);
        Assert.Contains("rmsprop_step", phases[2]);
        Assert.Contains("cls_attention_fwd", phases[2]);
        foreach (string phase in phases)
        {
            // "all ops" per call is at most the phase's own time per call (the ops are a part of it; both printed to 0.01 ms).
            var lines = phase.Split(Environment.NewLine);
            double perCall = double.Parse(lines[0].Split(": ")[1].Split(" ms")[0], System.Globalization.CultureInfo.InvariantCulture);
            // "all ops  CALLS  TOTAL  MS/CALL  SHARE %": ms per call is third from the end.
            var all = lines.Single(l => l.StartsWith("all ops")).Split(' ', StringSplitOptions.RemoveEmptyEntries);
            double opsPerCall = double.Parse(all[^3], System.Globalization.CultureInfo.InvariantCulture);
            Assert.InRange(opsPerCall, 0.0, perCall + 0.01);
        }
    }

    [Fact]
    public void A_backend_without_edit_kernels_is_wrapped_without_them()
    {
        using var wrapped = ProfilingBackend.Wrap(new ReferenceBackend());
        Assert.False(wrapped is IEditKernels);
    }
}

using System.Diagnostics;
using System.Text.Json.Serialization;
using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Perf;

/// <summary>One `wte bench` measurement (fp32, random weights and inputs).</summary>
public sealed record BenchResult
{
    [JsonPropertyName("model")] public required string Model { get; init; }
    [JsonPropertyName("batch")] public required int Batch { get; init; }
    [JsonPropertyName("threads")] public required int Threads { get; init; }
    [JsonPropertyName("device")] public required string Device { get; init; }
    [JsonPropertyName("backend")] public required string Backend { get; init; }
    [JsonPropertyName("dtype")] public string Dtype { get; init; } = "fp32";
    [JsonPropertyName("forward_images_per_s")] public double ForwardImagesPerS { get; init; }
    [JsonPropertyName("forward_backward_images_per_s")] public double ForwardBackwardImagesPerS { get; init; }
    /// <summary>One HPRD-shaped edit step at batch 1: blocks from the first edited one to the last, forward + backward,
    /// weight gradients for the edited fc1/fc2 matrices only, then the masked RMSprop update (blocks before are cached).</summary>
    [JsonPropertyName("edit_step_ms")] public double EditStepMs { get; init; }
    /// <summary>Achieved GFLOP/s of the forward+backward (3 × the executed forward FLOPs).</summary>
    [JsonPropertyName("gflops_per_s")] public double GflopsPerS { get; init; }
    [JsonPropertyName("forward_gflops_per_s")] public double ForwardGflopsPerS { get; init; }
    /// <summary>The model's forward FLOPs per image (every token through every block, as the peers run it).</summary>
    [JsonPropertyName("forward_gflop_per_image")] public double ForwardGflopPerImage { get; init; }
    /// <summary>The FLOPs wte executes per image (the last block for [CLS] only where the backend can): the GFLOP/s use these.</summary>
    [JsonPropertyName("forward_gflop_per_image_executed")] public double ForwardGflopPerImageExecuted { get; init; }
    [JsonPropertyName("edit_blocks")] public required int[] EditBlocks { get; init; }
    [JsonPropertyName("edit_keep")] public double EditKeep { get; init; }
}

/// <summary>Times forward, forward+backward and the edit step of a ViT on one backend.</summary>
internal static class VitBenchmark
{
    /// <summary>The paper's edited blocks (7, 8, 9 of 12), scaled to other depths.</summary>
    public static int[] DefaultEditBlocks(int depth) => EditTarget.DefaultBlocks(depth);

    public static BenchResult Run(IBackend backend, string modelName, VitConfig config, int batch, string device,
                                  double secondsPerMeasurement = 3, double keep = 0.1, ulong seed = 0)
    {
        if (batch <= 0) throw new ArgumentOutOfRangeException(nameof(batch), batch, "--batch must be positive");
        using var model = new VitModel(backend, config);
        model.InitializeRandom(seed);
        double forward = ForwardImagesPerSecond(model, batch, secondsPerMeasurement, seed);
        double forwardBackward = ForwardBackwardImagesPerSecond(model, batch, secondsPerMeasurement, seed);
        int[] editBlocks = DefaultEditBlocks(config.Depth);
        double editMs = EditStepMilliseconds(backend, model, editBlocks, keep, seed, secondsPerMeasurement);

        double gflopPerImage = 2 * config.ForwardMacs() / 1e9;
        double executed = 2 * config.ForwardMacs(model.LastBlockRunsClsOnly) / 1e9;
        return new BenchResult
        {
            Model = modelName, Batch = batch, Threads = backend.Threads, Device = device, Backend = backend.Name,
            Dtype = backend is CpuBackend { Precision: CpuPrecision.Bf16 } ? "bf16-linear" : "fp32",
            ForwardImagesPerS = forward, ForwardBackwardImagesPerS = forwardBackward, EditStepMs = editMs,
            GflopsPerS = 3 * executed * forwardBackward, ForwardGflopsPerS = executed * forward,
            ForwardGflopPerImage = gflopPerImage, ForwardGflopPerImageExecuted = executed, EditBlocks = editBlocks, EditKeep = keep,
        };
    }

    /// <summary>Forward throughput (images/s) of <paramref name="model"/> at <paramref name="batch"/>, random images.</summary>
    public static double ForwardImagesPerSecond(VitModel model, int batch, double seconds, ulong seed = 0)
        => Forward(model, batch, seed, step => ImagesPerSecond(batch, seconds, step));

    private static double Forward(VitModel model, int batch, ulong seed, Func<Action, double> measure)
    {
        var backend = model.Backend;
        using var ws = model.CreateWorkspace(batch);
        using var images = RandomImages(model, batch, seed);
        return measure(() =>
        {
            model.Forward(ws, images, batch);
            backend.Synchronize();
        });
    }

    /// <summary>Forward + cross-entropy + full backward throughput (images/s) at <paramref name="batch"/>.</summary>
    public static double ForwardBackwardImagesPerSecond(VitModel model, int batch, double seconds, ulong seed = 0)
        => ForwardBackward(model, batch, seed, step => ImagesPerSecond(batch, seconds, step));

    private static double ForwardBackward(VitModel model, int batch, ulong seed, Func<Action, double> measure)
    {
        var backend = model.Backend;
        var config = model.Config;
        using var ws = model.CreateWorkspace(batch);
        using var images = RandomImages(model, batch, seed);
        var rng = new Rng(seed + 3);
        var labelValues = new float[batch];
        for (int i = 0; i < batch; i++) labelValues[i] = rng.NextInt(0, config.NumClasses);
        using var labels = backend.FromHost("bench.labels", labelValues, batch);
        return measure(() =>
        {
            model.Forward(ws, images, batch);
            backend.CrossEntropy(ws.Logits, labels, ws.Losses, ws.DLogits, batch, config.NumClasses, 1f / batch);
            model.ZeroGrad();
            model.Backward(ws, batch, BackwardOptions.Full);
            backend.Synchronize();
        });
    }

    private static Tensor RandomImages(VitModel model, int batch, ulong seed)
    {
        var config = model.Config;
        var rng = new Rng(seed + 1);
        var pixels = new float[(long)batch * config.InChans * config.ImageSize * config.ImageSize];
        for (long i = 0; i < pixels.Length; i++) pixels[i] = (float)rng.NextNormal();
        return model.Backend.FromHost("bench.images", pixels, batch, config.InChans, config.ImageSize, config.ImageSize);
    }

    /// <summary>
    /// The HPRD edit step at batch 1, timed on the editor users run (<see cref="ModelEditor.Step"/>): blocks before the
    /// first edited block are computed once and cached; each step re-runs the rest forward, checks the stop rule,
    /// runs the backward with weight gradients for the edited matrices only and the masked RMSprop update (a random
    /// mask keeping a <paramref name="keep"/> fraction of each unit's hidden neurons). The stop rule is switched off
    /// (StopLoss −1) so every timed call is a full step. The model's weights are restored afterwards.
    /// </summary>
    public static double EditStepMilliseconds(IBackend backend, VitModel model, int[] editBlocks, double keep, ulong seed, double seconds)
        => 1000 / EditStep(backend, model, editBlocks, keep, seed, step => ImagesPerSecond(1, seconds, step));

    private static double EditStep(IBackend backend, VitModel model, int[] editBlocks, double keep, ulong seed, Func<Action, double> measure)
    {
        if (!ReferenceEquals(backend, model.Backend)) throw new ArgumentException("the model lives on another backend", nameof(backend));
        var config = model.Config;
        var rng = new Rng(seed + 2);
        var pixels = new float[config.InChans * config.ImageSize * config.ImageSize];
        for (int i = 0; i < pixels.Length; i++) pixels[i] = (float)rng.NextNormal();
        int label = rng.NextInt(0, config.NumClasses);
        var target = new EditTarget(config, editBlocks);
        using var editor = new ModelEditor(model, target);
        var options = new EditOptions { Method = EditMethod.Hprd, LearningRate = 2e-5f, MaxSteps = int.MaxValue, StopLoss = -1 };
        editor.Begin(pixels, [label], EditMask.Random(target, keep, seed + 3), options);
        double result = measure(() =>
        {
            editor.Step();
            backend.Synchronize();
        });
        editor.Revert();
        return result;
    }

    /// <summary>
    /// Time per op of each phase on its own (forward, forward+backward, edit step): two warm-up calls, then
    /// <paramref name="iterations"/> profiled calls; each table gives the op's time per call of the phase, so the forward's
    /// can be set beside another runtime's per-op profile of one inference.
    /// </summary>
    public static string Profile(ProfilingBackend profiled, VitConfig config, int batch, double keep, int iterations = 3, ulong seed = 0)
    {
        if (iterations <= 0) throw new ArgumentOutOfRangeException(nameof(iterations), iterations, "must be positive");
        using var model = new VitModel(profiled, config);
        model.InitializeRandom(seed);
        var tables = new List<string>();
        Func<Action, double> Profiled(string phase) => step =>
        {
            step();
            step();   // as ImagesPerSecond: the second call packs the weights
            profiled.Reset();
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < iterations; i++) step();
            tables.Add($"{phase}: {sw.Elapsed.TotalMilliseconds / iterations:F2} ms per call, ops synchronised one by one "
                       + $"(mean of {iterations} calls after two warm-up calls)" + Environment.NewLine + profiled.Report(iterations));
            return 0;
        };
        Forward(model, batch, seed, Profiled($"forward (batch {batch})"));
        ForwardBackward(model, batch, seed, Profiled($"forward+backward (batch {batch})"));
        int[] editBlocks = DefaultEditBlocks(config.Depth);
        EditStep(profiled, model, editBlocks, keep, seed, Profiled($"edit step (batch 1, blocks {string.Join(",", editBlocks)}, keep {keep})"));
        return string.Join(Environment.NewLine + Environment.NewLine, tables);
    }

    /// <summary>Two warm-up calls, then repeats for at least <paramref name="seconds"/> (and 3 calls); returns images/s.</summary>
    private static double ImagesPerSecond(int batch, double seconds, Action step)
    {
        // Two, because the second call is the one that packs each weight it sees unchanged again (a one-time cost of
        // half a second for ViT-B's backward layouts on these VMs, where fresh memory faults in slowly); the peers in
        // perf/ warm up the same way.
        step();
        step();
        var sw = Stopwatch.StartNew();
        int iterations = 0;
        do
        {
            step();
            iterations++;
        } while (sw.Elapsed.TotalSeconds < seconds || iterations < 3);
        return iterations * batch / sw.Elapsed.TotalSeconds;
    }
}

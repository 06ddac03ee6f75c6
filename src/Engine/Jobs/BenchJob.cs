using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Perf;

namespace WhereToEdit.Engine.Jobs;

/// <summary>What `wte bench` is asked to time.</summary>
public sealed record BenchJobOptions
{
    /// <summary>A model preset (random weights).</summary>
    public string Model { get; init; } = "vit_tiny_patch16_224";
    public int Batch { get; init; } = 1;
    /// <summary>Minimum time per measurement.</summary>
    public double Seconds { get; init; } = 3.0;
    /// <summary>Fraction of hidden units the edit step's mask keeps.</summary>
    public double Keep { get; init; } = 0.1;
    /// <summary>Also time every op of each phase (a second run on a <see cref="ProfilingBackend"/>, ops synchronised one by one).</summary>
    public bool Profile { get; init; }
    public BackendChoice Backend { get; init; } = new();
}

/// <summary>The timings, and the per-op table when profiled.</summary>
public sealed record BenchJobResult
{
    public required BenchResult Timing { get; init; }
    /// <summary>Time per op, one text table per phase (forward, forward+backward, edit step), with <see cref="BenchJobOptions.Profile"/>.</summary>
    public string? Profile { get; init; }
}

/// <summary>Times a preset's forward, forward+backward and HPRD edit step (<see cref="VitBenchmark"/>).</summary>
public static class BenchJob
{
    public static BenchJobResult Run(BenchJobOptions o, IJobProgress? progress = null, CancellationToken cancel = default)
    {
        progress ??= NullJobProgress.Instance;
        var config = VitConfig.Preset(o.Model);
        if (o.Batch <= 0) throw new ArgumentException($"--batch {o.Batch}: must be positive");
        if (!(o.Keep > 0 && o.Keep <= 1)) throw new ArgumentException($"--keep {o.Keep}: must be in (0, 1]");
        BenchResult timing;
        using (var backend = o.Backend.Create())
        {
            progress.Note($"bench: {o.Model} batch {o.Batch} on {backend.Name}");
            timing = VitBenchmark.Run(backend, o.Model, config, o.Batch, BackendFactory.DeviceOf(backend), o.Seconds, o.Keep);
        }
        progress.Report(new JobProgress("bench", 1, o.Profile ? 2 : 1, "timed"));
        cancel.ThrowIfCancellationRequested();
        string? profile = null;
        if (o.Profile)
        {
            using var profiled = ProfilingBackend.Wrap(o.Backend.Create());
            profile = VitBenchmark.Profile(profiled, config, o.Batch, o.Keep);
            progress.Report(new JobProgress("bench", 2, 2, "profiled"));
        }
        return new BenchJobResult { Timing = timing, Profile = profile };
    }
}

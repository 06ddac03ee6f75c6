using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Evaluation;

namespace WhereToEdit.Engine.Jobs;

/// <summary>`wte demo`: the shipped Fashion-MNIST model, hypernetwork and benchmark, and the reduced sweep run on them.</summary>
public static class DemoSetup
{
    /// <summary>Where the shipped model, hypernetwork and benchmark live, relative to the repository root.</summary>
    public const string AssetsFolder = "assets/fashion_mnist";

    /// <summary>
    /// The edit learning rate for the shipped model: the paper's 2e-5 for ViT-B/16 (width 768) scaled by 768/64 for
    /// this ViT's width 64 — an RMSprop step moves every selected weight by about lr, and a hidden unit's effect grows
    /// with its row's width. Measured on the benchmark (docs/RESULTS.md): at 2e-5 even full fine-tuning rarely
    /// reaches the stop rule within 100 steps here.
    /// </summary>
    public const float LearningRate = 2e-5f * 768 / 64;

    public static string ModelPath(string assets) => Path.Combine(assets, "vit.safetensors");
    public static string HypernetPath(string assets) => Path.Combine(assets, "hypernet.safetensors");
    public static string ManifestPath(string assets) => Path.Combine(assets, "benchmark", BenchmarkManifest.FileName);

    /// <summary>Finds assets/fashion_mnist from the working directory or the binary's location upwards (or checks the given folder).</summary>
    public static string FindAssets(string? given)
    {
        if (given is not null)
            return File.Exists(ModelPath(given)) ? given : throw new DirectoryNotFoundException($"--assets {given}: no vit.safetensors there");
        foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, AssetsFolder);
                if (File.Exists(ModelPath(candidate))) return candidate;
            }
        throw new DirectoryNotFoundException($"cannot find {AssetsFolder}/ (the shipped model, hypernetwork and benchmark) above {Directory.GetCurrentDirectory()}; run from the repository or pass --assets");
    }

    /// <summary>
    /// The reduced sweep on the shipped assets. Every edit also re-evaluates the broad locality set (the cost that
    /// dominates), so the demo keeps the comparison the paper's claims hinge on: learned vs random masks at keep 0.1
    /// (plus HPRD at 0.25) and fine-tuning. `wte eval` runs the full sweep on all 2000 broad images.
    /// </summary>
    public static EvaluateJobOptions Options(string assets, string outDir, int maxEditsPerGroup, BackendChoice? backend = null, int broadLimit = 500) => new()
    {
        ModelPath = ModelPath(assets),
        HypernetPath = HypernetPath(assets),
        BenchmarkPath = ManifestPath(assets),
        ExplicitSettings =
        [
            new(EditMethod.Hprd, 0.25, 0), new(EditMethod.Hprd, 0.1, 0),
            new(EditMethod.Random, 0.1, 0), new(EditMethod.FtL2, 1, 0.001f),
        ],
        BroadLimit = broadLimit,
        Protocol = new EvalOptions { MaxEditsPerGroup = maxEditsPerGroup, LearningRate = LearningRate },
        OutDir = outDir,
        Title = "wte demo (Fashion-MNIST, reduced sweep)",
        Backend = backend ?? new BackendChoice(),
    };
}

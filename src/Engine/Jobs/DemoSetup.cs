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

    /// <summary>The reduced sweep on the shipped assets: two keep fractions for the masks, two coefficients for fine-tuning.</summary>
    public static EvaluateJobOptions Options(string assets, string outDir, int maxEditsPerGroup, BackendChoice? backend = null) => new()
    {
        ModelPath = ModelPath(assets),
        HypernetPath = HypernetPath(assets),
        BenchmarkPath = ManifestPath(assets),
        Methods = ["hprd", "random", "ft-l1", "ft-l2"],
        Keeps = [0.25, 0.1],
        Coefficients = [0.01, 0.001],
        Protocol = new EvalOptions { MaxEditsPerGroup = maxEditsPerGroup, LearningRate = LearningRate },
        OutDir = outDir,
        Title = "wte demo (Fashion-MNIST, reduced sweep)",
        Backend = backend ?? new BackendChoice(),
    };
}

using System.Security.Cryptography;
using WhereToEdit.Cli;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Tests.Reliability;

/// <summary>Small valid inputs to break, and the outcome checks every hostile-input test makes.</summary>
internal static class HostileSupport
{
    public static readonly VitConfig TinyConfig = new() { ImageSize = 16, PatchSize = 4, InChans = 3, EmbedDim = 16, Depth = 4, NumHeads = 2, MlpHidden = 32, NumClasses = 4 };
    public static readonly Preprocessing TinyPreprocessing = new(ResizeMode.Direct, 16, 16, Interpolation.Bilinear, [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]);

    /// <summary>Writes a tiny random ViT (with wte metadata) and returns its path.</summary>
    public static string Model(string path, int seed = 3, VitConfig? config = null, Preprocessing? preprocessing = null)
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 1 });
        using var model = new VitModel(be, config ?? TinyConfig);
        TestModels.Randomise(model, (ulong)seed, headStd: 0.2);
        VitCheckpoint.Save(model, path, preprocessing ?? TinyPreprocessing, ["a", "b", "c", "d"]);
        return path;
    }

    public static string Png(string path, int size = 16, int seed = 1)
    {
        var random = new Random(seed);
        using var img = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(size, size);
        for (int y = 0; y < size; y++) for (int x = 0; x < size; x++) img[x, y] = new((byte)random.Next(256), (byte)random.Next(256), (byte)random.Next(256));
        SixLabors.ImageSharp.ImageExtensions.SaveAsPng(img, path);
        return path;
    }

    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = WteCommands.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    /// <summary>Asserts a clean refusal: exit 1, one `wte:` line containing <paramref name="expected"/>, no stack trace.</summary>
    public static void AssertRefused((int Code, string Out, string Err) r, string expected)
    {
        Xunit.Assert.True(r.Code == 1, $"exit {r.Code}; stderr: {r.Err}");
        var lines = r.Err.TrimEnd().Split('\n');
        Xunit.Assert.StartsWith("wte: ", lines[^1]);
        Xunit.Assert.Single(lines, l => l.StartsWith("wte: ", StringComparison.Ordinal));
        Xunit.Assert.DoesNotContain("   at ", r.Err);
        Xunit.Assert.Contains(expected, lines[^1]);
    }

    public static string Hash(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(s));
    }

    /// <summary>Hashes of every regular file under a folder (links and FIFOs are not read), to prove nothing changed or appeared.</summary>
    public static SortedDictionary<string, string> Snapshot(string folder) =>
        new(Directory.EnumerateFiles(folder, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint })
            .ToDictionary(f => Path.GetRelativePath(folder, f), f => new FileInfo(f).Length > 0 ? Hash(f) : "empty"), StringComparer.Ordinal);
}

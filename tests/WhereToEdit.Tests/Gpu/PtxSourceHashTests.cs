using System.Security.Cryptography;
using System.Text.RegularExpressions;
using WhereToEdit.Engine.Backends.Gpu;
using WhereToEdit.Tests.IO;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Gpu;

/// <summary>
/// The committed, embedded PTX records the SHA-256 of the sources it was built from (native/cmake/StampPtx.cmake).
/// Recomputing them here fails CI on a stale PTX — a kernel edited without `native/build.sh --update-ptx` — even on a
/// machine whose compiler differs from the one that built the PTX (where the CTest byte comparison can only skip).
/// </summary>
public sealed partial class PtxSourceHashTests(ITestOutputHelper output)
{
    [GeneratedRegex(@"^// source sha256 (?<path>\S+): (?<hash>[0-9a-f]{64})$", RegexOptions.Multiline)]
    private static partial Regex SourceLine();

    /// <summary>The recorded (path, hash) pairs of a PTX header.</summary>
    internal static IReadOnlyList<(string Path, string Hash)> RecordedSources(string ptx)
        => SourceLine().Matches(ptx.Replace("\r\n", "\n", StringComparison.Ordinal)).Select(m => (m.Groups["path"].Value, m.Groups["hash"].Value)).ToArray();

    /// <summary>The recorded sources whose current content hashes differ (or that are missing), with a reason each.</summary>
    internal static IReadOnlyList<string> StaleSources(string ptx, string repositoryRoot)
    {
        var stale = new List<string>();
        foreach (var (path, hash) in RecordedSources(ptx))
        {
            string file = Path.Combine(repositoryRoot, path);
            if (!File.Exists(file))
            {
                stale.Add($"{path}: recorded in the PTX but missing");
                continue;
            }
            string actual = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(file)));
            if (actual != hash) stale.Add($"{path}: sha256 {actual}, the PTX was built from {hash}");
        }
        return stale;
    }

    private static string? RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "WhereToEdit.sln")) && Directory.Exists(Path.Combine(dir.FullName, "native")))
                return dir.FullName;
        return null;
    }

    private static string EmbeddedPtx => NativePtx.ModuleText(NativePtx.ReadResource());

    [SkippableFact]
    public void The_embedded_ptx_was_built_from_the_current_kernel_sources()
    {
        string? root = RepositoryRoot();
        Skip.If(root is null, $"no repository checkout (WhereToEdit.sln + native/) above {AppContext.BaseDirectory}");
        string ptx = EmbeddedPtx;
        var recorded = RecordedSources(ptx);
        foreach (var (path, hash) in recorded) output.WriteLine($"{path}: {hash}");
        Assert.Contains(recorded, r => r.Path == "native/wte_kernels.cu");
        // The embedded resource is the committed file.
        Assert.Equal(File.ReadAllText(Path.Combine(root!, "src/Engine/Backends/Gpu/Native/wte_kernels.ptx")), ptx);
        var stale = StaleSources(ptx, root!);
        Assert.True(stale.Count == 0, "the committed PTX is stale (run native/build.sh --update-ptx and commit it): " + string.Join("; ", stale));
    }

    [SkippableFact]
    public void An_edited_source_is_reported_as_stale()
    {
        string? root = RepositoryRoot();
        Skip.If(root is null, $"no repository checkout above {AppContext.BaseDirectory}");
        using var dir = new TempDir();
        foreach (var (path, _) in RecordedSources(EmbeddedPtx))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(dir.File(path))!);
            File.Copy(Path.Combine(root!, path), dir.File(path));
        }
        Assert.Empty(StaleSources(EmbeddedPtx, dir.Path));
        File.AppendAllText(dir.File("native/wte_kernels.cu"), "\n// an edit\n");
        var stale = Assert.Single(StaleSources(EmbeddedPtx, dir.Path));
        Assert.StartsWith("native/wte_kernels.cu: sha256 ", stale);
        File.Delete(dir.File("native/cuda_shim.h"));
        Assert.Contains(StaleSources(EmbeddedPtx, dir.Path), s => s == "native/cuda_shim.h: recorded in the PTX but missing");
    }
}

using System.Text.Json.Nodes;
using WhereToEdit.Cli;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Jobs;
using WhereToEdit.Engine.Models;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Jobs;

/// <summary>Patch and hypernetwork files carry a format version; an unknown one is refused by name and nothing is written.</summary>
public sealed class FormatVersionTests
{
    private static (int Code, string Stdout, string Stderr) Wte(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = WteCommands.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    /// <summary>Rewrites a safetensors file with its metadata changed (tensors untouched).</summary>
    private static void RewriteMetadata(string from, string to, Action<Dictionary<string, string>> change)
    {
        var file = SafeTensors.Read(from);
        var metadata = file.Metadata.ToDictionary(kv => kv.Key, kv => kv.Value);
        change(metadata);
        SafeTensors.Write(to, file.Tensors, metadata);
    }

    private static void Refused(string file, string expect, params string[] args)
    {
        string output = args[Array.IndexOf(args, "--out") + 1];
        var (code, stdout, stderr) = Wte(args);
        Assert.True(code == 1, $"{string.Join(" ", args)} succeeded: {stdout}");
        Assert.Single(stderr.TrimEnd('\n', '\r').Split('\n'));
        Assert.StartsWith("wte: ", stderr);
        Assert.Contains(file, stderr);
        Assert.Contains(expect, stderr);
        Assert.False(File.Exists(output), $"a refused command wrote {output}");
    }

    [Fact]
    public void A_patch_whose_format_version_was_changed_is_refused_and_nothing_is_written()
    {
        using var dir = new TempDir();
        var (model, hypernet, image, label) = JobsTests.Files(dir);
        string patch = dir.File("edit.safetensors");
        EditJob.Run(new EditJobOptions
        {
            ModelPath = model, HypernetPath = hypernet, Images = [image], Label = label.ToString(), Keep = 0.5, LearningRate = 0.01f, OutPath = patch,
        });
        var header = JsonNode.Parse(SafeTensors.Read(patch).Metadata[EditPatch.MetadataKey])!.AsObject();
        Assert.Equal(EditPatch.CurrentFormatVersion, (int)header["format_version"]!);

        string future = dir.File("future.safetensors");
        RewriteMetadata(patch, future, m =>
        {
            var h = JsonNode.Parse(m[EditPatch.MetadataKey])!.AsObject();
            h["format_version"] = 2;
            m[EditPatch.MetadataKey] = h.ToJsonString();
        });
        Refused("future.safetensors", "format_version 2", "patch", "apply", model, future, "--out", dir.File("applied.safetensors"));
        Refused("future.safetensors", "format_version 2", "patch", "revert", model, future, "--out", dir.File("reverted.safetensors"));
        Assert.Throws<CheckpointFormatException>(() => EditPatch.Load(future));

        // The first patches had no version field: they read as version 1.
        string old = dir.File("old.safetensors");
        RewriteMetadata(patch, old, m =>
        {
            var h = JsonNode.Parse(m[EditPatch.MetadataKey])!.AsObject();
            Assert.True(h.Remove("format_version"));
            m[EditPatch.MetadataKey] = h.ToJsonString();
        });
        var (code, _, stderr) = Wte("patch", "apply", model, old, "--out", dir.File("applied-old.safetensors"));
        Assert.True(code == 0, stderr);
        Assert.True(File.Exists(dir.File("applied-old.safetensors")));
    }

    [Fact]
    public void A_hypernetwork_of_an_unknown_format_version_is_refused_and_one_without_the_field_reads_as_version_1()
    {
        using var dir = new TempDir();
        var (model, hypernet, image, label) = JobsTests.Files(dir);
        Assert.Equal("1", SafeTensors.Read(hypernet).Metadata[HypernetFile.FormatVersionKey]);

        string future = dir.File("future-hypernet.safetensors");
        RewriteMetadata(hypernet, future, m => m[HypernetFile.FormatVersionKey] = "7");
        Refused("future-hypernet.safetensors", "'7'", "edit", model, "--hypernet", future, "--image", image, "--label", label.ToString(), "--out", dir.File("edit.safetensors"));

        string old = dir.File("old-hypernet.safetensors");
        RewriteMetadata(hypernet, old, m => Assert.True(m.Remove(HypernetFile.FormatVersionKey)));
        var (code, _, stderr) = Wte("edit", model, "--hypernet", old, "--image", image, "--label", label.ToString(), "--keep", "0.5", "--lr", "0.01", "--out", dir.File("edit.safetensors"));
        Assert.True(code == 0, stderr);

        // The shipped hypernetwork predates the field and still loads against the shipped model.
        string assets = DemoSetup.FindAssets(null);
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 1 });
        using var vit = VitCheckpoint.Load(be, ModelFolder.Load(DemoSetup.ModelPath(assets)));
        var shipped = SafeTensors.Read(DemoSetup.HypernetPath(assets));
        Assert.False(shipped.Metadata.ContainsKey(HypernetFile.FormatVersionKey));
        using var net = HypernetFile.Load(be, DemoSetup.HypernetPath(assets), vit);
        Assert.Equal([7, 8, 9], net.EditBlocks);
    }
}

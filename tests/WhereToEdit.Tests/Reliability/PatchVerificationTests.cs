using System.Text.Json.Nodes;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Tests.IO;
using Xunit;
using static WhereToEdit.Tests.Reliability.HostileSupport;

namespace WhereToEdit.Tests.Reliability;

/// <summary>Issue 14, finding 4: a patch is validated completely before use, its result checked after.</summary>
public sealed class PatchVerificationTests
{
    /// <summary>A tiny model and a real patch of it (FT-L2, so no hypernetwork is needed).</summary>
    internal static (string Model, string Patch) ModelAndPatch(TempDir dir)
    {
        string model = Model(dir.File("m.safetensors"));
        string image = Png(dir.File("x.png"));
        var r = Run("edit", model, "--method", "ft-l2", "--image", image, "--label", "1", "--lr", "0.01", "--max-steps", "3", "--out", dir.File("p.safetensors"));
        Assert.True(r.Code == 0, r.Err);
        return (model, dir.File("p.safetensors"));
    }

    /// <summary>Rewrites a patch with its header JSON and tensors changed.</summary>
    internal static string Corrupt(string patch, string output, Action<JsonObject>? header = null, Func<List<NamedTensor>, List<NamedTensor>>? tensors = null)
    {
        var file = SafeTensors.Read(patch);
        var json = JsonNode.Parse(file.Metadata[EditPatch.MetadataKey])!.AsObject();
        header?.Invoke(json);
        var list = file.Tensors.Select(t => new NamedTensor(t.Name, (int[])t.Shape.Clone(), (float[])t.Data.Clone())).ToList();
        if (tensors is not null) list = tensors(list);
        SafeTensors.Write(output, list, new Dictionary<string, string> { [EditPatch.MetadataKey] = json.ToJsonString() });
        return output;
    }

    public static TheoryData<string, string> Cases => new()
    {
        { "duplicate-index", "appears twice" },
        { "index-out-of-range", "not an integer unit index" },
        { "fractional-index", "not an integer unit index" },
        { "nan-edited", "finite numbers only" },
        { "inf-original", "finite numbers only" },
        { "format-999", "format_version 999 is not supported" },
        { "blocks-null", "edit_blocks must be a non-empty list" },
        { "blocks-repeated", "must be distinct" },
        { "blocks-negative", "must be distinct non-negative" },
        { "missing-unit", "missing" },
        { "short-edited", "shape" },
        { "empty", "the patch is empty" },
        { "foreign-tensor", "does not belong to a patch" },
        { "wrong-edited-fingerprint", "is not the patch's edited_fingerprint" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Bad_patches_are_refused_and_write_nothing(string kind, string expected)
    {
        using var dir = new TempDir();
        var (model, patch) = ModelAndPatch(dir);
        string bad = dir.File($"bad-{kind}.safetensors");
        static List<NamedTensor> Set(List<NamedTensor> l, string name, Action<float[]> change) { change(l.Single(t => t.Name == name).Data); return l; }
        switch (kind)
        {
            case "duplicate-index": Corrupt(patch, bad, tensors: l => Set(l, "units.0.indices", d => d[1] = d[0])); break;
            case "index-out-of-range": Corrupt(patch, bad, tensors: l => Set(l, "units.1.indices", d => d[0] = 1e6f)); break;
            case "fractional-index": Corrupt(patch, bad, tensors: l => Set(l, "units.1.indices", d => d[0] = 0.5f)); break;
            case "nan-edited": Corrupt(patch, bad, tensors: l => Set(l, "units.0.edited", d => d[3] = float.NaN)); break;
            case "inf-original": Corrupt(patch, bad, tensors: l => Set(l, "units.2.original", d => d[0] = float.PositiveInfinity)); break;
            case "format-999": Corrupt(patch, bad, h => h["format_version"] = 999); break;
            case "blocks-null": Corrupt(patch, bad, h => h["edit_blocks"] = null); break;
            case "blocks-repeated": Corrupt(patch, bad, h => h["edit_blocks"] = new JsonArray(1, 1, 3)); break;
            case "blocks-negative": Corrupt(patch, bad, h => h["edit_blocks"] = new JsonArray(-1, 2, 3)); break;
            case "missing-unit": Corrupt(patch, bad, tensors: l => l.Where(t => !t.Name.StartsWith("units.3.", StringComparison.Ordinal)).ToList()); break;
            case "short-edited": Corrupt(patch, bad, tensors: l => l.Select(t => t.Name == "units.0.edited" ? new NamedTensor(t.Name, [t.Shape[0] - 1, t.Shape[1]], t.Data[..^t.Shape[1]]) : t).ToList()); break;
            case "empty": Corrupt(patch, bad, tensors: l => l.Select(t => t.Name.EndsWith("indices") ? new NamedTensor(t.Name, [0], []) : new NamedTensor(t.Name, [0, t.Shape[1]], [])).ToList()); break;
            case "foreign-tensor": Corrupt(patch, bad, tensors: l => [.. l, new NamedTensor("extra", [1], [1f])]); break;
            case "wrong-edited-fingerprint": Corrupt(patch, bad, h => h["edited_fingerprint"] = "00000000000000000000000000000000"); break;
        }
        var before = Snapshot(dir.Path);
        AssertRefused(Run("patch", "apply", model, bad, "--out", dir.File("out.safetensors")), expected);
        Assert.Equal(before, Snapshot(dir.Path));
        Assert.False(File.Exists(dir.File("out.safetensors")));
    }

    [Fact]
    public void Revert_refuses_a_model_the_patch_was_never_applied_to()
    {
        using var dir = new TempDir();
        var (model, patch) = ModelAndPatch(dir);
        AssertRefused(Run("patch", "revert", model, patch, "--out", dir.File("r.safetensors")), "not applied");
        string other = Model(dir.File("other.safetensors"), seed: 9);
        var r = Run("patch", "revert", other, patch, "--out", dir.File("r.safetensors"));
        Assert.Equal(1, r.Code);
        Assert.False(File.Exists(dir.File("r.safetensors")));
        // The real round trip still works and restores the base bit for bit.
        Assert.Equal(0, Run("patch", "apply", model, patch, "--out", dir.File("a.safetensors")).Code);
        Assert.Equal(0, Run("patch", "revert", dir.File("a.safetensors"), patch, "--out", dir.File("r.safetensors")).Code);
        Assert.Equal(SafeTensors.Read(model).Tensors.SelectMany(t => t.Data), SafeTensors.Read(dir.File("r.safetensors")).Tensors.SelectMany(t => t.Data));
    }
}

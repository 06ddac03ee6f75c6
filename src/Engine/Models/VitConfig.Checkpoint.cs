using System.Globalization;
using System.Text.Json;
using WhereToEdit.Engine.IO;

namespace WhereToEdit.Engine.Models;

/// <summary>What reading and writing checkpoints needs of the architecture: timm's tensor list, checks, strict JSON.</summary>
public sealed partial record VitConfig
{
    /// <summary>Throws <see cref="CheckpointFormatException"/> naming <paramref name="path"/> when <see cref="Problems"/> is not empty.</summary>
    public void EnsureValid(string path)
    {
        var p = Problems();
        if (p.Count > 0) throw new CheckpointFormatException(path, "invalid ViT architecture: " + string.Join("; ", p));
    }

    /// <summary>Every timm tensor of this architecture with its shape, in timm's state_dict order.</summary>
    public IReadOnlyList<(string Name, int[] Shape)> TimmTensorShapes()
    {
        int d = EmbedDim;
        var list = new List<(string, int[])>
        {
            ("cls_token", [1, 1, d]),
            ("pos_embed", [1, Tokens, d]),
            ("patch_embed.proj.weight", [d, InChans, PatchSize, PatchSize]),
            ("patch_embed.proj.bias", [d]),
        };
        for (int i = 0; i < Depth; i++)
        {
            string b = $"blocks.{i}.";
            list.Add((b + "norm1.weight", [d]));
            list.Add((b + "norm1.bias", [d]));
            list.Add((b + "attn.qkv.weight", [3 * d, d]));
            if (QkvBias) list.Add((b + "attn.qkv.bias", [3 * d]));
            list.Add((b + "attn.proj.weight", [d, d]));
            list.Add((b + "attn.proj.bias", [d]));
            list.Add((b + "norm2.weight", [d]));
            list.Add((b + "norm2.bias", [d]));
            list.Add((b + "mlp.fc1.weight", [MlpHidden, d]));
            list.Add((b + "mlp.fc1.bias", [MlpHidden]));
            list.Add((b + "mlp.fc2.weight", [d, MlpHidden]));
            list.Add((b + "mlp.fc2.bias", [d]));
        }
        list.Add(("norm.weight", [d]));
        list.Add(("norm.bias", [d]));
        if (NumClasses > 0)
        {
            list.Add(("head.weight", [NumClasses, d]));
            list.Add(("head.bias", [NumClasses]));
        }
        return list;
    }

    /// <summary>Checks that <paramref name="timm"/> holds exactly this architecture's tensors; throws a <see cref="CheckpointMappingException"/> otherwise.</summary>
    public void EnsureMatches(TensorFile timm, string path)
    {
        var expected = TimmTensorShapes();
        var missing = new List<string>();
        var misshaped = new List<string>();
        var expectedNames = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, shape) in expected)
        {
            expectedNames.Add(name);
            if (!timm.TryGet(name, out var t)) missing.Add($"{name} {NamedTensor.FormatShape(shape)}");
            else if (!t.Shape.AsSpan().SequenceEqual(shape))
                misshaped.Add($"{name}: expected {NamedTensor.FormatShape(shape)}, found {NamedTensor.FormatShape(t.Shape)}");
        }
        var unexpected = timm.Tensors.Where(t => !expectedNames.Contains(t.Name)).Select(t => t.ToString()).ToList();
        if (missing.Count + misshaped.Count + unexpected.Count > 0)
            throw new CheckpointMappingException(path, NamingConvention.Timm, missing, unexpected, misshaped,
                $"the tensors do not match the architecture {this.Describe()}");
    }

    /// <summary>"ViT dim 768, depth 12, heads 12, mlp 3072, patch 16, 224 px, 3 ch, 1000 classes, ln_eps 1E-06, qkv_bias True".</summary>
    public string Describe() =>
        $"ViT dim {EmbedDim}, depth {Depth}, heads {NumHeads}, mlp {MlpHidden}, patch {PatchSize}, {ImageSize} px, {InChans} ch, " +
        $"{NumClasses} classes, ln_eps {LayerNormEps.ToString("R", CultureInfo.InvariantCulture)}, qkv_bias {QkvBias}";

    /// <summary>
    /// Strict parse of <see cref="ToJson"/>'s output as stored in a file (the "wte.config" metadata value): every
    /// architecture key is required, duplicates are refused, and the numbers are checked (<see cref="EnsureValid"/>).
    /// A "heads_source" key, if present, is provenance (<see cref="WteMetadata.ReadArchitecture"/>) and ignored here.
    /// </summary>
    public static VitConfig FromJson(string json, string path)
    {
        const string what = "architecture config (wte.config)";
        using var doc = StrictJson.Parse(json, path, what);
        var r = doc.RootElement;
        if (r.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, $"{what} must be a JSON object");
        int I(string k) => StrictJson.TryGet(r, k, out var e) ? StrictJson.GetInt(e, k, path, what)
            : throw new CheckpointFormatException(path, $"{what} has no \"{k}\"");
        double eps = StrictJson.TryGet(r, "ln_eps", out var epsEl) ? StrictJson.GetDouble(epsEl, "ln_eps", path, what)
            : throw new CheckpointFormatException(path, $"{what} has no \"ln_eps\"");
        bool qkvBias = StrictJson.TryGet(r, "qkv_bias", out var qb) ? StrictJson.GetBool(qb, "qkv_bias", path, what)
            : throw new CheckpointFormatException(path, $"{what} has no \"qkv_bias\"");
        var a = new VitConfig
        {
            ImageSize = I("image_size"), PatchSize = I("patch_size"), InChans = I("in_chans"), EmbedDim = I("embed_dim"), Depth = I("depth"),
            NumHeads = I("num_heads"), MlpHidden = I("mlp_hidden"), NumClasses = I("num_classes"), LayerNormEps = (float)eps, QkvBias = qkvBias,
        };
        a.EnsureValid(path);
        return a;
    }
}

using WhereToEdit.Engine.IO;

namespace WhereToEdit.Engine.Models;

/// <summary>
/// The reference implementation's mask hypernetwork, <c>HyperNetwork_mask</c> (github.com/hustyyq/Where-to-Edit,
/// editing/hprdmask.py and meta_train.py), as a state dict, mapped to and from our <see cref="Hypernetwork"/>:
/// <list type="bullet">
/// <item><c>cls_token</c> [1, R, D] ↔ query_tokens (the R learned query tokens)</item>
/// <item><c>layer.{i}.attention_norm</c> / <c>ffn_norm</c> ↔ blocks.{i}.norm1 / norm2; <c>layer.{i}.attn.query|key|value</c>
/// ↔ rows 0..D, D..2D, 2D..3D of blocks.{i}.attn.qkv; <c>layer.{i}.attn.out</c> ↔ attn.proj; <c>layer.{i}.ffn.fc1|fc2</c> ↔ mlp.fc1|fc2</item>
/// <item><c>out_layer.{r}.out</c> ↔ heads.{r} (the Outblock heads: Linear → sigmoid(3·z) → clamp)</item>
/// <item><c>learn_masks</c> [R, H]: a parameter the reference never uses in its forward; read and ignored, written as zeros.</item>
/// </list>
/// The reference does not store which blocks its units gate: it edits blocks layer−2..layer with layer = 9, in unit order
/// blk.fc1, blk.fc2 per block (the same order as ours). Heads are not stored either: the reference has 6 heads at width 768,
/// which is what <see cref="HypernetConfig.DefaultHeads"/> gives; other widths use that rule too. The clamp is the one the
/// reference edits with (hprdmask.py Outblock.ep = 1e-7).
/// </summary>
internal static class ReferenceHypernet
{
    /// <summary>hprdmask.py Outblock.ep (meta_train.py trains with 1e-5; editing clamps at 1e-7).</summary>
    public const float ReferenceClamp = 1e-7f;

    /// <summary>The reference's HPRD(layer=9): blocks 7, 8, 9 for its 6 units.</summary>
    public const int ReferenceLastBlock = 9;

    /// <summary>Edit blocks the reference uses for <paramref name="units"/> units: the last units/2 blocks up to block 9.</summary>
    public static int[] DefaultEditBlocks(int units) =>
        units % 2 == 0 && units / 2 <= ReferenceLastBlock + 1
            ? Enumerable.Range(ReferenceLastBlock + 1 - units / 2, units / 2).ToArray()
            : throw new ArgumentException($"{units} units do not make fc1/fc2 pairs of blocks up to block {ReferenceLastBlock}");

    /// <summary>True when the names are a reference HyperNetwork_mask state dict.</summary>
    public static bool IsReferenceStateDict(TensorFile file) =>
        file.Contains("cls_token") && file.Names.Any(n => n.StartsWith("out_layer.", StringComparison.Ordinal));

    /// <summary>Our config and parameters (our names) from a reference state dict; every name and shape is checked.</summary>
    public static (HypernetConfig Config, Dictionary<string, (int[] Shape, float[] Data)> Tensors) FromReference(TensorFile file, string path)
    {
        CheckpointFormatException Bad(string what) => new(path, $"reference hypernetwork (HyperNetwork_mask): {what}");
        NamedTensor Get(string name) => file.TryGet(name, out var t) ? t : throw Bad($"tensor '{name}' is missing");
        NamedTensor GetShaped(string name, params int[] shape)
        {
            var t = Get(name);
            if (!NamedTensor.ShapeEquals(t.Shape, shape)) throw Bad($"tensor '{name}' has shape {NamedTensor.FormatShape(t.Shape)}, expected {NamedTensor.FormatShape(shape)}");
            return t;
        }
        var cls = Get("cls_token");
        if (cls.Rank != 3 || cls.Shape[0] != 1) throw Bad($"cls_token has shape {NamedTensor.FormatShape(cls.Shape)}, expected [1, units, width]");
        int units = cls.Shape[1], d = cls.Shape[2];
        int depth = 0;
        while (file.Contains($"layer.{depth}.attention_norm.weight")) depth++;
        if (depth == 0) throw Bad("no transformer blocks (layer.0.attention_norm.weight is missing)");
        int mlp = Get("layer.0.ffn.fc1.weight").Shape[0];
        int unitSize = Get("out_layer.0.out.weight").Shape[0];
        var config = new HypernetConfig
        {
            EmbedDim = d, Depth = depth, NumHeads = HypernetConfig.DefaultHeads(d), MlpHidden = mlp, Units = units, UnitSize = unitSize,
            Clamp = ReferenceClamp,
        };
        try { config.Validate(); } catch (ArgumentException e) { throw Bad(e.Message); }

        var used = new HashSet<string>(StringComparer.Ordinal) { "cls_token" };
        var map = new Dictionary<string, (int[], float[])>(StringComparer.Ordinal) { ["query_tokens"] = (cls.Shape, cls.Data) };
        void Copy(string ours, string theirs, params int[] shape)
        {
            var t = GetShaped(theirs, shape);
            used.Add(theirs);
            map[ours] = (t.Shape, t.Data);
        }
        for (int i = 0; i < depth; i++)
        {
            string a = $"blocks.{i}.", b = $"layer.{i}.";
            foreach (var s in new[] { "weight", "bias" })
            {
                bool w = s == "weight";
                Copy(a + "norm1." + s, b + "attention_norm." + s, d);
                Copy(a + "norm2." + s, b + "ffn_norm." + s, d);
                Copy(a + "attn.proj." + s, b + "attn.out." + s, w ? [d, d] : [d]);
                Copy(a + "mlp.fc1." + s, b + "ffn.fc1." + s, w ? [mlp, d] : [mlp]);
                Copy(a + "mlp.fc2." + s, b + "ffn.fc2." + s, w ? [d, mlp] : [d]);
                var qkv = new float[3 * d * (w ? d : 1)];
                int k = 0;
                foreach (var part in new[] { "query", "key", "value" })
                {
                    string name = $"{b}attn.{part}.{s}";
                    var t = GetShaped(name, w ? [d, d] : [d]);
                    used.Add(name);
                    t.Data.CopyTo(qkv, k);
                    k += t.Data.Length;
                }
                map[a + "attn.qkv." + s] = (w ? [3 * d, d] : [3 * d], qkv);
            }
        }
        for (int r = 0; r < units; r++)
        {
            Copy($"heads.{r}.weight", $"out_layer.{r}.out.weight", unitSize, d);
            Copy($"heads.{r}.bias", $"out_layer.{r}.out.bias", unitSize);
        }
        if (file.Contains("learn_masks")) { GetShaped("learn_masks", units, unitSize); used.Add("learn_masks"); }
        var extra = file.Names.Where(n => !used.Contains(n)).ToList();
        if (extra.Count > 0)
            throw Bad($"unexpected tensor(s) {string.Join(", ", extra.Take(5))}{(extra.Count > 5 ? ", …" : "")}: a {depth}-block, {units}-head HyperNetwork_mask has no such names");
        return (config, map);
    }

    /// <summary>Our hypernetwork's parameters under the reference's names, in the reference's state_dict order.</summary>
    public static List<NamedTensor> ToReference(Hypernetwork net)
    {
        var c = net.Config;
        int d = c.EmbedDim;
        float[] Value(string name) => net[name].Value.ToArray();
        var list = new List<NamedTensor>
        {
            new("cls_token", [1, c.Units, d], Value("query_tokens")),
            new("learn_masks", [c.Units, c.UnitSize], new float[c.Units * c.UnitSize]),
        };
        for (int i = 0; i < c.Depth; i++)
        {
            string a = $"blocks.{i}.", b = $"layer.{i}.";
            list.Add(new(b + "attention_norm.weight", [d], Value(a + "norm1.weight")));
            list.Add(new(b + "attention_norm.bias", [d], Value(a + "norm1.bias")));
            list.Add(new(b + "ffn_norm.weight", [d], Value(a + "norm2.weight")));
            list.Add(new(b + "ffn_norm.bias", [d], Value(a + "norm2.bias")));
            list.Add(new(b + "ffn.fc1.weight", [c.MlpHidden, d], Value(a + "mlp.fc1.weight")));
            list.Add(new(b + "ffn.fc1.bias", [c.MlpHidden], Value(a + "mlp.fc1.bias")));
            list.Add(new(b + "ffn.fc2.weight", [d, c.MlpHidden], Value(a + "mlp.fc2.weight")));
            list.Add(new(b + "ffn.fc2.bias", [d], Value(a + "mlp.fc2.bias")));
            var qw = Value(a + "attn.qkv.weight");
            var qb = Value(a + "attn.qkv.bias");
            string[] parts = ["query", "key", "value"];
            for (int j = 0; j < 3; j++)
            {
                list.Add(new($"{b}attn.{parts[j]}.weight", [d, d], qw.AsSpan(j * d * d, d * d).ToArray()));
                list.Add(new($"{b}attn.{parts[j]}.bias", [d], qb.AsSpan(j * d, d).ToArray()));
            }
            list.Add(new(b + "attn.out.weight", [d, d], Value(a + "attn.proj.weight")));
            list.Add(new(b + "attn.out.bias", [d], Value(a + "attn.proj.bias")));
        }
        for (int r = 0; r < c.Units; r++)
        {
            list.Add(new($"out_layer.{r}.out.weight", [c.UnitSize, d], Value($"heads.{r}.weight")));
            list.Add(new($"out_layer.{r}.out.bias", [c.UnitSize], Value($"heads.{r}.bias")));
        }
        return list;
    }
}

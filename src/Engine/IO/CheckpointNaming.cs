using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Engine.IO;

/// <summary>Parameter naming/layout conventions a ViT checkpoint may use.</summary>
public enum NamingConvention
{
    /// <summary>timm's state_dict names and layouts (the engine's canonical form).</summary>
    Timm,
    /// <summary>Hugging Face transformers ViTForImageClassification (or ViTModel without the "vit." prefix).</summary>
    HuggingFace,
    /// <summary>Google's AugReg / big_vision Flax .npz: Transformer/encoderblock_N/…, kernels (in, out).</summary>
    AugReg,
}

/// <summary>The tensors of a checkpoint do not form a supported ViT: lists what is missing, unexpected and mis-shaped.</summary>
internal sealed class CheckpointMappingException : CheckpointFormatException
{
    public CheckpointMappingException(string filePath, NamingConvention convention, IReadOnlyList<string> missing,
                                      IReadOnlyList<string> unexpected, IReadOnlyList<string> misshaped, string? summary = null)
        : base(filePath, Build(convention, missing, unexpected, misshaped, summary))
    {
        Convention = convention;
        Missing = missing;
        Unexpected = unexpected;
        Misshaped = misshaped;
    }

    public NamingConvention Convention { get; }

    public IReadOnlyList<string> Missing { get; }

    public IReadOnlyList<string> Unexpected { get; }

    public IReadOnlyList<string> Misshaped { get; }

    private static string Build(NamingConvention c, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected,
                                IReadOnlyList<string> misshaped, string? summary)
    {
        var sb = new StringBuilder();
        sb.Append(summary ?? $"cannot map this {c} checkpoint to a timm ViT");
        sb.Append($" ({missing.Count} missing, {unexpected.Count} unexpected, {misshaped.Count} mis-shaped tensors)");
        void Section(string title, IReadOnlyList<string> items)
        {
            if (items.Count == 0) return;
            sb.Append($"\n  {title}:");
            foreach (var s in items.Take(20)) sb.Append("\n    ").Append(s);
            if (items.Count > 20) sb.Append($"\n    ... and {items.Count - 20} more");
        }
        Section("missing", missing);
        Section("unexpected", unexpected);
        Section("mis-shaped", misshaped);
        return sb.ToString();
    }
}

/// <summary>A checkpoint converted to timm names and layouts, with the shapes it showed.</summary>
internal sealed record ConvertedCheckpoint(TensorFile Tensors, NamingConvention SourceConvention, CheckpointShapes Shapes);

/// <summary>
/// Detects the naming convention of a ViT checkpoint and converts it to timm names and layouts
/// (the engine's canonical form; table in the checkpoints spec). Any missing, unexpected or mis-shaped tensor
/// is an error listing all of them; nothing is silently dropped or zero-filled.
/// </summary>
internal static partial class CheckpointNaming
{
    /// <summary>Decides the convention from the tensor names; throws when it is none or ambiguous.</summary>
    public static NamingConvention Detect(TensorFile file)
    {
        string path = file.SourcePath ?? "";
        bool timm = false, hf = false, augreg = false;
        foreach (var n in file.Names)
        {
            if (n is "cls_token" or "pos_embed" || n.StartsWith("patch_embed.", StringComparison.Ordinal) || n.StartsWith("blocks.", StringComparison.Ordinal))
                timm = true;
            else if (n.StartsWith("vit.", StringComparison.Ordinal) || n.StartsWith("classifier.", StringComparison.Ordinal)
                     || n.StartsWith("embeddings.", StringComparison.Ordinal) || n.StartsWith("encoder.layer.", StringComparison.Ordinal))
                hf = true;
            else if (n is "cls" || n.StartsWith("Transformer/", StringComparison.Ordinal) || n.StartsWith("embedding/", StringComparison.Ordinal))
                augreg = true;
        }
        int count = (timm ? 1 : 0) + (hf ? 1 : 0) + (augreg ? 1 : 0);
        if (count == 1) return timm ? NamingConvention.Timm : hf ? NamingConvention.HuggingFace : NamingConvention.AugReg;
        string sample = string.Join(", ", file.Names.Take(8).Select(n => $"'{n}'")) + (file.Count > 8 ? ", ..." : "");
        if (count == 0)
            throw new CheckpointFormatException(path,
                $"unrecognised tensor naming (not timm 'blocks.N.…', Hugging Face 'vit.encoder.layer.N.…' nor AugReg 'Transformer/encoderblock_N/…'); " +
                $"{file.Count} tensors: {sample}");
        var which = new List<string>();
        if (timm) which.Add("timm");
        if (hf) which.Add("Hugging Face");
        if (augreg) which.Add("AugReg");
        throw new CheckpointFormatException(path, $"tensor names mix naming conventions ({string.Join(", ", which)}): {sample}");
    }

    /// <summary>timm names/layouts → Hugging Face ViTForImageClassification's (qkv split into query/key/value), in HF's order.</summary>
    public static List<NamedTensor> ToHuggingFace(TensorFile timm, VitConfig a)
    {
        int d = a.EmbedDim;
        var o = new List<NamedTensor>();
        void Add(string n, string from) => o.Add(new NamedTensor(n, timm[from].Shape, timm[from].Data));
        Add("vit.embeddings.cls_token", "cls_token");
        Add("vit.embeddings.position_embeddings", "pos_embed");
        Add("vit.embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight");
        Add("vit.embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias");
        for (int i = 0; i < a.Depth; i++)
        {
            string s = $"vit.encoder.layer.{i}.", b = $"blocks.{i}.";
            Add(s + "layernorm_before.weight", b + "norm1.weight");
            Add(s + "layernorm_before.bias", b + "norm1.bias");
            string[] names = ["query", "key", "value"];
            for (int part = 0; part < 3; part++)
            {
                o.Add(new NamedTensor(s + $"attention.attention.{names[part]}.weight", [d, d], timm[b + "attn.qkv.weight"].Data.AsSpan(part * d * d, d * d).ToArray()));
                if (a.QkvBias)
                    o.Add(new NamedTensor(s + $"attention.attention.{names[part]}.bias", [d], timm[b + "attn.qkv.bias"].Data.AsSpan(part * d, d).ToArray()));
            }
            Add(s + "attention.output.dense.weight", b + "attn.proj.weight");
            Add(s + "attention.output.dense.bias", b + "attn.proj.bias");
            Add(s + "layernorm_after.weight", b + "norm2.weight");
            Add(s + "layernorm_after.bias", b + "norm2.bias");
            Add(s + "intermediate.dense.weight", b + "mlp.fc1.weight");
            Add(s + "intermediate.dense.bias", b + "mlp.fc1.bias");
            Add(s + "output.dense.weight", b + "mlp.fc2.weight");
            Add(s + "output.dense.bias", b + "mlp.fc2.bias");
        }
        Add("vit.layernorm.weight", "norm.weight");
        Add("vit.layernorm.bias", "norm.bias");
        if (a.NumClasses > 0)
        {
            Add("classifier.weight", "head.weight");
            Add("classifier.bias", "head.bias");
        }
        return o;
    }

    /// <summary>Detects the convention and converts to timm names/layouts in timm's state_dict order.</summary>
    public static ConvertedCheckpoint ToTimm(TensorFile source)
    {
        var convention = Detect(source);
        var ctx = new Context(source);
        CheckpointShapes? shapes;
        var output = convention switch
        {
            NamingConvention.Timm => FromTimm(ctx, out shapes),
            NamingConvention.HuggingFace => FromHuggingFace(ctx, out shapes),
            _ => FromAugReg(ctx, out shapes),
        };
        ctx.ThrowIfProblems(convention);
        return new ConvertedCheckpoint(new TensorFile(output, source.Metadata, source.SourcePath, source.SourceFormat), convention, shapes!);
    }

    // ---- shared bookkeeping ------------------------------------------------------------------------

    private sealed class Context(TensorFile source)
    {
        public TensorFile Source { get; } = source;
        public string Path { get; } = source.SourcePath ?? "";
        public HashSet<string> Consumed { get; } = new(StringComparer.Ordinal);
        public List<string> Missing { get; } = [];
        public List<string> Misshaped { get; } = [];
        public List<string> Fatal { get; } = [];

        /// <summary>The tensor if present with this shape; records the problem otherwise.</summary>
        public NamedTensor? Take(string name, params int[] shape)
        {
            if (!Source.TryGet(name, out var t))
            {
                Missing.Add($"{name} {NamedTensor.FormatShape(shape)}");
                return null;
            }
            Consumed.Add(name);
            if (!t.Shape.AsSpan().SequenceEqual(shape))
            {
                Misshaped.Add($"{name}: expected {NamedTensor.FormatShape(shape)}, found {NamedTensor.FormatShape(t.Shape)}");
                return null;
            }
            return t;
        }

        /// <summary>An anchor tensor used to infer dimensions: must exist with the given rank.</summary>
        public NamedTensor? Anchor(string name, int rank, string layout)
        {
            if (!Source.TryGet(name, out var t))
            {
                Missing.Add($"{name} {layout}");
                return null;
            }
            if (t.Rank != rank)
            {
                Consumed.Add(name);
                Misshaped.Add($"{name}: expected rank {rank} {layout}, found {NamedTensor.FormatShape(t.Shape)}");
                return null;
            }
            return t;
        }

        public int BlockCount(Regex blockRegex)
        {
            int max = -1;
            foreach (var n in Source.Names)
            {
                var m = blockRegex.Match(n);
                if (m.Success && int.TryParse(m.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int i) && i < 100_000)
                    max = Math.Max(max, i);
            }
            return max + 1;
        }

        public void ThrowIfProblems(NamingConvention c)
        {
            var unexpected = Source.Tensors.Where(t => !Consumed.Contains(t.Name)).Select(t => t.ToString()).ToList();
            if (Missing.Count + Misshaped.Count + unexpected.Count + Fatal.Count > 0)
            {
                string? summary = Fatal.Count > 0 ? $"cannot map this {c} checkpoint to a timm ViT: {string.Join("; ", Fatal)}" : null;
                throw new CheckpointMappingException(Path, c, Missing, unexpected, Misshaped, summary);
            }
        }

        /// <summary>Checks the position embedding token count against the patch size; returns the image size or 0.</summary>
        public int ImageSizeFrom(int tokens, int patch, string posName)
        {
            int grid = (int)Math.Round(Math.Sqrt(Math.Max(tokens - 1, 0)));
            if (tokens < 2 || grid * grid != tokens - 1)
            {
                Fatal.Add($"{posName} has {tokens} tokens, not 1 + a square number of patches (only class-token ViTs with square grids are supported)");
                return 0;
            }
            return grid * patch;
        }
    }

    private static string P(int[] s) => NamedTensor.FormatShape(s);

    // ---- layout helpers ----------------------------------------------------------------------------

    /// <summary>[rows, cols] → [cols, rows].</summary>
    internal static float[] Transpose(float[] src, int rows, int cols)
    {
        var dst = new float[src.Length];
        for (int r = 0; r < rows; r++)
        {
            int baseIn = r * cols;
            for (int c = 0; c < cols; c++) dst[c * rows + r] = src[baseIn + c];
        }
        return dst;
    }

    /// <summary>Flax conv kernel HWIO [p, p, C, D] → PyTorch OIHW [D, C, p, p].</summary>
    internal static float[] HwioToOihw(float[] src, int kh, int kw, int cin, int cout)
    {
        var dst = new float[src.Length];
        for (int y = 0; y < kh; y++)
        for (int x = 0; x < kw; x++)
        for (int c = 0; c < cin; c++)
        for (int o = 0; o < cout; o++)
            dst[((o * cin + c) * kh + y) * kw + x] = src[((y * kw + x) * cin + c) * cout + o];
        return dst;
    }

    private static float[] Concat(params float[][] parts)
    {
        var dst = new float[parts.Sum(p => p.Length)];
        int off = 0;
        foreach (var p in parts)
        {
            p.CopyTo(dst, off);
            off += p.Length;
        }
        return dst;
    }

    private static void Add(List<NamedTensor> o, string name, int[] shape, float[] data, NamedTensor from) =>
        o.Add(new NamedTensor(name, shape, data, from.SourceDType));

    // ---- timm (identity, but validated) ------------------------------------------------------------

    [GeneratedRegex(@"^blocks\.(\d+)\.")]
    private static partial Regex TimmBlock();

    private static List<NamedTensor> FromTimm(Context ctx, out CheckpointShapes? shapes)
    {
        var o = new List<NamedTensor>();
        shapes = null;
        var cls = ctx.Anchor("cls_token", 3, "[1, 1, D]");
        var pos = ctx.Anchor("pos_embed", 3, "[1, T, D]");
        var pw = ctx.Anchor("patch_embed.proj.weight", 4, "[D, C, p, p]");
        if (cls is null || pos is null || pw is null) return o;
        int d = cls.Shape[2], cin = pw.Shape[1], p = pw.Shape[2];
        if (pw.Shape[3] != p) ctx.Fatal.Add($"patch_embed.proj.weight {P(pw.Shape)} has a non-square patch");
        int depth = ctx.BlockCount(TimmBlock());
        if (depth == 0) ctx.Fatal.Add("no blocks.N.* tensors");
        var fc1 = ctx.Anchor("blocks.0.mlp.fc1.weight", 2, "[hidden, D]");
        int hidden = fc1?.Shape[0] ?? 0;
        bool qkvBias = ctx.Source.Contains("blocks.0.attn.qkv.bias");
        bool hasHead = ctx.Source.Contains("head.weight") || ctx.Source.Contains("head.bias");
        int classes = hasHead ? (ctx.Source.TryGet("head.weight", out var hw) && hw.Rank == 2 ? hw.Shape[0] : ctx.Source.TryGet("head.bias", out var hb) && hb.Rank == 1 ? hb.Shape[0] : 0) : 0;
        if (hasHead && classes == 0) ctx.Fatal.Add("head.weight/head.bias are present but their shapes do not give the class count");
        int image = ctx.ImageSizeFrom(pos.Shape[1], p, "pos_embed");
        if (fc1 is null || depth == 0 || image == 0) return o;

        var arch = new VitConfig
        {
            ImageSize = image, PatchSize = p, InChans = cin, EmbedDim = d, Depth = depth, NumHeads = 1, MlpHidden = hidden,
            NumClasses = classes, QkvBias = qkvBias,
        };
        foreach (var (name, shape) in arch.TimmTensorShapes())
        {
            var t = ctx.Take(name, shape);
            if (t is not null) o.Add(t);
        }
        shapes = new CheckpointShapes(d, depth, hidden, p, cin, image, classes, qkvBias, null);
        return o;
    }

    // ---- Hugging Face ------------------------------------------------------------------------------

    [GeneratedRegex(@"^(?:vit\.)?encoder\.layer\.(\d+)\.")]
    private static partial Regex HfBlock();

    private static List<NamedTensor> FromHuggingFace(Context ctx, out CheckpointShapes? shapes)
    {
        var o = new List<NamedTensor>();
        shapes = null;
        string v = ctx.Source.Contains("vit.embeddings.cls_token") || ctx.Source.Names.Any(n => n.StartsWith("vit.", StringComparison.Ordinal)) ? "vit." : "";
        var cls = ctx.Anchor(v + "embeddings.cls_token", 3, "[1, 1, D]");
        var pos = ctx.Anchor(v + "embeddings.position_embeddings", 3, "[1, T, D]");
        var pw = ctx.Anchor(v + "embeddings.patch_embeddings.projection.weight", 4, "[D, C, p, p]");
        if (cls is null || pos is null || pw is null) return o;
        int d = cls.Shape[2], cin = pw.Shape[1], p = pw.Shape[2];
        if (pw.Shape[3] != p) ctx.Fatal.Add($"projection.weight {P(pw.Shape)} has a non-square patch");
        int depth = ctx.BlockCount(HfBlock());
        if (depth == 0) ctx.Fatal.Add($"no {v}encoder.layer.N.* tensors");
        var fc1 = ctx.Anchor($"{v}encoder.layer.0.intermediate.dense.weight", 2, "[hidden, D]");
        int hidden = fc1?.Shape[0] ?? 0;
        bool qkvBias = ctx.Source.Contains($"{v}encoder.layer.0.attention.attention.query.bias");
        bool hasHead = ctx.Source.Contains("classifier.weight") || ctx.Source.Contains("classifier.bias");
        int classes = hasHead ? (ctx.Source.TryGet("classifier.weight", out var hw) && hw.Rank == 2 ? hw.Shape[0] : ctx.Source.TryGet("classifier.bias", out var hb) && hb.Rank == 1 ? hb.Shape[0] : 0) : 0;
        if (hasHead && classes == 0) ctx.Fatal.Add("classifier.weight/bias are present but their shapes do not give the class count");
        int image = ctx.ImageSizeFrom(pos.Shape[1], p, v + "embeddings.position_embeddings");
        if (fc1 is null || depth == 0 || image == 0) return o;
        int t = pos.Shape[1];

        void Same(string src, string dst, params int[] shape)
        {
            var x = ctx.Take(src, shape);
            if (x is not null) o.Add(x.Rename(dst));
        }

        Same(v + "embeddings.cls_token", "cls_token", 1, 1, d);
        Same(v + "embeddings.position_embeddings", "pos_embed", 1, t, d);
        Same(v + "embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight", d, cin, p, p);
        Same(v + "embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias", d);
        for (int i = 0; i < depth; i++)
        {
            string s = $"{v}encoder.layer.{i}.", b = $"blocks.{i}.";
            Same(s + "layernorm_before.weight", b + "norm1.weight", d);
            Same(s + "layernorm_before.bias", b + "norm1.bias", d);
            var q = ctx.Take(s + "attention.attention.query.weight", d, d);
            var k = ctx.Take(s + "attention.attention.key.weight", d, d);
            var vv = ctx.Take(s + "attention.attention.value.weight", d, d);
            if (q is not null && k is not null && vv is not null)
                Add(o, b + "attn.qkv.weight", [3 * d, d], Concat(q.Data, k.Data, vv.Data), q);
            if (qkvBias)
            {
                var qb = ctx.Take(s + "attention.attention.query.bias", d);
                var kb = ctx.Take(s + "attention.attention.key.bias", d);
                var vb = ctx.Take(s + "attention.attention.value.bias", d);
                if (qb is not null && kb is not null && vb is not null)
                    Add(o, b + "attn.qkv.bias", [3 * d], Concat(qb.Data, kb.Data, vb.Data), qb);
            }
            Same(s + "attention.output.dense.weight", b + "attn.proj.weight", d, d);
            Same(s + "attention.output.dense.bias", b + "attn.proj.bias", d);
            Same(s + "layernorm_after.weight", b + "norm2.weight", d);
            Same(s + "layernorm_after.bias", b + "norm2.bias", d);
            Same(s + "intermediate.dense.weight", b + "mlp.fc1.weight", hidden, d);
            Same(s + "intermediate.dense.bias", b + "mlp.fc1.bias", hidden);
            Same(s + "output.dense.weight", b + "mlp.fc2.weight", d, hidden);
            Same(s + "output.dense.bias", b + "mlp.fc2.bias", d);
        }
        Same(v + "layernorm.weight", "norm.weight", d);
        Same(v + "layernorm.bias", "norm.bias", d);
        if (classes > 0)
        {
            Same("classifier.weight", "head.weight", classes, d);
            Same("classifier.bias", "head.bias", classes);
        }
        shapes = new CheckpointShapes(d, depth, hidden, p, cin, image, classes, qkvBias, null);
        return o;
    }

    // ---- AugReg (Flax) -----------------------------------------------------------------------------

    [GeneratedRegex(@"^Transformer/encoderblock_(\d+)/")]
    private static partial Regex AugRegBlock();

    private static List<NamedTensor> FromAugReg(Context ctx, out CheckpointShapes? shapes)
    {
        var o = new List<NamedTensor>();
        shapes = null;
        const string att = "MultiHeadDotProductAttention_1";
        var cls = ctx.Anchor("cls", 3, "[1, 1, D]");
        var pos = ctx.Anchor("Transformer/posembed_input/pos_embedding", 3, "[1, T, D]");
        var ek = ctx.Anchor("embedding/kernel", 4, "[p, p, C, D] (HWIO)");
        if (cls is null || pos is null || ek is null) return o;
        int d = cls.Shape[2], p = ek.Shape[0], cin = ek.Shape[2];
        if (ek.Shape[1] != p) ctx.Fatal.Add($"embedding/kernel {P(ek.Shape)} has a non-square patch");
        int depth = ctx.BlockCount(AugRegBlock());
        if (depth == 0) ctx.Fatal.Add("no Transformer/encoderblock_N/* tensors");
        var dense0 = ctx.Anchor("Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel", 2, "[D, hidden]");
        var qk0 = ctx.Anchor($"Transformer/encoderblock_0/{att}/query/kernel", 3, "[D, H, hd]");
        int hidden = dense0?.Shape[1] ?? 0;
        int heads = qk0?.Shape[1] ?? 0, hd = qk0?.Shape[2] ?? 0;
        if (qk0 is not null && heads * hd != d) ctx.Fatal.Add($"query kernel {P(qk0.Shape)}: heads × head_dim ≠ width {d}");
        bool qkvBias = ctx.Source.Contains($"Transformer/encoderblock_0/{att}/query/bias");
        bool hasHead = ctx.Source.Contains("head/kernel") || ctx.Source.Contains("head/bias");
        int classes = hasHead ? (ctx.Source.TryGet("head/kernel", out var hk) && hk.Rank == 2 ? hk.Shape[1] : ctx.Source.TryGet("head/bias", out var hb) && hb.Rank == 1 ? hb.Shape[0] : 0) : 0;
        if (hasHead && classes == 0) ctx.Fatal.Add("head/kernel or head/bias are present but their shapes do not give the class count");
        int image = ctx.ImageSizeFrom(pos.Shape[1], p, "Transformer/posembed_input/pos_embedding");
        if (dense0 is null || qk0 is null || depth == 0 || image == 0 || heads * hd != d) return o;
        int t = pos.Shape[1];

        void Same(string src, string dst, params int[] shape)
        {
            var x = ctx.Take(src, shape);
            if (x is not null) o.Add(x.Rename(dst));
        }
        void Dense(string src, string dst, int inDim, int outDim)
        {
            var x = ctx.Take(src, inDim, outDim);
            if (x is not null) Add(o, dst, [outDim, inDim], Transpose(x.Data, inDim, outDim), x);
        }

        Same("cls", "cls_token", 1, 1, d);
        Same("Transformer/posembed_input/pos_embedding", "pos_embed", 1, t, d);
        var k = ctx.Take("embedding/kernel", p, p, cin, d);
        if (k is not null) Add(o, "patch_embed.proj.weight", [d, cin, p, p], HwioToOihw(k.Data, p, p, cin, d), k);
        Same("embedding/bias", "patch_embed.proj.bias", d);
        for (int i = 0; i < depth; i++)
        {
            string s = $"Transformer/encoderblock_{i}/", b = $"blocks.{i}.";
            Same(s + "LayerNorm_0/scale", b + "norm1.weight", d);
            Same(s + "LayerNorm_0/bias", b + "norm1.bias", d);
            // query/key/value kernels [D, H, hd] = [in, out] with out = h·hd + j: transpose each to [out, in], stack q;k;v.
            var q = ctx.Take($"{s}{att}/query/kernel", d, heads, hd);
            var kk = ctx.Take($"{s}{att}/key/kernel", d, heads, hd);
            var vk = ctx.Take($"{s}{att}/value/kernel", d, heads, hd);
            if (q is not null && kk is not null && vk is not null)
                Add(o, b + "attn.qkv.weight", [3 * d, d], Concat(Transpose(q.Data, d, d), Transpose(kk.Data, d, d), Transpose(vk.Data, d, d)), q);
            if (qkvBias)
            {
                var qb = ctx.Take($"{s}{att}/query/bias", heads, hd);
                var kb = ctx.Take($"{s}{att}/key/bias", heads, hd);
                var vb = ctx.Take($"{s}{att}/value/bias", heads, hd);
                if (qb is not null && kb is not null && vb is not null)
                    Add(o, b + "attn.qkv.bias", [3 * d], Concat(qb.Data, kb.Data, vb.Data), qb);
            }
            // out kernel [H, hd, D] = [in = h·hd + j, out]: transpose to [out, in].
            var ok = ctx.Take($"{s}{att}/out/kernel", heads, hd, d);
            if (ok is not null) Add(o, b + "attn.proj.weight", [d, d], Transpose(ok.Data, d, d), ok);
            Same($"{s}{att}/out/bias", b + "attn.proj.bias", d);
            Same(s + "LayerNorm_2/scale", b + "norm2.weight", d);
            Same(s + "LayerNorm_2/bias", b + "norm2.bias", d);
            Dense(s + "MlpBlock_3/Dense_0/kernel", b + "mlp.fc1.weight", d, hidden);
            Same(s + "MlpBlock_3/Dense_0/bias", b + "mlp.fc1.bias", hidden);
            Dense(s + "MlpBlock_3/Dense_1/kernel", b + "mlp.fc2.weight", hidden, d);
            Same(s + "MlpBlock_3/Dense_1/bias", b + "mlp.fc2.bias", d);
        }
        Same("Transformer/encoder_norm/scale", "norm.weight", d);
        Same("Transformer/encoder_norm/bias", "norm.bias", d);
        if (classes > 0)
        {
            Dense("head/kernel", "head.weight", d, classes);
            Same("head/bias", "head.bias", classes);
        }
        shapes = new CheckpointShapes(d, depth, hidden, p, cin, image, classes, qkvBias, heads);
        return o;
    }
}

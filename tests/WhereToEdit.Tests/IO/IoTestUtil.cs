using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Tests.IO;

/// <summary>A unique temporary folder, deleted on dispose.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "wte-io-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

internal static class IoTestUtil
{
    /// <summary>Deterministic pseudo-random floats in [-1, 1).</summary>
    public static float[] Random(int n, int seed)
    {
        var r = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(r.NextDouble() * 2 - 1);
        return a;
    }

    /// <summary>A tiny timm-named ViT: dim 8, heads 2 (hd 4), depth 2, mlp 16, patch 4, 8 px (2×2 grid, 5 tokens), 3 ch, 5 classes.</summary>
    public static VitConfig TinyArch(bool qkvBias = true, int classes = 5) =>
        new() { ImageSize = 8, PatchSize = 4, InChans = 3, EmbedDim = 8, Depth = 2, NumHeads = 2, MlpHidden = 16, NumClasses = classes, QkvBias = qkvBias };

    public static TensorFile TinyTimm(VitConfig? arch = null, int seed = 1)
    {
        arch ??= TinyArch();
        int s = seed;
        var tensors = arch.TimmTensorShapes()
            .Select(t => new NamedTensor(t.Name, t.Shape, Random((int)NamedTensor.ElementCountOf(t.Shape), s++)))
            .ToList();
        return new TensorFile(tensors);
    }

    /// <summary>The same weights in Flax/AugReg names and layouts, written element by element from the spec's table.</summary>
    public static List<(string Name, int[] Shape, float[] Data)> ToFlaxLayout(TensorFile timm, VitConfig a)
    {
        int d = a.EmbedDim, h = a.NumHeads, hd = d / h, p = a.PatchSize, c = a.InChans, m = a.MlpHidden;
        var o = new List<(string, int[], float[])>();
        o.Add(("cls", [1, 1, d], timm["cls_token"].Data));
        o.Add(("Transformer/posembed_input/pos_embedding", [1, a.Tokens, d], timm["pos_embed"].Data));
        var w = timm["patch_embed.proj.weight"].Data; // [D, C, p, p]
        var k = new float[w.Length];                  // [p, p, C, D]
        for (int oo = 0; oo < d; oo++)
        for (int cc = 0; cc < c; cc++)
        for (int y = 0; y < p; y++)
        for (int x = 0; x < p; x++)
            k[((y * p + x) * c + cc) * d + oo] = w[((oo * c + cc) * p + y) * p + x];
        o.Add(("embedding/kernel", [p, p, c, d], k));
        o.Add(("embedding/bias", [d], timm["patch_embed.proj.bias"].Data));
        for (int i = 0; i < a.Depth; i++)
        {
            string s = $"Transformer/encoderblock_{i}/", b = $"blocks.{i}.", att = s + "MultiHeadDotProductAttention_1/";
            o.Add((s + "LayerNorm_0/scale", [d], timm[b + "norm1.weight"].Data));
            o.Add((s + "LayerNorm_0/bias", [d], timm[b + "norm1.bias"].Data));
            var qkv = timm[b + "attn.qkv.weight"].Data; // [3D, D]
            string[] names = ["query", "key", "value"];
            for (int part = 0; part < 3; part++)
            {
                var kern = new float[d * d]; // [D_in, H, hd]
                for (int inp = 0; inp < d; inp++)
                for (int hh = 0; hh < h; hh++)
                for (int j = 0; j < hd; j++)
                    kern[(inp * h + hh) * hd + j] = qkv[(part * d + hh * hd + j) * d + inp];
                o.Add((att + names[part] + "/kernel", [d, h, hd], kern));
                if (a.QkvBias)
                {
                    var bias = new float[d];
                    var qb = timm[b + "attn.qkv.bias"].Data;
                    for (int hh = 0; hh < h; hh++)
                    for (int j = 0; j < hd; j++)
                        bias[hh * hd + j] = qb[part * d + hh * hd + j];
                    o.Add((att + names[part] + "/bias", [h, hd], bias));
                }
            }
            var proj = timm[b + "attn.proj.weight"].Data; // [D_out, D_in]
            var ok = new float[d * d];                    // [H, hd, D_out]
            for (int hh = 0; hh < h; hh++)
            for (int j = 0; j < hd; j++)
            for (int oo = 0; oo < d; oo++)
                ok[(hh * hd + j) * d + oo] = proj[oo * d + hh * hd + j];
            o.Add((att + "out/kernel", [h, hd, d], ok));
            o.Add((att + "out/bias", [d], timm[b + "attn.proj.bias"].Data));
            o.Add((s + "LayerNorm_2/scale", [d], timm[b + "norm2.weight"].Data));
            o.Add((s + "LayerNorm_2/bias", [d], timm[b + "norm2.bias"].Data));
            o.Add((s + "MlpBlock_3/Dense_0/kernel", [d, m], TransposeRef(timm[b + "mlp.fc1.weight"].Data, m, d)));
            o.Add((s + "MlpBlock_3/Dense_0/bias", [m], timm[b + "mlp.fc1.bias"].Data));
            o.Add((s + "MlpBlock_3/Dense_1/kernel", [m, d], TransposeRef(timm[b + "mlp.fc2.weight"].Data, d, m)));
            o.Add((s + "MlpBlock_3/Dense_1/bias", [d], timm[b + "mlp.fc2.bias"].Data));
        }
        o.Add(("Transformer/encoder_norm/scale", [d], timm["norm.weight"].Data));
        o.Add(("Transformer/encoder_norm/bias", [d], timm["norm.bias"].Data));
        if (a.NumClasses > 0)
        {
            o.Add(("head/kernel", [d, a.NumClasses], TransposeRef(timm["head.weight"].Data, a.NumClasses, d)));
            o.Add(("head/bias", [a.NumClasses], timm["head.bias"].Data));
        }
        return o;
    }

    /// <summary>The same weights in Hugging Face names (query/key/value split).</summary>
    public static List<NamedTensor> ToHfLayout(TensorFile timm, VitConfig a) => CheckpointNaming.ToHuggingFace(timm, a);

    /// <summary>[rows, cols] → [cols, rows], written independently of the library.</summary>
    public static float[] TransposeRef(float[] src, int rows, int cols)
    {
        var dst = new float[src.Length];
        for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            dst[c * rows + r] = src[r * cols + c];
        return dst;
    }

    /// <summary>A .npy member built by hand (version 1.0 unless told, '&lt;f4' data unless given raw bytes).</summary>
    public static byte[] Npy(string dictText, byte[] data, int major = 1)
    {
        int prefix = major == 1 ? 10 : 12;
        string text = dictText;
        int pad = (64 - (prefix + text.Length + 1) % 64) % 64;
        text += new string(' ', pad) + "\n";
        var header = major == 3 ? Encoding.UTF8.GetBytes(text) : Encoding.Latin1.GetBytes(text);
        var ms = new MemoryStream();
        ms.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', (byte)major, 0]);
        if (major == 1)
        {
            var l = new byte[2];
            BinaryPrimitives.WriteUInt16LittleEndian(l, (ushort)header.Length);
            ms.Write(l);
        }
        else
        {
            var l = new byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(l, (uint)header.Length);
            ms.Write(l);
        }
        ms.Write(header);
        ms.Write(data);
        return ms.ToArray();
    }

    public static string ShapeText(int[] shape) =>
        shape.Length == 1 ? $"({shape[0]},)" : "(" + string.Join(", ", shape) + ")";

    public static byte[] F32Bytes(float[] data)
    {
        var b = new byte[data.Length * 4];
        for (int i = 0; i < data.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(b.AsSpan(i * 4), data[i]);
        return b;
    }

    public static byte[] NpyF32(int[] shape, float[] data, int major = 1) =>
        Npy($"{{'descr': '<f4', 'fortran_order': False, 'shape': {ShapeText(shape)}, }}", F32Bytes(data), major);

    /// <summary>Writes a .npz (ZIP of name.npy members) with deflate.</summary>
    public static void WriteNpz(string path, IEnumerable<(string Name, byte[] Npy)> members, CompressionLevel level = CompressionLevel.Fastest)
    {
        using var fs = System.IO.File.Create(path);
        using var zip = new ZipArchive(fs, ZipArchiveMode.Create);
        foreach (var (name, npy) in members)
        {
            var e = zip.CreateEntry(name + ".npy", level);
            using var s = e.Open();
            s.Write(npy);
        }
    }

    /// <summary>A raw safetensors file from a header JSON string and data bytes.</summary>
    public static byte[] RawSafetensors(string headerJson, byte[] data, ulong? claimedHeaderLength = null)
    {
        var h = Encoding.UTF8.GetBytes(headerJson);
        var b = new byte[8 + h.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(b, claimedHeaderLength ?? (ulong)h.Length);
        h.CopyTo(b, 8);
        data.CopyTo(b, 8 + h.Length);
        return b;
    }
}

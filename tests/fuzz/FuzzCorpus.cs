using System.Buffers.Binary;
using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using WhereToEdit.Cli;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;

namespace WhereToEdit.Tests.Fuzz;

/// <summary>One hostile input and the command that reads it. Every case must end in a clean `wte:` error (exit 1).</summary>
public sealed record FuzzCase(string Family, string Name, string[] Args, string[] Inputs, string[] Outputs);

/// <summary>
/// The hostile-input corpus of issue 14, generated at test time from a few valid files and fixed seeds (nothing large
/// is committed): every family the engine reads — model files (safetensors, npz/npy, config.json, preprocessing
/// metadata), images, hypernetwork files, patches, benchmark manifests and folder layouts (symlink escapes included),
/// resume checkpoints, IDX files and FIFOs. Mutations are chosen so that every case is malformed (truncations,
/// trailing garbage, structural edits), so success on any of them is a bug.
/// </summary>
public static class FuzzCorpus
{
    /// <summary>PNG's CRC-32 (ISO 3309), so structural edits keep valid chunk checksums and test what they mean to.</summary>
    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            c ^= b;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
        }
        return c ^ 0xFFFFFFFF;
    }

    [DllImport("libc", SetLastError = true, EntryPoint = "mkfifo")]
    private static extern int MkFifo(string path, uint mode);

    public static List<FuzzCase> Generate(string root)
    {
        var g = new Generator(root);
        g.Build();
        return g.Cases;
    }

    private sealed class Generator(string root)
    {
        public readonly List<FuzzCase> Cases = [];
        private string _model = "", _png = "", _patch = "", _hypernet = "", _checkpoint = "", _data = "", _jpeg = "";
        private int _n;

        private string F(string name) => Path.Combine(root, name);
        private string NewFile(string family, string ext) => F($"{family}-{_n++:D4}{ext}");
        private string Out(string ext = ".safetensors") => F($"out-{_n++:D4}{ext}");

        private void Add(string family, string name, string[] args, string[] inputs, params string[] outputs) =>
            Cases.Add(new FuzzCase(family, name, args, inputs, outputs));

        public void Build()
        {
            Directory.CreateDirectory(root);
            _model = Reliability.HostileSupport.Model(F("valid-model.safetensors"));
            _png = Reliability.HostileSupport.Png(F("valid.png"));
            _jpeg = F("valid.jpg");
            using (var img = SixLabors.ImageSharp.Image.Load(_png)) SixLabors.ImageSharp.ImageExtensions.SaveAsJpeg(img, _jpeg);
            _data = F("valid-data");
            Directory.CreateDirectory(_data);
            for (int i = 0; i < 4; i++) Reliability.HostileSupport.Png(Path.Combine(_data, $"x{i}.png"), seed: 10 + i);
            Run("edit", _model, "--method", "ft-l2", "--image", _png, "--label", "1", "--lr", "0.01", "--max-steps", "2", "--out", F("valid-patch.safetensors"));
            _patch = F("valid-patch.safetensors");
            Run("meta-train", _model, "--data", _data, "--iterations", "1", "--batch", "1", "--outer-steps", "1", "--inner-steps", "1", "--stage-b-steps", "1",
                "--checkpoint-dir", F("valid-ck"), "--checkpoint-every", "1", "--out", F("valid-hypernet.safetensors"), "--no-progress", "--threads", "1");
            _hypernet = F("valid-hypernet.safetensors");
            _checkpoint = Directory.GetFiles(F("valid-ck")).Single();

            SafeTensorsModels();
            NpzModels();
            ConfigJson();
            Preprocessings();
            Images();
            Hypernets();
            Patches();
            Manifests();
            Resumes();
            Idx();
            Fifos();
        }

        private static void Run(params string[] args)
        {
            var e = new StringWriter();
            if (WteCommands.Run(args, new StringWriter(), e) != 0) throw new InvalidOperationException($"fuzz corpus setup failed: wte {string.Join(' ', args)}: {e}");
        }

        // ---- helpers ---------------------------------------------------------------------------------

        private static byte[] Truncate(byte[] b, Random r) => b[..r.Next(0, b.Length)];

        private static byte[] AppendGarbage(byte[] b, Random r)
        {
            var tail = new byte[r.Next(1, 64)];
            r.NextBytes(tail);
            return [.. b, .. tail];
        }

        /// <summary>A safetensors file from a raw header JSON and data bytes (no validation: the point is to be wrong).</summary>
        private static byte[] RawSafeTensors(string header, byte[] data)
        {
            var h = Encoding.UTF8.GetBytes(header);
            var b = new byte[8 + h.Length + data.Length];
            BinaryPrimitives.WriteUInt64LittleEndian(b, (ulong)h.Length);
            h.CopyTo(b, 8);
            data.CopyTo(b, 8 + h.Length);
            return b;
        }

        private static (string Header, byte[] Data) Split(byte[] file)
        {
            int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(file);
            return (Encoding.UTF8.GetString(file, 8, n), file[(8 + n)..]);
        }

        private string Write(string family, string ext, byte[] bytes)
        {
            string p = NewFile(family, ext);
            File.WriteAllBytes(p, bytes);
            return p;
        }

        /// <summary>Rewrites a wte safetensors file with its tensors and metadata changed.</summary>
        private string Rewrite(string source, string family, Action<Dictionary<string, string>>? metadata = null, Func<List<NamedTensor>, List<NamedTensor>>? tensors = null)
        {
            var file = SafeTensors.Read(source);
            var md = file.Metadata.ToDictionary(k => k.Key, k => k.Value);
            metadata?.Invoke(md);
            var list = file.Tensors.Select(t => new NamedTensor(t.Name, (int[])t.Shape.Clone(), (float[])t.Data.Clone())).ToList();
            if (tensors is not null) list = tensors(list);
            string p = NewFile(family, ".safetensors");
            SafeTensors.Write(p, list, md);
            return p;
        }

        private static List<NamedTensor> Change(List<NamedTensor> l, Func<NamedTensor, bool> which, Action<float[]> change)
        {
            change(l.First(which).Data);
            return l;
        }

        private static string Json(string text, Action<JsonObject> edit)
        {
            var o = JsonNode.Parse(text)!.AsObject();
            edit(o);
            return o.ToJsonString();
        }

        // ---- families --------------------------------------------------------------------------------

        private void SafeTensorsModels()
        {
            const string fam = "safetensors";
            var valid = File.ReadAllBytes(_model);
            var rng = new Random(1401);
            for (int i = 0; i < 30; i++) { string p = Write(fam, ".safetensors", Truncate(valid, rng)); Add(fam, $"truncated-{i}", ["info", p], [p]); }
            for (int i = 0; i < 10; i++) { string p = Write(fam, ".safetensors", AppendGarbage(valid, rng)); Add(fam, $"trailing-bytes-{i}", ["info", p], [p]); }
            var (header, data) = Split(valid);
            var o = JsonNode.Parse(header)!.AsObject();
            string first = o.Select(kv => kv.Key).First(k => k != "__metadata__");
            string Edit(Action<JsonObject> e) => Json(header, e);
            var structural = new Dictionary<string, string>
            {
                ["unknown-dtype"] = Edit(x => x[first]!["dtype"] = "Q7"),
                ["negative-dim"] = Edit(x => x[first]!["shape"] = new JsonArray(-1, 4)),
                ["shape-overflow"] = Edit(x => x[first]!["shape"] = new JsonArray(2147483647, 2147483647, 2147483647)),
                ["offsets-reversed"] = Edit(x => x[first]!["data_offsets"] = new JsonArray(100, 0)),
                ["offsets-shifted"] = Edit(x => x[first]!["data_offsets"] = new JsonArray(4, 4 + x[first]!["data_offsets"]![1]!.GetValue<long>())),
                ["offsets-string"] = Edit(x => x[first]!["data_offsets"] = "0,4"),
                ["no-shape"] = Edit(x => x[first]!.AsObject().Remove("shape")),
                ["metadata-not-strings"] = Edit(x => x["__metadata__"]!["wte.labels"] = 5),
                ["labels-not-json"] = Edit(x => x["__metadata__"]!["wte.labels"] = "[\"a\","),
                ["config-not-json"] = Edit(x => x["__metadata__"]!["wte.config"] = "{"),
                ["config-huge-depth"] = Edit(x => x["__metadata__"]!["wte.config"] = Json(x["__metadata__"]!["wte.config"]!.GetValue<string>(), c => c["depth"] = 100000)),
                ["entry-not-object"] = Edit(x => x[first] = 3),
                ["deep-json"] = "{\"a\":" + new string('[', 100000) + new string(']', 100000) + "}",
                ["not-object"] = "[1,2,3]",
                ["invalid-utf8-name"] = "{\"\\udc00\":{}}",
                ["empty-name"] = Edit(x => { var v = x[first]!.DeepClone(); x.Remove(first); x[""] = v; }),
            };
            foreach (var (name, h) in structural)
            {
                string p = Write(fam, ".safetensors", RawSafeTensors(h, data));
                Add(fam, name, ["info", p], [p]);
            }
            // Header length fields that lie.
            foreach (ulong len in new ulong[] { 0, 1, 7, ulong.MaxValue, 1UL << 40, (ulong)valid.Length })
            {
                var b = (byte[])valid.Clone();
                BinaryPrimitives.WriteUInt64LittleEndian(b, len);
                string p = Write(fam, ".safetensors", b);
                Add(fam, $"header-length-{len}", ["info", p], [p]);
            }
            // A duplicate key and invalid UTF-8 bytes.
            {
                string p = Write(fam, ".safetensors", RawSafeTensors(header.Insert(1, $"\"{first}\":{o[first]!.ToJsonString()},"), data));
                Add(fam, "duplicate-name", ["info", p], [p]);
                var b = RawSafeTensors(header, data);
                b[12] = 0xFF;
                p = Write(fam, ".safetensors", b);
                Add(fam, "invalid-utf8", ["info", p], [p]);
            }
            // An extra 4 GiB tensor in a sparse file: refused by the budget before it is decoded.
            {
                long big = 1L << 32;
                string h = Edit(x => x["zz.extra"] = new JsonObject { ["dtype"] = "F32", ["shape"] = new JsonArray(1 << 30), ["data_offsets"] = new JsonArray(data.Length, data.Length + big) });
                string p = Write(fam, ".safetensors", RawSafeTensors(h, data));
                using (var fs = new FileStream(p, FileMode.Open)) fs.SetLength(fs.Length + big);
                Add(fam, "sparse-4GiB-extra-tensor", ["info", p], [p]);
            }
        }

        private static byte[] Npy(string dict, byte[] data, int major = 1)
        {
            var text = Encoding.Latin1.GetBytes(dict + "\n");
            var ms = new MemoryStream();
            ms.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', (byte)major, 0]);
            if (major == 1) ms.Write(BitConverter.GetBytes((ushort)Math.Min(text.Length, 65535)));
            else ms.Write(BitConverter.GetBytes((uint)text.Length));
            ms.Write(text);
            ms.Write(data);
            return ms.ToArray();
        }

        private static byte[] Zip(params (string Name, byte[] Data, CompressionLevel Level)[] members)
        {
            var ms = new MemoryStream();
            using (var z = new ZipArchive(ms, ZipArchiveMode.Create, leaveOpen: true))
                foreach (var (name, data, level) in members)
                {
                    using var s = z.CreateEntry(name, level).Open();
                    s.Write(data);
                }
            return ms.ToArray();
        }

        private void NpzModels()
        {
            const string fam = "npz";
            var good = Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", new byte[16]);
            var valid = Zip(("cls.npy", good, CompressionLevel.Optimal), ("embedding/kernel.npy", good, CompressionLevel.NoCompression));
            var rng = new Random(1402);
            for (int i = 0; i < 15; i++) { string p = Write(fam, ".npz", Truncate(valid, rng)); Add(fam, $"truncated-{i}", ["info", p], [p]); }
            string Npz(params (string, byte[], CompressionLevel)[] m) => Write(fam, ".npz", Zip(m));
            var cases = new Dictionary<string, string>
            {
                ["npy-nesting-500k"] = Npz(("a.npy", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': " + new string('(', 500_000) + new string(')', 500_000) + "}", [], 2), CompressionLevel.Optimal)),
                ["npy-nesting-40"] = Npz(("a.npy", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': " + new string('[', 40) + new string(']', 40) + "}", []), CompressionLevel.Optimal)),
                ["npy-header-4GiB"] = Npz(("a.npy", [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 2, 0, 0xFF, 0xFF, 0xFF, 0xFF], CompressionLevel.Optimal)),
                ["npy-bad-magic"] = Npz(("a.npy", Encoding.ASCII.GetBytes("root:x:0:0:root"), CompressionLevel.Optimal)),
                ["npy-version-9"] = Npz(("a.npy", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", new byte[4], 9), CompressionLevel.Optimal)),
                ["npy-dtype-object"] = Npz(("a.npy", Npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", new byte[8]), CompressionLevel.Optimal)),
                ["npy-fortran"] = Npz(("a.npy", Npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", new byte[16]), CompressionLevel.Optimal)),
                ["npy-short-data"] = Npz(("a.npy", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 4), }", new byte[16]), CompressionLevel.Optimal)),
                ["npy-extra-data"] = Npz(("a.npy", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", new byte[16]), CompressionLevel.Optimal)),
                ["npy-negative-dim"] = Npz(("a.npy", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }", []), CompressionLevel.Optimal)),
                ["npy-huge-dim"] = Npz(("a.npy", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", []), CompressionLevel.Optimal)),
                ["npy-unknown-key"] = Npz(("a.npy", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'evil': 1}", new byte[4]), CompressionLevel.Optimal)),
                ["npy-unterminated"] = Npz(("a.npy", Npy("{'descr': '<f4", []), CompressionLevel.Optimal)),
                ["not-npy-member"] = Npz(("readme.txt", good, CompressionLevel.Optimal)),
                ["duplicate-tensor"] = Npz(("a.npy", good, CompressionLevel.Optimal), ("params/a.npy", good, CompressionLevel.Optimal)),
                ["empty-name"] = Npz((".npy", good, CompressionLevel.Optimal)),
                ["no-vit-tensors"] = Npz(("a.npy", good, CompressionLevel.Optimal)),
            };
            // A zip bomb: 256 MiB of zeros deflate to ~256 KiB; the header declares exactly that size (refused by the budget).
            {
                long count = 64L << 20;
                var zeros = new byte[count * 4];
                var bomb = Npy($"{{'descr': '<f4', 'fortran_order': False, 'shape': ({count},), }}", zeros);
                cases["zip-bomb-256MiB"] = Npz(("a.npy", bomb, CompressionLevel.SmallestSize));
            }
            foreach (var (name, p) in cases) Add(fam, name, ["info", p, "--max-memory", "64M"], [p]);
            // Garbage appended after the central directory still opens; corrupt the local deflate data instead.
            for (int i = 0; i < 8; i++)
            {
                var b = (byte[])valid.Clone();
                int at = 30 + rng.Next(0, 20);
                b[at] ^= 0xFF;
                b[at + 1] ^= 0x5A;
                string p = Write(fam, ".npz", b);
                Add(fam, $"corrupt-local-header-{i}", ["info", p], [p]);
            }
        }

        private string HubFolder(string config, string? model = null)
        {
            string dir = F($"hub-{_n++:D4}");
            Directory.CreateDirectory(dir);
            File.Copy(model ?? _model, Path.Combine(dir, "model.safetensors"));
            // Without our metadata the config decides the architecture.
            var file = SafeTensors.Read(Path.Combine(dir, "model.safetensors"));
            SafeTensors.Write(Path.Combine(dir, "model.safetensors"), file.Tensors, new Dictionary<string, string> { ["format"] = "pt" });
            File.WriteAllText(Path.Combine(dir, "config.json"), config);
            return dir;
        }

        private void ConfigJson()
        {
            const string fam = "config.json";
            string timm = "{\"architecture\": \"vit_test\", \"num_classes\": 4, \"model_args\": {\"img_size\": 16, \"patch_size\": 4, \"embed_dim\": 16, \"depth\": 4, \"num_heads\": 2}, " +
                          "\"pretrained_cfg\": {\"input_size\": [3, 16, 16], \"crop_pct\": 1.0, \"interpolation\": \"bilinear\", \"mean\": [0.5, 0.5, 0.5], \"std\": [0.5, 0.5, 0.5]}}";
            var cases = new Dictionary<string, string>
            {
                ["deep-nesting"] = new string('[', 100_000) + new string(']', 100_000),
                ["invalid"] = "{\"architecture\": ",
                ["not-object"] = "[]",
                ["neither-timm-nor-hf"] = "{\"foo\": 1}",
                ["heads-do-not-divide"] = timm.Replace("\"num_heads\": 2", "\"num_heads\": 3"),
                ["heads-zero"] = timm.Replace("\"num_heads\": 2", "\"num_heads\": 0"),
                ["heads-huge"] = timm.Replace("\"num_heads\": 2", "\"num_heads\": 99999999999999"),
                ["crop-pct-1e-9-squash"] = timm.Replace("\"crop_pct\": 1.0", "\"crop_pct\": 1e-9, \"crop_mode\": \"squash\""),
                ["crop-pct-negative"] = timm.Replace("\"crop_pct\": 1.0", "\"crop_pct\": -1"),
                ["interpolation-unknown"] = timm.Replace("\"bilinear\"", "\"lanczos9\""),
                ["mean-nan"] = timm.Replace("\"mean\": [0.5, 0.5, 0.5]", "\"mean\": [NaN, 0.5, 0.5]"),
                ["std-zero"] = timm.Replace("\"std\": [0.5, 0.5, 0.5]", "\"std\": [0, 0.5, 0.5]"),
                ["duplicate-key"] = timm.Replace("{\"architecture\"", "{\"num_classes\": 4, \"architecture\""),
                ["classes-mismatch"] = timm.Replace("\"num_classes\": 4", "\"num_classes\": 1000"),
                ["hf-bad-types"] = "{\"model_type\": \"vit\", \"hidden_size\": \"sixteen\"}",
                ["hf-negative"] = "{\"model_type\": \"vit\", \"hidden_size\": -16, \"num_hidden_layers\": 4, \"num_attention_heads\": 2, \"intermediate_size\": 32, \"image_size\": 16, \"patch_size\": 4}",
                ["comments"] = "// x\n" + timm,
                ["trailing-comma"] = timm[..^1] + ",}",
                ["bom-garbage"] = "\u0000\u0001" + timm,
            };
            foreach (var (name, text) in cases)
            {
                string dir = HubFolder(text);
                Add(fam, name, ["info", dir], [Path.Combine(dir, "model.safetensors"), Path.Combine(dir, "config.json")]);
            }
            var rng = new Random(1403);
            for (int i = 0; i < 8; i++)
            {
                string dir = HubFolder(timm[..rng.Next(1, timm.Length - 1)]);
                Add(fam, $"truncated-{i}", ["info", dir], [Path.Combine(dir, "config.json")]);
            }
        }

        private void Preprocessings()
        {
            const string fam = "preprocessing";
            string pre = SafeTensors.Read(_model).Metadata[WteMetadata.PreprocessingKey];
            var cases = new Dictionary<string, Action<Dictionary<string, string>>>
            {
                ["resize-2e9"] = m => m[WteMetadata.PreprocessingKey] = Json(pre, p => { p["resize_size"] = 2_000_000_000; p["resize_mode"] = "direct"; }),
                ["resize-2e9-shorter"] = m => m[WteMetadata.PreprocessingKey] = Json(pre, p => p["resize_size"] = 2_000_000_000),
                ["resize-negative"] = m => m[WteMetadata.PreprocessingKey] = Json(pre, p => p["resize_size"] = -3),
                ["crop-huge"] = m => m[WteMetadata.PreprocessingKey] = Json(pre, p => p["crop_size"] = 1_000_000),
                ["mean-length"] = m => m[WteMetadata.PreprocessingKey] = Json(pre, p => p["mean"] = new JsonArray(0.5, 0.5)),
                ["not-json"] = m => m[WteMetadata.PreprocessingKey] = "{",
                ["deep"] = m => m[WteMetadata.PreprocessingKey] = new string('[', 10000) + new string(']', 10000),
                ["labels-deep"] = m => m[WteMetadata.LabelsKey] = new string('[', 10000) + new string(']', 10000),
                ["labels-not-strings"] = m => m[WteMetadata.LabelsKey] = "[1, 2, 3, 4]",
                ["config-depth-mismatch"] = m => m[WteMetadata.ConfigKey] = Json(m[WteMetadata.ConfigKey], c => c["depth"] = 100000),
            };
            foreach (var (name, edit) in cases)
            {
                string p = Rewrite(_model, fam, edit);
                Add(fam, name, ["predict", p, _png], [p, _png]);
            }
            // 39,602 tokens (image 796, patch 4, width 16): a 2.5 MB file whose attention needs gigabytes per image.
            string tokens = Reliability.HostileSupport.Model(NewFile(fam, ".safetensors"), config: Reliability.HostileSupport.TinyConfig with { ImageSize = 796, Depth = 2 },
                preprocessing: Reliability.HostileSupport.TinyPreprocessing with { ResizeSize = 796, CropSize = 796 });
            Add(fam, "tokens-39602", ["predict", tokens, _png], [tokens, _png]);
        }

        private static byte[] PngChunk(string type, byte[] body)
        {
            var b = new byte[12 + body.Length];
            BinaryPrimitives.WriteUInt32BigEndian(b, (uint)body.Length);
            Encoding.ASCII.GetBytes(type).CopyTo(b, 4);
            body.CopyTo(b, 8);
            BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(8 + body.Length), Crc32(b.AsSpan(4, 4 + body.Length)));
            return b;
        }

        private static byte[] Deflate(byte[] data)
        {
            var ms = new MemoryStream();
            using (var z = new ZLibStream(ms, CompressionLevel.SmallestSize, leaveOpen: true)) z.Write(data);
            return ms.ToArray();
        }

        private void Images()
        {
            const string fam = "image";
            var png = File.ReadAllBytes(_png);
            var jpg = File.ReadAllBytes(_jpeg);
            var rng = new Random(1404);
            var iend = png[^12..];
            void Img(string name, byte[] bytes, string ext = ".png")
            {
                string p = Write(fam, ext, bytes);
                Add(fam, name, ["predict", _model, p], [_model, p]);
            }
            for (int i = 0; i < 15; i++) Img($"png-truncated-{i}", Truncate(png, rng));
            for (int i = 0; i < 10; i++) Img($"png-truncated-with-iend-{i}", [.. png[..rng.Next(8, png.Length - 12)], .. iend]);
            for (int i = 0; i < 8; i++) Img($"jpeg-truncated-{i}", Truncate(jpg, rng), ".jpg");
            for (int i = 0; i < 6; i++) Img($"png-garbage-after-iend-{i}", AppendGarbage(png, rng));
            // A 1 MB text chunk that inflates to 1 GiB would be read whole by ImageSharp's Identify.
            {
                var text = Deflate(new byte[256 << 20]);
                byte[] ztxt = [.. Encoding.ASCII.GetBytes("Comment"), 0, 0, .. text];
                Img("png-ztxt-bomb", [.. png[..33], .. PngChunk("zTXt", ztxt), .. png[33..]]);
                byte[] itxt = [.. Encoding.ASCII.GetBytes("XML:com.adobe.xmp"), 0, 1, 0, 0, 0, .. text];
                Img("png-itxt-bomb", [.. png[..33], .. PngChunk("iTXt", itxt), .. png[33..]]);
                byte[] iccp = [.. Encoding.ASCII.GetBytes("icc"), 0, 0, .. text];
                Img("png-iccp-bomb", [.. png[..33], .. PngChunk("iCCP", iccp), .. png[33..]]);
            }
            // Headers that lie about the size.
            {
                var huge = (byte[])png.Clone();
                BinaryPrimitives.WriteUInt32BigEndian(huge.AsSpan(16), 100_000);
                BinaryPrimitives.WriteUInt32BigEndian(huge.AsSpan(20), 100_000);
                BinaryPrimitives.WriteUInt32BigEndian(huge.AsSpan(29), Crc32(huge.AsSpan(12, 17)));
                Img("png-100000x100000", huge);
                var zero = (byte[])png.Clone();
                BinaryPrimitives.WriteUInt32BigEndian(zero.AsSpan(16), 0);
                BinaryPrimitives.WriteUInt32BigEndian(zero.AsSpan(29), Crc32(zero.AsSpan(12, 17)));
                Img("png-zero-width", zero);
                Img("png-chunk-length-2GiB", [.. png[..33], 0x7F, 0xFF, 0xFF, 0xFF, .. Encoding.ASCII.GetBytes("tEXt"), .. png[33..]]);
                Img("png-no-ihdr", [.. png[..8], .. png[33..]]);
            }
            Img("random-bytes", Enumerable.Range(0, 300).Select(i => (byte)(i * 7919 % 251)).ToArray());
            Img("text-file", Encoding.ASCII.GetBytes("root:x:0:0:root:/root:/bin/bash\n"));
            Img("gif-header-only", Encoding.ASCII.GetBytes("GIF89a\x10\x00\x10\x00"), ".gif");
            Img("bmp-lying-size", [(byte)'B', (byte)'M', 0xFF, 0xFF, 0xFF, 0x7F, 0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0, 0x10, 0, 0, 0, 0x10, 0, 0, 0, 1, 0, 24, 0], ".bmp");
            Img("webp-riff-lies", [.. Encoding.ASCII.GetBytes("RIFF"), 0xFF, 0xFF, 0xFF, 0x7F, .. Encoding.ASCII.GetBytes("WEBPVP8 "), 0, 0, 0, 0], ".webp");
            Img("webp-truncated-vp8l", [.. Encoding.ASCII.GetBytes("RIFF"), 20, 0, 0, 0, .. Encoding.ASCII.GetBytes("WEBPVP8L"), 8, 0, 0, 0, 0x2F, 0, 0, 0, 0, 0, 0, 0], ".webp");
            Img("empty", [], ".png");
        }

        private void Hypernets()
        {
            const string fam = "hypernet";
            var valid = File.ReadAllBytes(_hypernet);
            var rng = new Random(1405);
            void H(string name, string p) => Add(fam, name, ["edit", _model, "--hypernet", p, "--image", _png, "--label", "1", "--out", Out()], [_model, _png, p]);
            for (int i = 0; i < 10; i++) H($"truncated-{i}", Write(fam, ".safetensors", Truncate(valid, rng)));
            string cfg = SafeTensors.Read(_hypernet).Metadata[Engine.Models.HypernetFile.ConfigKey];
            var cases = new Dictionary<string, Action<Dictionary<string, string>>>
            {
                ["mlp-hidden-30M"] = m => m[Engine.Models.HypernetFile.ConfigKey] = Json(cfg, c => c["mlp_hidden"] = 30_000_000),
                ["depth-100000"] = m => m[Engine.Models.HypernetFile.ConfigKey] = Json(cfg, c => c["depth"] = 100_000),
                ["units-huge"] = m => m[Engine.Models.HypernetFile.ConfigKey] = Json(cfg, c => c["units"] = 2_000_000),
                ["heads-zero"] = m => m[Engine.Models.HypernetFile.ConfigKey] = Json(cfg, c => c["num_heads"] = 0),
                ["clamp-nan"] = m => m[Engine.Models.HypernetFile.ConfigKey] = cfg.Replace("\"clamp\":", "\"clamp\":\"NaN\",\"x\":"),
                ["config-missing"] = m => m.Remove(Engine.Models.HypernetFile.ConfigKey),
                ["config-deep"] = m => m[Engine.Models.HypernetFile.ConfigKey] = new string('[', 5000) + new string(']', 5000),
                ["blocks-mismatch"] = m => m[Engine.Models.HypernetFile.EditBlocksKey] = "[1]",
                ["blocks-out-of-range"] = m => m[Engine.Models.HypernetFile.EditBlocksKey] = "[2, 99]",
                ["blocks-null"] = m => m[Engine.Models.HypernetFile.EditBlocksKey] = "null",
                ["fingerprint-other"] = m => m[Engine.Models.HypernetFile.FingerprintKey] = "0123456789abcdef0123456789abcdef",
                ["format-version-999"] = m => m["wte.hypernet.format_version"] = "999",
            };
            foreach (var (name, edit) in cases) H(name, Rewrite(_hypernet, fam, edit));
            H("nan-weight", Rewrite(_hypernet, fam, tensors: l => Change(l, t => t.Data.Length > 0, d => d[0] = float.NaN)));
            H("inf-weight", Rewrite(_hypernet, fam, tensors: l => Change(l, t => t.Data.Length > 1, d => d[1] = float.NegativeInfinity)));
            H("missing-tensor", Rewrite(_hypernet, fam, tensors: l => l.Skip(1).ToList()));
            H("wrong-shape", Rewrite(_hypernet, fam, tensors: l => l.Select((t, i) => i == 0 ? new NamedTensor(t.Name, [t.Data.Length], t.Data) : t).ToList()));
            H("model-as-hypernet", _model);
        }

        private void Patches()
        {
            const string fam = "patch";
            var valid = File.ReadAllBytes(_patch);
            var rng = new Random(1406);
            void P(string name, string p) => Add(fam, name, ["patch", "apply", _model, p, "--out", Out()], [_model, p]);
            for (int i = 0; i < 12; i++) P($"truncated-{i}", Write(fam, ".safetensors", Truncate(valid, rng)));
            for (int i = 0; i < 4; i++) P($"trailing-{i}", Write(fam, ".safetensors", AppendGarbage(valid, rng)));
            string header = SafeTensors.Read(_patch).Metadata[EditPatch.MetadataKey];
            string Md(Action<JsonObject> e) => Rewrite(_patch, fam, m => m[EditPatch.MetadataKey] = Json(header, e));
            string Ts(Func<List<NamedTensor>, List<NamedTensor>> e) => Rewrite(_patch, fam, tensors: e);
            P("format-999", Md(h => h["format_version"] = 999));
            P("format-0", Md(h => h["format_version"] = 0));
            P("blocks-null", Md(h => h["edit_blocks"] = null));
            P("blocks-repeated", Md(h => h["edit_blocks"] = new JsonArray(1, 1, 3)));
            P("blocks-huge", Md(h => h["edit_blocks"] = new JsonArray(1, 2, 1_000_000)));
            P("embed-zero", Md(h => h["embed_dim"] = 0));
            P("mlp-mismatch", Md(h => h["mlp_hidden"] = 64));
            P("fingerprint-other-base", Md(h => h["base_fingerprint"] = "0123456789abcdef0123456789abcdef"));
            P("fingerprint-empty", Md(h => h["base_fingerprint"] = ""));
            P("edited-fingerprint-wrong", Md(h => h["edited_fingerprint"] = "0123456789abcdef0123456789abcdef"));
            P("keep-nan", Rewrite(_patch, fam, m => m[EditPatch.MetadataKey] = header.Replace("\"keep\":1", "\"keep\":\"NaN\"")));
            P("metadata-not-json", Rewrite(_patch, fam, m => m[EditPatch.MetadataKey] = "{\"format_version\":"));
            P("metadata-missing", Rewrite(_patch, fam, m => m.Remove(EditPatch.MetadataKey)));
            P("metadata-deep", Rewrite(_patch, fam, m => m[EditPatch.MetadataKey] = new string('[', 5000) + new string(']', 5000)));
            P("labels-null", Md(h => h["labels"] = null));
            P("duplicate-index", Ts(l => Change(l, t => t.Name == "units.0.indices", d => d[1] = d[0])));
            P("index-negative", Ts(l => Change(l, t => t.Name == "units.1.indices", d => d[0] = -1)));
            P("index-huge", Ts(l => Change(l, t => t.Name == "units.1.indices", d => d[0] = 1e9f)));
            P("index-fraction", Ts(l => Change(l, t => t.Name == "units.0.indices", d => d[0] = 0.25f)));
            P("index-nan", Ts(l => Change(l, t => t.Name == "units.0.indices", d => d[0] = float.NaN)));
            P("edited-nan", Ts(l => Change(l, t => t.Name == "units.0.edited", d => d[0] = float.NaN)));
            P("edited-inf", Ts(l => Change(l, t => t.Name == "units.1.edited", d => d[0] = float.PositiveInfinity)));
            P("original-nan", Ts(l => Change(l, t => t.Name == "units.2.original", d => d[0] = float.NaN)));
            P("delta-inf", Ts(l => Change(l, t => t.Name == "units.3.delta", d => d[0] = float.NegativeInfinity)));
            P("edited-changed", Ts(l => Change(l, t => t.Name == "units.0.edited", d => d[0] += 1)));
            P("unit-missing", Ts(l => l.Where(t => !t.Name.StartsWith("units.1.", StringComparison.Ordinal)).ToList()));
            P("tensor-missing", Ts(l => l.Where(t => t.Name != "units.0.delta").ToList()));
            P("foreign-tensor", Ts(l => [.. l, new NamedTensor("evil", [1], [1])]));
            P("empty", Ts(l => l.Select(t => t.Name.EndsWith("indices") ? new NamedTensor(t.Name, [0], []) : new NamedTensor(t.Name, [0, t.Shape[1]], [])).ToList()));
            P("short-values", Ts(l => l.Select(t => t.Name == "units.0.original" ? new NamedTensor(t.Name, [t.Shape[0] - 1, t.Shape[1]], t.Data[..^t.Shape[1]]) : t).ToList()));
            P("model-as-patch", _model);
            // Revert of a patch never applied.
            Add(fam, "revert-not-applied", ["patch", "revert", _model, _patch, "--out", Out()], [_model, _patch]);
        }

        private void Manifests()
        {
            const string fam = "manifest";
            // A valid benchmark built from the paper layout, then broken.
            string bench = F("bench");
            Directory.CreateDirectory(Path.Combine(bench, "failures", "1_b"));
            Directory.CreateDirectory(Path.Combine(bench, "locality"));
            Reliability.HostileSupport.Png(Path.Combine(bench, "failures", "1_b", "f.png"));
            Reliability.HostileSupport.Png(Path.Combine(bench, "locality", "l.png"), seed: 2);
            var manifest = Engine.Evaluation.BenchmarkManifest.FromPaperLayout(Path.Combine(bench, "failures"), Path.Combine(bench, "locality")).Write(bench);
            string text = File.ReadAllText(Path.Combine(bench, "manifest.json"));
            string groupImage = "failures/1_b/f.png";
            void M(string name, string json)
            {
                string dir = F($"manifest-{_n++:D4}");
                Directory.CreateDirectory(dir);
                foreach (string sub in new[] { "failures", "locality" })
                    CopyTree(Path.Combine(bench, sub), Path.Combine(dir, sub));
                File.WriteAllText(Path.Combine(dir, "manifest.json"), json);
                Add(fam, name, ["benchmark", "info", Path.Combine(dir, "manifest.json")], [Path.Combine(dir, "manifest.json")]);
            }
            M("image-dotdot", text.Replace(groupImage, "../valid.png"));
            M("image-absolute", text.Replace(groupImage, "/etc/passwd"));
            M("image-backslash", text.Replace(groupImage, "failures\\\\1_b\\\\f.png"));
            M("image-missing", text.Replace(groupImage, "failures/1_b/nope.png"));
            M("image-folder", text.Replace(groupImage, "failures/1_b"));
            M("image-dot-segment", text.Replace(groupImage, "failures/./1_b/f.png"));
            M("deep-json", new string('[', 100_000) + new string(']', 100_000));
            M("invalid-json", text[..(text.Length / 2)]);
            M("not-object", "[]");
            M("unknown-field", text.Replace("{", "{\"evil\": 1, ", StringComparison.Ordinal));
            M("label-negative", text.Replace("\"label\": 1", "\"label\": -1").Replace("\"label\":1", "\"label\":-1"));
            M("duplicate-key", text.Replace("{", "{\"name\": \"x\", ", StringComparison.Ordinal));
            M("empty-groups", text.Replace(groupImage, "").Replace("[\"\"]", "[]"));
            M("huge-string", text.Replace(groupImage, new string('a', 5_000_000)));
            // Directory-symlink escapes: a group folder that is a link to /etc, an image through it.
            {
                string dir = F($"manifest-{_n++:D4}");
                Directory.CreateDirectory(dir);
                CopyTree(Path.Combine(bench, "locality"), Path.Combine(dir, "locality"));
                Directory.CreateDirectory(Path.Combine(dir, "failures"));
                Directory.CreateSymbolicLink(Path.Combine(dir, "failures", "1_b"), "/etc");
                File.WriteAllText(Path.Combine(dir, "manifest.json"), text.Replace(groupImage, "failures/1_b/passwd"));
                Add(fam, "dir-symlink-escape-etc", ["benchmark", "info", Path.Combine(dir, "manifest.json")], [Path.Combine(dir, "manifest.json")]);
                Add(fam, "dir-symlink-escape-eval", ["eval", "--model", _model, "--benchmark", Path.Combine(dir, "manifest.json"), "--methods", "ft-l2", "--out", F($"out-{_n++:D4}")], [Path.Combine(dir, "manifest.json"), _model], F($"out-{_n - 1:D4}"));
            }
            {
                string dir = F($"manifest-{_n++:D4}");
                Directory.CreateDirectory(dir);
                CopyTree(Path.Combine(bench, "locality"), Path.Combine(dir, "locality"));
                Directory.CreateDirectory(Path.Combine(dir, "failures", "1_b"));
                File.CreateSymbolicLink(Path.Combine(dir, "failures", "1_b", "f.png"), _png);   // a file link leaving the folder
                File.WriteAllText(Path.Combine(dir, "manifest.json"), text);
                Add(fam, "file-symlink-escape", ["benchmark", "info", Path.Combine(dir, "manifest.json")], [Path.Combine(dir, "manifest.json")]);
                Directory.CreateSymbolicLink(Path.Combine(dir, "loop"), Path.Combine(dir, "loop2"));
                Directory.CreateSymbolicLink(Path.Combine(dir, "loop2"), Path.Combine(dir, "loop"));
                File.WriteAllText(Path.Combine(dir, "manifest2.json"), text.Replace(groupImage, "loop/f.png"));
                Add(fam, "symlink-loop", ["benchmark", "info", Path.Combine(dir, "manifest2.json")], [Path.Combine(dir, "manifest2.json")]);
            }
            // The paper's layout with the same escapes.
            {
                string dir = F($"layout-{_n++:D4}");
                Directory.CreateDirectory(Path.Combine(dir, "failures"));
                CopyTree(Path.Combine(bench, "locality"), Path.Combine(dir, "locality"));
                string etc = Path.Combine(dir, "etc-target");
                Directory.CreateDirectory(etc);
                Directory.CreateSymbolicLink(Path.Combine(dir, "failures", "1_etc"), "/etc/ssl/certs");
                string o = F($"out-{_n++:D4}");
                Add(fam, "layout-dir-symlink-escape", ["eval", "--model", _model, "--failures", Path.Combine(dir, "failures"), "--locality", Path.Combine(dir, "locality"), "--methods", "ft-l2", "--out", o], [_model], o);
                string dir2 = F($"layout-{_n++:D4}");
                Directory.CreateDirectory(Path.Combine(dir2, "failures", "1_b"));
                CopyTree(Path.Combine(bench, "locality"), Path.Combine(dir2, "locality"));
                File.CreateSymbolicLink(Path.Combine(dir2, "failures", "1_b", "x.png"), _png);
                string o2 = F($"out-{_n++:D4}");
                Add(fam, "layout-file-symlink-escape", ["eval", "--model", _model, "--failures", Path.Combine(dir2, "failures"), "--locality", Path.Combine(dir2, "locality"), "--methods", "ft-l2", "--out", o2], [_model], o2);
                string dir3 = F($"layout-{_n++:D4}");
                Directory.CreateDirectory(Path.Combine(dir3, "failures", "x_bad"));
                CopyTree(Path.Combine(bench, "locality"), Path.Combine(dir3, "locality"));
                string o3 = F($"out-{_n++:D4}");
                Add(fam, "layout-bad-folder-name", ["eval", "--model", _model, "--failures", Path.Combine(dir3, "failures"), "--locality", Path.Combine(dir3, "locality"), "--methods", "ft-l2", "--out", o3], [_model], o3);
                string dir4 = F($"layout-{_n++:D4}");
                Directory.CreateDirectory(Path.Combine(dir4, "failures", "1_b"));
                Directory.CreateDirectory(Path.Combine(dir4, "locality"));
                File.WriteAllBytes(Path.Combine(dir4, "failures", "1_b", "f.png"), File.ReadAllBytes(_png)[..40]);
                File.Copy(_png, Path.Combine(dir4, "locality", "l.png"));
                string o4 = F($"out-{_n++:D4}");
                Add(fam, "layout-truncated-image", ["eval", "--model", _model, "--failures", Path.Combine(dir4, "failures"), "--locality", Path.Combine(dir4, "locality"), "--methods", "ft-l2", "--out", o4], [_model, Path.Combine(dir4, "failures", "1_b", "f.png")], o4);
            }
            var rng = new Random(1407);
            for (int i = 0; i < 10; i++) M($"truncated-{i}", text[..rng.Next(0, text.Length - 1)]);
        }

        private static void CopyTree(string from, string to)
        {
            Directory.CreateDirectory(to);
            foreach (string f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
            foreach (string d in Directory.GetDirectories(from)) CopyTree(d, Path.Combine(to, Path.GetFileName(d)));
        }

        private void Resumes()
        {
            const string fam = "resume";
            var valid = File.ReadAllBytes(_checkpoint);
            var rng = new Random(1408);
            void R(string name, string ck) => Add(fam, name, ["meta-train", _model, "--data", _data, "--resume", ck, "--iterations", "2", "--no-progress", "--threads", "1", "--out", Out()], [_model, ck]);
            for (int i = 0; i < 8; i++) R($"truncated-{i}", Write(fam, ".safetensors", Truncate(valid, rng)));
            var names = SafeTensors.Read(_checkpoint).Tensors.Select(t => t.Name).ToList();
            string state = names.First(n => n.StartsWith("rmsprop/", StringComparison.Ordinal));
            R("state-nan", Rewrite(_checkpoint, fam, tensors: l => Change(l, t => t.Name == state, d => d[0] = float.NaN)));
            R("state-inf", Rewrite(_checkpoint, fam, tensors: l => Change(l, t => t.Name == state, d => d[^1] = float.PositiveInfinity)));
            R("state-negative", Rewrite(_checkpoint, fam, tensors: l => Change(l, t => t.Name == state, d => d[0] = -1f)));
            R("state-short", Rewrite(_checkpoint, fam, tensors: l => l.Select(t => t.Name == state ? new NamedTensor(t.Name, [t.Data.Length - 1], t.Data[..^1]) : t).ToList()));
            R("state-missing", Rewrite(_checkpoint, fam, tensors: l => l.Where(t => t.Name != state).ToList()));
            R("weight-nan", Rewrite(_checkpoint, fam, tensors: l => Change(l, t => t.Name.StartsWith("hypernet/", StringComparison.Ordinal), d => d[0] = float.NaN)));
            var md = SafeTensors.Read(_checkpoint).Metadata;
            string optionsKey = md.Keys.First(k => k.EndsWith("options", StringComparison.Ordinal));
            string rngKey = md.Keys.First(k => k.EndsWith(".rng", StringComparison.Ordinal));
            R("option-hypernet-depth-100000", Rewrite(_checkpoint, fam, m => m[optionsKey] = Json(m[optionsKey], o => o["hypernet_depth"] = 100000)));
            R("option-batch-1e9", Rewrite(_checkpoint, fam, m => m[optionsKey] = Json(m[optionsKey], o => o["batch"] = 1_000_000_000)));
            R("options-not-json", Rewrite(_checkpoint, fam, m => m[optionsKey] = "{"));
            R("options-deep", Rewrite(_checkpoint, fam, m => m[optionsKey] = new string('[', 5000) + new string(']', 5000)));
            R("rng-short", Rewrite(_checkpoint, fam, m => m[rngKey] = "1,2"));
            R("rng-not-hex", Rewrite(_checkpoint, fam, m => m[rngKey] = "x,y,z,w"));
            foreach (string key in md.Keys.Where(k => k.EndsWith("iteration", StringComparison.Ordinal) || k.EndsWith("cursor", StringComparison.Ordinal) || k.EndsWith("epoch", StringComparison.Ordinal)))
                R($"metadata-{key}-negative", Rewrite(_checkpoint, fam, m => m[key] = "-5"));
            R("kind-other", Rewrite(_checkpoint, fam, m => m[md.Keys.First(k => k.EndsWith("kind", StringComparison.Ordinal))] = "something-else"));
            R("model-as-checkpoint", _model);
        }

        private void Idx()
        {
            const string fam = "idx";
            var raw = new byte[16 + 3 * 8 * 8];
            BinaryPrimitives.WriteInt32BigEndian(raw, 0x0803);
            BinaryPrimitives.WriteInt32BigEndian(raw.AsSpan(4), 3);
            BinaryPrimitives.WriteInt32BigEndian(raw.AsSpan(8), 8);
            BinaryPrimitives.WriteInt32BigEndian(raw.AsSpan(12), 8);
            var gz = new MemoryStream();
            using (var z = new GZipStream(gz, CompressionLevel.Optimal, leaveOpen: true)) z.Write(raw);
            var gzBytes = gz.ToArray();
            var rng = new Random(1409);
            void I(string name, byte[] b, string ext = ".idx") { string p = Write(fam, ext, b); Add(fam, name, ["meta-train", _model, "--idx", p, "--iterations", "1", "--no-progress", "--out", Out()], [_model, p]); }
            for (int i = 0; i < 6; i++) I($"gz-garbage-trailer-{i}", AppendGarbage(gzBytes, rng), ".gz");
            for (int i = 0; i < 6; i++) I($"gz-truncated-{i}", gzBytes[..rng.Next(1, gzBytes.Length - 1)], ".gz");
            for (int i = 0; i < 4; i++) I($"raw-truncated-{i}", raw[..rng.Next(1, raw.Length - 1)]);
            I("raw-trailing", [.. raw, 1, 2, 3]);
            var labels = (byte[])raw.Clone();
            BinaryPrimitives.WriteInt32BigEndian(labels, 0x0801);
            I("labels-not-images", labels);
            var huge = (byte[])raw.Clone();
            BinaryPrimitives.WriteInt32BigEndian(huge.AsSpan(4), int.MaxValue);
            I("dims-huge", huge);
            var neg = (byte[])raw.Clone();
            BinaryPrimitives.WriteInt32BigEndian(neg.AsSpan(8), -8);
            I("dims-negative", neg);
        }

        private void Fifos()
        {
            const string fam = "fifo";
            string Fifo(string name)
            {
                string p = F(name);
                if (MkFifo(p, Convert.ToUInt32("600", 8)) != 0) throw new IOException($"mkfifo {p} failed");
                return p;
            }
            string m = Fifo("fifo-model.safetensors");
            Add(fam, "model", ["info", m], []);
            string hub = F("fifo-hub");
            Directory.CreateDirectory(hub);
            File.Copy(_model, Path.Combine(hub, "model.safetensors"));
            MkFifo(Path.Combine(hub, "config.json"), Convert.ToUInt32("600", 8));
            Add(fam, "config.json", ["info", hub], [Path.Combine(hub, "model.safetensors")]);
            string mdir = F("fifo-manifest");
            Directory.CreateDirectory(mdir);
            MkFifo(Path.Combine(mdir, "manifest.json"), Convert.ToUInt32("600", 8));
            Add(fam, "manifest", ["benchmark", "info", Path.Combine(mdir, "manifest.json")], []);
            Add(fam, "patch", ["patch", "apply", _model, Fifo("fifo-patch.safetensors"), "--out", Out()], [_model]);
            Add(fam, "patch-info", ["patch", "info", F("fifo-patch.safetensors")], []);
            Add(fam, "image", ["predict", _model, Fifo("fifo-image.png")], [_model]);
            Add(fam, "hypernet", ["edit", _model, "--hypernet", Fifo("fifo-hypernet.safetensors"), "--image", _png, "--label", "1", "--out", Out()], [_model, _png]);
            Add(fam, "resume", ["meta-train", _model, "--data", _data, "--resume", Fifo("fifo-ck.safetensors"), "--no-progress", "--out", Out()], [_model]);
            Add(fam, "idx", ["meta-train", _model, "--idx", Fifo("fifo-images.idx"), "--no-progress", "--out", Out()], [_model]);
            Add(fam, "npz", ["info", Fifo("fifo-model.npz")], []);
            Add(fam, "dev-zero", ["info", "/dev/zero"], []);
            Add(fam, "dev-null-image", ["predict", _model, "/dev/null"], [_model]);
        }
    }
}

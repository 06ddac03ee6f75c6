using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.IO;
using WhereToEdit.Tests.IO;
using Xunit;
using static WhereToEdit.Tests.Reliability.HostileSupport;

namespace WhereToEdit.Tests.Reliability;

/// <summary>Issue 14, findings 2, 3, 5, 6, 7 and 9, one by one (the corpus in tests/fuzz covers them in bulk).</summary>
public sealed class HostileInputTests
{
    [Fact]
    public void Npy_header_nested_500000_deep_is_refused_without_recursion()
    {
        string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + new string('(', 500_000) + new string(')', 500_000) + "}";
        var e = Assert.Throws<CheckpointFormatException>(() => Npy.ParseDict(dict, "x.npy", "x"));
        Assert.Contains("nesting deeper than", e.Message);
    }

    [Fact]
    public void Safetensors_with_trailing_bytes_or_a_gap_is_refused()
    {
        using var dir = new TempDir();
        var valid = File.ReadAllBytes(Model(dir.File("m.safetensors")));
        File.WriteAllBytes(dir.File("t.safetensors"), [.. valid, 0, 0, 0, 0]);
        Assert.Contains("bytes after the last tensor", Assert.Throws<CheckpointFormatException>(() => SafeTensors.Read(dir.File("t.safetensors"))).Message);
        var header = Encoding.UTF8.GetBytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}");
        var gap = new byte[8 + header.Length + 8];
        BinaryPrimitives.WriteUInt64LittleEndian(gap, (ulong)header.Length);
        header.CopyTo(gap, 8);
        File.WriteAllBytes(dir.File("g.safetensors"), gap);
        Assert.Contains("gap of 4 bytes", Assert.Throws<CheckpointFormatException>(() => SafeTensors.Read(dir.File("g.safetensors"))).Message);
    }

    [Fact]
    public void The_budget_refuses_a_small_model_whose_attention_needs_gigabytes_naming_file_and_size()
    {
        using var dir = new TempDir();
        string big = Model(dir.File("tokens.safetensors"), config: TinyConfig with { ImageSize = 796, Depth = 2 },
            preprocessing: TinyPreprocessing with { ResizeSize = 796, CropSize = 796 });
        Assert.True(new FileInfo(big).Length < 4 << 20);
        var r = Run("predict", big, Png(dir.File("x.png")), "--max-memory", "2G");
        AssertRefused(r, "39,602 tokens");
        Assert.Contains("tokens.safetensors", r.Err);
        Assert.Contains("--max-memory", r.Err);
        Assert.Equal(1, Run("info", big, "--max-memory", "banana").Code);
    }

    [Fact]
    public void Preprocessing_sizes_and_timm_crop_pct_are_bounded()
    {
        var p = TinyPreprocessing with { ResizeSize = 2_000_000_000 };
        Assert.Contains(p.Problems(), s => s.Contains("above"));
        var e = Assert.Throws<CheckpointFormatException>(() => Preprocessing.FromTimmPretrainedCfg(224, "bicubic", 1e-9, "squash", [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f], "config.json"));
        Assert.Contains("crop_pct", e.Message);
    }

    [Fact]
    public void Hypernetwork_config_sizes_are_refused_before_allocating()
    {
        var c = new WhereToEdit.Engine.Models.HypernetConfig { EmbedDim = 16, Depth = 3, NumHeads = 2, MlpHidden = 30_000_000, Units = 6, UnitSize = 32 };
        ResourceBudget.LimitBytes = 1L << 30;
        using var be = new WhereToEdit.Engine.Backends.Cpu.CpuBackend();
        Assert.Throws<ResourceLimitException>(() => new WhereToEdit.Engine.Models.Hypernetwork(be, c));
        Assert.Throws<ArgumentException>(() => (c with { MlpHidden = 16, Depth = 100_000 }).Validate());
        Assert.Throws<ArgumentException>(() => new WhereToEdit.Engine.MetaTraining.MetaTrainOptions { HypernetDepth = 100_000 }.Validate());
    }

    private static byte[] Chunk(string type, byte[] body)
    {
        var b = new byte[12 + body.Length];
        BinaryPrimitives.WriteUInt32BigEndian(b, (uint)body.Length);
        Encoding.ASCII.GetBytes(type).CopyTo(b, 4);
        body.CopyTo(b, 8);
        uint c = 0xFFFFFFFF;
        foreach (byte x in b.AsSpan(4, 4 + body.Length)) { c ^= x; for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1; }
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(8 + body.Length), c ^ 0xFFFFFFFF);
        return b;
    }

    [Fact]
    public void Png_text_bombs_and_truncated_image_data_with_a_valid_end_chunk_are_refused()
    {
        using var dir = new TempDir();
        var png = File.ReadAllBytes(Png(dir.File("x.png"), size: 64));
        var loader = new ImageLoader();
        var ms = new MemoryStream();
        using (var z = new ZLibStream(ms, CompressionLevel.SmallestSize, leaveOpen: true)) z.Write(new byte[64 << 20]);
        byte[] bomb = [.. png[..33], .. Chunk("zTXt", [.. "Comment"u8, 0, 0, .. ms.ToArray()]), .. png[33..]];
        Assert.Contains("decompression bomb", Assert.Throws<ImageLoadException>(() => loader.Decode(bomb, "bomb.png")).Message);
        // Keep 40 % of the IDAT data, then a valid IEND (what PIL calls "image file is truncated").
        int idatLength = (int)BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(33));
        var idatBody = png.AsSpan(41, idatLength).ToArray();
        byte[] cut = [.. png[..33], .. Chunk("IDAT", idatBody[..(idatBody.Length * 2 / 5)]), .. png[^12..]];
        Assert.Contains("truncated", Assert.Throws<ImageLoadException>(() => loader.Decode(cut, "cut.png")).Message);
        loader.Decode(png, "ok.png");   // the valid file still decodes
    }

    [Fact]
    public async Task Fifos_are_refused_before_they_are_opened()
    {
        Skip_if_not_linux();
        using var dir = new TempDir();
        string fifo = dir.File("m.safetensors");
        using (var mk = System.Diagnostics.Process.Start("mkfifo", fifo)!) mk.WaitForExit();
        Assert.True(File.Exists(fifo));
        var result = await Task.Run(() => Run("info", fifo)).WaitAsync(TimeSpan.FromSeconds(30));   // a TimeoutException means it blocked
        AssertRefused(result, "not a regular file");
    }

    private static void Skip_if_not_linux() => Assert.True(OperatingSystem.IsLinux(), "Linux only");

    [Fact]
    public void Manifest_images_through_a_directory_symlink_out_of_the_folder_are_refused_and_never_echoed()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("failures/1_b"));
        Directory.CreateDirectory(dir.File("locality"));
        Png(dir.File("failures/1_b/f.png"));
        Png(dir.File("locality/l.png"));
        BenchmarkManifest.FromPaperLayout(dir.File("failures"), dir.File("locality")).Write(dir.Path);
        string text = File.ReadAllText(dir.File("manifest.json"));
        Directory.CreateSymbolicLink(dir.File("failures/etc"), "/etc");
        File.WriteAllText(dir.File("manifest.json"), text.Replace("failures/1_b/f.png", "failures/etc/passwd"));
        var r = Run("benchmark", "info", dir.File("manifest.json"));
        AssertRefused(r, "outside the manifest's folder");
        Assert.DoesNotContain("root:x", r.Err);
        var model = Model(dir.File("m.safetensors"));
        r = Run("eval", "--model", model, "--benchmark", dir.File("manifest.json"), "--methods", "ft-l2", "--out", dir.File("out"));
        AssertRefused(r, "outside the manifest's folder");
        Assert.DoesNotContain("root:x", r.Err);
        Assert.False(Directory.Exists(dir.File("out")));
    }

    [Fact]
    public void Predict_walks_a_folder_with_a_symlink_cycle_once()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("imgs/sub"));
        Png(dir.File("imgs/a.png"));
        Png(dir.File("imgs/sub/b.png"), seed: 2);
        Directory.CreateSymbolicLink(dir.File("imgs/sub/loop"), dir.File("imgs"));
        var files = FolderWalk.Files(dir.File("imgs"), f => f.EndsWith(".png"));
        Assert.Equal(2, files.Count);
        var r = Run("predict", Model(dir.File("m.safetensors")), dir.File("imgs"), "--json");
        Assert.True(r.Code == 0, r.Err);
        Assert.Equal(2, r.Out.Trim().Split('\n').Length);
    }

    [Fact]
    public void Optimizer_state_must_be_exact_finite_and_non_negative_for_second_moments()
    {
        int[] shape = [2, 3];
        var ok = new NamedTensor("s", shape, new float[6]);
        Assert.Same(ok.Data, OptimizerState.Validated("ck", "s", ok, shape, nonNegative: true));
        Assert.Contains("shape", Assert.Throws<CheckpointFormatException>(() => OptimizerState.Validated("ck", "adam_m/w", new NamedTensor("s", [5], new float[5]), shape, false)).Message);
        Assert.Contains("NaN", Assert.Throws<CheckpointFormatException>(() => OptimizerState.Validated("ck", "adam_m/w", new NamedTensor("s", shape, [0, 0, float.NaN, 0, 0, 0]), shape, false)).Message);
        var e = Assert.Throws<CheckpointFormatException>(() => OptimizerState.Validated("ck", "rmsprop/w", new NamedTensor("s", shape, [0, 0, 0, -1, 0, 0]), shape, true));
        Assert.Contains("rmsprop/w", e.Message);
        Assert.Contains("≥ 0", e.Message);
        Assert.Contains("missing", Assert.Throws<CheckpointFormatException>(() => OptimizerState.Validated("ck", "adam_v/w", null, shape, true)).Message);
    }

    [Fact]
    public void Gzipped_idx_with_a_garbage_trailer_is_refused()
    {
        using var dir = new TempDir();
        var raw = new byte[16 + 2 * 4 * 4];
        BinaryPrimitives.WriteInt32BigEndian(raw, 0x0803);
        BinaryPrimitives.WriteInt32BigEndian(raw.AsSpan(4), 2);
        BinaryPrimitives.WriteInt32BigEndian(raw.AsSpan(8), 4);
        BinaryPrimitives.WriteInt32BigEndian(raw.AsSpan(12), 4);
        var ms = new MemoryStream();
        using (var z = new GZipStream(ms, CompressionLevel.Optimal, leaveOpen: true)) z.Write(raw);
        File.WriteAllBytes(dir.File("ok.gz"), ms.ToArray());
        Assert.Equal(2, IdxReader.ReadImages(dir.File("ok.gz")).Count);
        File.WriteAllBytes(dir.File("bad.gz"), [.. ms.ToArray(), .. "garbage!"u8]);
        Assert.Contains("gzip trailer", Assert.Throws<IdxFormatException>(() => IdxReader.ReadImages(dir.File("bad.gz"))).Message);
    }

    [Fact]
    public void Info_warns_about_nan_weights()
    {
        using var dir = new TempDir();
        string model = Model(dir.File("m.safetensors"));
        var file = SafeTensors.Read(model);
        var tensors = file.Tensors.Select(t => new NamedTensor(t.Name, t.Shape, t.Name == "head.bias" ? [.. t.Data.Select((_, i) => i == 0 ? float.NaN : 0f)] : t.Data)).ToList();
        SafeTensors.Write(dir.File("nan.safetensors"), tensors, file.Metadata);
        var r = Run("info", dir.File("nan.safetensors"));
        Assert.Equal(0, r.Code);
        Assert.Contains("WARNING", r.Out);
        Assert.Contains("head.bias (1)", r.Out);
        Assert.DoesNotContain("WARNING", Run("info", model).Out);
    }
}

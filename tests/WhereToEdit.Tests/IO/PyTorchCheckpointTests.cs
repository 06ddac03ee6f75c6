using System.Text;
using WhereToEdit.Cli;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.IO.PyTorch;
using WhereToEdit.Engine.Models;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.IO;

/// <summary>
/// torch.save checkpoints (tests/reference/make_pytorch_fixtures.py, PyTorch 1.13): timm and Hugging Face names, F32
/// and F16, a wrapped DataParallel state dict with a shared storage and strided views; predictions against PyTorch's;
/// the malicious / broken corpus; our writer read back by our reader.
/// </summary>
public sealed class PyTorchCheckpointTests(ITestOutputHelper output)
{
    internal static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", "pytorch", name);

    private static readonly Lazy<ReferenceFixture> Expected = new(() => ReferenceFixture.Load("pytorch/expected"));

    internal static double[] Probabilities(VitModel model, float[] images, int n)
    {
        using var ws = model.CreateWorkspace(n);
        var c = model.Config;
        using var x = model.Backend.FromHost("x", images, n, c.InChans, c.ImageSize, c.ImageSize);
        model.Forward(ws, x, n);
        var logits = ws.Logits.ToArray();
        int k = c.NumClasses;
        var p = new double[n * k];
        for (int i = 0; i < n; i++)
        {
            double max = Enumerable.Range(0, k).Max(j => (double)logits[i * k + j]), sum = 0;
            for (int j = 0; j < k; j++) sum += p[i * k + j] = Math.Exp(logits[i * k + j] - max);
            for (int j = 0; j < k; j++) p[i * k + j] /= sum;
        }
        return p;
    }

    private static int[] Top5(ReadOnlySpan<double> p) => p.ToArray().Select((v, i) => (v, i)).OrderByDescending(t => t.v).Take(5).Select(t => t.i).ToArray();

    [Theory]
    [InlineData("timm_fp32.pth", "probs_fp32")]
    [InlineData("timm_fp32_legacy.pth", "probs_fp32")]
    [InlineData("timm_fp16.pth", "probs_fp16")]
    [InlineData("hf", "probs_fp32")]
    [InlineData("hf/pytorch_model.bin", "probs_fp32")]
    public void Predictions_match_pytorch(string file, string expectedName)
    {
        var fx = Expected.Value;
        var loaded = ModelFolder.Load(Fixture(file), new ModelLoadOptions { NumHeads = file.StartsWith("hf", StringComparison.Ordinal) ? null : 2 });
        Assert.Equal(CheckpointFormat.PyTorch, loaded.Paths.Format);
        Assert.Equal(file.StartsWith("hf", StringComparison.Ordinal) ? NamingConvention.HuggingFace : NamingConvention.Timm, loaded.SourceConvention);
        if (file.StartsWith("hf", StringComparison.Ordinal))
        {
            Assert.NotNull(loaded.Paths.ConfigPath);   // pytorch_model.bin brings its folder's config.json
            Assert.Contains(loaded.Notes, n => n.Contains("position_ids", StringComparison.Ordinal));
        }
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var vit = VitCheckpoint.Load(be, loaded);
        int n = fx.ShapeOf("input")[0], k = loaded.Architecture.NumClasses;
        var p = Probabilities(vit, fx["input"], n);
        var expected = fx[expectedName];
        double worst = 0;
        for (int i = 0; i < n; i++)
        {
            var mine = p.AsSpan(i * k, k);
            var theirs = expected.AsSpan(i * k, k).ToArray().Select(v => (double)v).ToArray();
            Assert.Equal(Top5(theirs), Top5(mine));
            for (int j = 0; j < k; j++) worst = Math.Max(worst, Math.Abs(mine[j] - theirs[j]));
        }
        output.WriteLine($"{file}: max |Δp| = {worst:G3}");
        Assert.True(worst < 1e-5, $"{file}: max |Δp| = {worst}");
    }

    [Fact]
    public void Wrapped_dataparallel_dict_shared_storage_and_strided_views_are_read_exactly()
    {
        var timm = PyTorchCheckpoint.Read(Fixture("timm_fp32.pth"));
        var hf = PyTorchCheckpoint.Read(Fixture("hf/pytorch_model.bin"));
        Assert.Equal("model", timm.Metadata[PyTorchCheckpoint.WrapperKey]);          // {"model": ..., "epoch": 3}
        Assert.DoesNotContain(timm.Names, n => n.StartsWith("module.", StringComparison.Ordinal));
        Assert.Equal("cls_token", timm.Tensors[0].Name);                              // state_dict order kept
        // blocks.N.mlp.fc1.weight are transposed views (stride (1, rows)); HF's copies are contiguous.
        for (int i = 0; i < 3; i++)
        {
            var strided = timm[$"blocks.{i}.mlp.fc1.weight"];
            Assert.Equal([32, 16], strided.Shape);
            Assert.Equal(hf[$"vit.encoder.layer.{i}.intermediate.dense.weight"].Data, strided.Data);
        }
        // norm1 weight and bias of block 0 share one storage; the bias starts at offset 16.
        Assert.Equal(hf["vit.encoder.layer.0.layernorm_before.weight"].Data, timm["blocks.0.norm1.weight"].Data);
        Assert.Equal(hf["vit.encoder.layer.0.layernorm_before.bias"].Data, timm["blocks.0.norm1.bias"].Data);
        Assert.NotEqual(timm["blocks.0.norm1.weight"].Data, timm["blocks.0.norm1.bias"].Data);
        // qkv: HF's query/key/value are the row blocks of timm's fused matrix.
        var qkv = timm["blocks.2.attn.qkv.weight"].Data;
        Assert.Equal(hf["vit.encoder.layer.2.attention.attention.value.weight"].Data, qkv.AsSpan(2 * 16 * 16, 16 * 16).ToArray());
        // The legacy (pre-1.6) file of the same state dict reads to the same tensors, in the same order.
        var legacy = PyTorchCheckpoint.Read(Fixture("timm_fp32_legacy.pth"));
        Assert.Equal(timm.Names, legacy.Names);
        Assert.All(timm.Tensors, t => Assert.Equal(t.Data, legacy[t.Name].Data));
        var half = PyTorchCheckpoint.Read(Fixture("timm_fp16.pth"));
        Assert.All(half.Tensors, t => Assert.Equal(TensorDType.F16, t.SourceDType));
        Assert.Equal(timm.Names.Order(), half.Names.Order());
    }

    public static TheoryData<string, string> BadFiles => new()
    {
        { "reduce_os_system.pth", "refused global 'posix.system'" },
        { "stack_global_os_system.pth", "refused global 'posix.system'" },
        { "builtins_eval.pth", "refused global '__builtin__.eval'" },
        { "unknown_global.pth", "refused global 'torch.nn.modules.linear.Linear'" },
        { "truncated_zip.pth", "truncated" },
        { "empty.pth", "empty" },
        { "storage_out_of_bounds.pth", "storage out of bounds" },
        { "storage_member_short.pth", "should hold 6 × 4 bytes" },
        { "storage_missing.pth", "has no member archive/data/0" },
        { "storage_numel_huge.pth", "more than the file can hold" },
        { "wrong_byteorder.pth", "byte order 'big'" },
        { "not_a_dict.pth", "not a dict of tensors" },
        { "no_tensors.pth", "no state dict found" },
        { "legacy_truncated.pth", "truncated legacy checkpoint" },
        { "legacy_big_endian.pth", "byte order 'big'" },
    };

    [Theory]
    [MemberData(nameof(BadFiles))]
    public void Malicious_or_broken_checkpoints_run_nothing_and_name_the_file(string file, string expected)
    {
        string path = Fixture("bad/" + file);
        var e = Assert.Throws<CheckpointFormatException>(() => ModelFolder.Load(path));
        output.WriteLine(e.Message);
        Assert.StartsWith(path + ": ", e.Message, StringComparison.Ordinal);
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        if (expected.StartsWith("refused global", StringComparison.Ordinal)) Assert.Contains("nothing was executed", e.Message, StringComparison.Ordinal);
        Assert.False(File.Exists("/tmp/wte_pwned"));
        // The same refusal through the CLI: one line, exit 1, and `wte convert` writes no file.
        using var dir = new TempDir();
        var (code, stdout, stderr) = RunCli("convert", path, "--out", dir.File("out.safetensors"));
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.Equal($"wte: {e.Message}", stderr.TrimEnd('\n'));
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }

    [Theory]
    [InlineData("timm_fp32.pth")]
    [InlineData("timm_fp32_legacy.pth")]
    public void Every_truncation_and_corrupted_byte_gives_a_checkpoint_error_or_a_valid_file(string file)
    {
        // Hostile-input sweep over a real torch.save file: nothing may escape as another exception type.
        byte[] good = File.ReadAllBytes(Fixture(file));
        using var dir = new TempDir();
        string path = dir.File("x.pth");
        int refused = 0, loaded = 0;
        void Try(byte[] bytes)
        {
            File.WriteAllBytes(path, bytes);
            try
            {
                var f = PyTorchCheckpoint.Read(path);
                Assert.True(f.Count > 0);
                loaded++;
            }
            catch (CheckpointFormatException e)
            {
                Assert.StartsWith(path + ": ", e.Message, StringComparison.Ordinal);
                refused++;
            }
        }
        for (int n = 0; n < good.Length; n += 97) Try(good.AsSpan(0, n).ToArray());
        var rng = new Random(13);
        for (int k = 0; k < 400; k++)
        {
            var bytes = (byte[])good.Clone();
            int at = rng.Next(bytes.Length);
            bytes[at] = (byte)rng.Next(256);
            Try(bytes);
        }
        output.WriteLine($"{refused} refused, {loaded} loaded");
        Assert.True(refused > good.Length / 97);
    }

    [Fact]
    public void Pickle_guard_refuses_what_torch_save_never_writes()
    {
        static void Refused(byte[] pickle, string expected)
        {
            var e = Assert.Throws<CheckpointFormatException>(() => PickleGuard.Check(pickle, "f.pth", "a/data.pkl"));
            Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        }
        byte[] P(string s) => Encoding.Latin1.GetBytes(s);
        PickleGuard.Check(P("\u0080\u0002ccollections\nOrderedDict\n)R."), "f.pth", "a/data.pkl");                  // allowed
        Refused(P("\u0080\u0002cbuiltins\nexec\n)R."), "refused global 'builtins.exec'");
        Refused(P("\u0080\u0002(ios\nsystem\nS'id'\n."), "INST");                                                   // INST instantiates inline
        Refused(P("\u0080\u0004K\u0001K\u0002\u0093."), "STACK_GLOBAL");                                                // module/name not strings
        Refused(P("\u0080\u0004\u008c\u0002os\u0094\u008c\u0006system\u0094\u0093."), "refused global 'os.system'");            // memoized strings
        Refused(P("\u0080\u0004\u008c\u0002os\u0094h\u0000\u008c\u0006system\u0093."), "refused global 'os.system'");           // via BINGET
        Refused(P("\u0080\u0002X\u00ff\u00ff\u00ff\u007fab."), "truncated pickle");                                        // length beyond the data
        Refused(P("\u0080\u0002)"), "no STOP");
        Refused(P("\u0080\u0009."), "protocol 9");
        Refused(P("\u0080\u0002\u0082\u0001."), "extension-registry");
        Refused(P("\u0080\u0002h\u0005."), "memo slot 5");
    }

    [Theory]
    [InlineData(TensorDType.F32)]
    [InlineData(TensorDType.F16)]
    public void Our_writer_round_trips_through_our_reader(TensorDType dtype)
    {
        using var dir = new TempDir();
        var src = PyTorchCheckpoint.Read(Fixture("timm_fp32.pth"));
        string path = dir.File("out.pth");
        PyTorchWriter.Write(path, src.Tensors, dtype);
        Assert.Equal(["out.pth"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));   // no temp file left
        var back = PyTorchCheckpoint.Read(path);
        Assert.Equal(src.Names, back.Names);
        foreach (var t in src.Tensors)
        {
            Assert.Equal(t.Shape, back[t.Name].Shape);
            var expected = dtype == TensorDType.F32 ? t.Data : t.Data.Select(v => (float)(Half)v).ToArray();
            Assert.Equal(expected, back[t.Name].Data);
        }
        // Storages are 64-byte aligned like torch.save's, so they can be memory-mapped in place.
        using var fs = File.OpenRead(path);
        Assert.All(StoredZip.ReadDirectory(fs, path).Where(m => m.Name.Contains("/data/", StringComparison.Ordinal)), m => Assert.Equal(0, m.DataOffset % 64));
    }

    [Fact]
    public void Convert_and_info_on_pytorch_inputs()
    {
        using var dir = new TempDir();
        var fx = Expected.Value;
        string outPath = dir.File("converted.safetensors");
        var (code, stdout, stderr) = RunCli("convert", Fixture("timm_fp32.pth"), "--heads", "2", "--out", outPath);
        Assert.True(code == 0, stderr);
        Assert.Contains("(pytorch, timm names)", stdout, StringComparison.Ordinal);
        // The output is self-describing: no --heads needed, and the predictions are PyTorch's.
        var loaded = ModelFolder.Load(outPath);
        Assert.Equal(CheckpointFormat.SafeTensors, loaded.Paths.Format);
        Assert.Equal(2, loaded.Architecture.NumHeads);
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var vit = VitCheckpoint.Load(be, loaded);
        var p = Probabilities(vit, fx["input"], 3);
        Assert.True(p.Zip(fx["probs_fp32"], (a, b) => Math.Abs(a - b)).Max() < 1e-5);

        (code, stdout, _) = RunCli("info", Fixture("hf"));
        Assert.Equal(0, code);
        Assert.Contains("pytorch_model.bin (pytorch, Hugging Face ViTForImageClassification names)", stdout, StringComparison.Ordinal);
        (code, stdout, _) = RunCli("convert", Fixture("hf"), "--out", dir.File("hf.safetensors"), "--dtype", "f16");
        Assert.Equal(0, code);
        Assert.All(SafeTensors.Read(dir.File("hf.safetensors")).Tensors, t => Assert.Equal(TensorDType.F16, t.SourceDType));

        (code, _, stderr) = RunCli("convert", Fixture("hf"), "--out", dir.File("x.safetensors"), "--dtype", "f64");
        Assert.Equal(1, code);
        Assert.Contains("--dtype f64", stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(dir.File("x.safetensors")));
    }

    internal static (int Code, string Stdout, string Stderr) RunCli(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = WteCommands.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }
}

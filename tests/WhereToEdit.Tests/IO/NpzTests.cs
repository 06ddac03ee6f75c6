using System.IO.Compression;
using System.Text;
using WhereToEdit.Engine.IO;
using Xunit;

namespace WhereToEdit.Tests.IO;

public class NpzTests
{
    private static CheckpointFormatException ReadNpzExpectError(string path)
    {
        var ex = Assert.Throws<CheckpointFormatException>(() => NpzReader.Read(path));
        Assert.Contains(path, ex.Message);
        return ex;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void ReadsAllVersionsAndShapes(int major)
    {
        using var dir = new TempDir();
        string p = dir.File("a.npz");
        IoTestUtil.WriteNpz(p,
        [
            ("scalar", IoTestUtil.NpyF32([], [3.5f], major)),
            ("vec", IoTestUtil.NpyF32([3], [1f, 2f, 3f], major)),
            ("mat", IoTestUtil.NpyF32([2, 3], [1, 2, 3, 4, 5, 6], major)),
            ("empty", IoTestUtil.NpyF32([0, 4], [], major)),
        ]);
        var f = NpzReader.Read(p);
        Assert.Equal(CheckpointFormat.Npz, f.SourceFormat);
        Assert.Equal(["scalar", "vec", "mat", "empty"], f.Names);
        Assert.Empty(f["scalar"].Shape);
        Assert.Equal([3.5f], f["scalar"].Data);
        Assert.Equal([3], f["vec"].Shape);
        Assert.Equal([2, 3], f["mat"].Shape);
        Assert.Equal([1f, 2, 3, 4, 5, 6], f["mat"].Data);
        Assert.Equal([0, 4], f["empty"].Shape);
    }

    [Fact]
    public void ConvertsF2AndF8AndToleratesHeaderVariants()
    {
        using var dir = new TempDir();
        string p = dir.File("a.npz");
        var f16 = new byte[4];
        BitConverter.TryWriteBytes(f16.AsSpan(0), (Half)1.5f);
        BitConverter.TryWriteBytes(f16.AsSpan(2), (Half)(-2f));
        var f64 = new byte[16];
        BitConverter.TryWriteBytes(f64.AsSpan(0), 0.25);
        BitConverter.TryWriteBytes(f64.AsSpan(8), 1e10);
        IoTestUtil.WriteNpz(p,
        [
            ("h", IoTestUtil.Npy("{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }", f16)),
            ("d", IoTestUtil.Npy("{\"shape\": (2L,), \"fortran_order\": False, \"descr\": \"<f8\"}", f64)),
            ("params/p", IoTestUtil.NpyF32([1], [7f])),
        ], CompressionLevel.NoCompression);
        var f = NpzReader.Read(p);
        Assert.Equal([1.5f, -2f], f["h"].Data);
        Assert.Equal(TensorDType.F16, f["h"].SourceDType);
        Assert.Equal([0.25f, 1e10f], f["d"].Data);
        Assert.Equal(TensorDType.F64, f["d"].SourceDType);
        Assert.Equal([7f], f["p"].Data); // params/ prefix stripped
    }

    [Fact]
    public void OptTargetPrefixKeepsParametersAndSkipsOptimizerState()
    {
        using var dir = new TempDir();
        string p = dir.File("a.npz");
        IoTestUtil.WriteNpz(p,
        [
            ("opt/target/cls", IoTestUtil.NpyF32([1], [1f])),
            ("opt/state/param_states/cls/grad_ema", IoTestUtil.NpyF32([1], [9f])),
        ]);
        var f = NpzReader.Read(p);
        Assert.Equal(["cls"], f.Names);
        Assert.Contains("1 member(s) outside opt/target/", f.Metadata["npz.skipped_members"]);
    }

    [Theory]
    [InlineData("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", "unsupported .npy dtype '>f4'")]
    [InlineData("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", "unsupported .npy dtype '<i8'")]
    [InlineData("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", "fortran_order=True arrays are not supported")]
    [InlineData("{'descr': '<f4', 'fortran_order': False}", "no tuple 'shape'")]
    [InlineData("{'descr': '<f4', 'shape': (1,)}", "no boolean 'fortran_order'")]
    [InlineData("{'fortran_order': False, 'shape': (1,)}", "no string 'descr'")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", "unexpected key 'extra'")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", "shape dimension -1 is out of range")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, 'shape': (1,2, }", "malformed .npy header")]
    [InlineData("{'descr': '<f4' 'fortran_order': False}", "malformed .npy header")]
    [InlineData("['descr']", "is not a dict")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, 'shape': ('a',), }", "shape entry 0 is not an integer")]
    [InlineData("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "duplicate key 'descr'")]
    [InlineData("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", "size mismatch")]
    public void BadNpyHeadersAreNamed(string dict, string expected)
    {
        using var dir = new TempDir();
        string p = dir.File("bad.npz");
        IoTestUtil.WriteNpz(p, [("Transformer/x", IoTestUtil.Npy(dict, new byte[4]))]);
        var ex = ReadNpzExpectError(p);
        Assert.Contains(expected, ex.Message);
        Assert.Contains("tensor 'Transformer/x' (member 'Transformer/x.npy')", ex.Message);
    }

    [Fact]
    public void BadMagicVersionAndExtraBytes()
    {
        using var dir = new TempDir();
        string p = dir.File("bad.npz");
        var npy = IoTestUtil.NpyF32([1], [1f]);
        npy[1] = (byte)'X';
        IoTestUtil.WriteNpz(p, [("x", npy)]);
        Assert.Contains("not a .npy array", ReadNpzExpectError(p).Message);

        npy = IoTestUtil.NpyF32([1], [1f]);
        npy[6] = 4;
        IoTestUtil.WriteNpz(p, [("x", npy)]);
        Assert.Contains("unsupported .npy format version 4.0", ReadNpzExpectError(p).Message);

        npy = [.. IoTestUtil.NpyF32([1], [1f]), 0, 0, 0, 0];
        IoTestUtil.WriteNpz(p, [("x", npy)]);
        Assert.Contains("size mismatch", ReadNpzExpectError(p).Message);

        IoTestUtil.WriteNpz(p, [("x", IoTestUtil.NpyF32([1], [1f]).AsSpan(0, 20).ToArray())]);
        Assert.Contains("truncated .npy", ReadNpzExpectError(p).Message);
    }

    [Fact]
    public void NonNpyMembersDuplicatesAndNonZipFiles()
    {
        using var dir = new TempDir();
        string p = dir.File("bad.npz");
        using (var fs = File.Create(p))
        using (var zip = new ZipArchive(fs, ZipArchiveMode.Create))
        {
            using var s = zip.CreateEntry("readme.txt").Open();
            s.Write("hi"u8);
        }
        Assert.Contains("member 'readme.txt' is not a .npy array", ReadNpzExpectError(p).Message);

        IoTestUtil.WriteNpz(p, [("params/a", IoTestUtil.NpyF32([1], [1f])), ("a", IoTestUtil.NpyF32([1], [1f]))]);
        Assert.Contains("duplicate tensor name 'a'", ReadNpzExpectError(p).Message);

        File.WriteAllBytes(p, []);
        Assert.Contains("empty", ReadNpzExpectError(p).Message);
        File.WriteAllBytes(p, Encoding.ASCII.GetBytes("this is not a zip archive at all"));
        Assert.Contains("not a valid .npz (ZIP) archive", ReadNpzExpectError(p).Message);
    }

    [Fact]
    public void TruncatedNpzAtEveryBoundaryGivesAClearError()
    {
        using var dir = new TempDir();
        string good = dir.File("good.npz");
        IoTestUtil.WriteNpz(good,
        [
            ("a", IoTestUtil.NpyF32([64], IoTestUtil.Random(64, 1))),
            ("b", IoTestUtil.NpyF32([8, 8], IoTestUtil.Random(64, 2))),
        ]);
        var bytes = File.ReadAllBytes(good);
        string p = dir.File("cut.npz");
        for (int n = 0; n < bytes.Length; n += 3)
        {
            File.WriteAllBytes(p, bytes.AsSpan(0, n).ToArray());
            ReadNpzExpectError(p);
        }
    }

    [Fact]
    public void CorruptedDeflateDataGivesAClearErrorOrValidData()
    {
        using var dir = new TempDir();
        string good = dir.File("good.npz");
        IoTestUtil.WriteNpz(good, [("a", IoTestUtil.NpyF32([256], IoTestUtil.Random(256, 1)))], CompressionLevel.Optimal);
        var bytes = File.ReadAllBytes(good);
        var rng = new Random(7);
        float[] original = NpzReader.Read(good).Tensors.Single().Data;
        string p = dir.File("fuzz.npz");
        int errors = 0, ok = 0;
        for (int iter = 0; iter < 200; iter++)
        {
            var b = (byte[])bytes.Clone();
            b[30 + rng.Next(bytes.Length - 30 - 22)] ^= (byte)(1 + rng.Next(255));
            File.WriteAllBytes(p, b);
            TensorFile read;
            try
            {
                read = NpzReader.Read(p);
            }
            catch (CheckpointFormatException e)
            {
                Assert.Contains(p, e.Message);
                errors++;
                continue;
            }
            // Accepted: then it must be the original tensor, bit for bit (a corruption that decodes to other data must be refused).
            var t = Assert.Single(read.Tensors);
            Assert.Equal("a", t.Name);
            Assert.Equal([256], t.Shape);
            Assert.Equal(original, t.Data);
            ok++;
        }
        Assert.True(errors > 50, $"only {errors} of 200 corruptions refused");
    }

    [Fact]
    public void NpyHeaderBuilderRoundTrips()
    {
        var header = Npy.BuildHeader("<f4", [2, 3]);
        Assert.Equal(0, header.Length % 64);
        using var ms = new MemoryStream([.. header, .. IoTestUtil.F32Bytes([1, 2, 3, 4, 5, 6])]);
        var t = Npy.Read(ms, "x", "mem", "test");
        Assert.Equal([2, 3], t.Shape);
        Assert.Equal([1f, 2, 3, 4, 5, 6], t.Data);
    }
}

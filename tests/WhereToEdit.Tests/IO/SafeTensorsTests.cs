using System.Buffers.Binary;
using WhereToEdit.Engine.IO;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.IO;

public class SafeTensorsTests(ITestOutputHelper output)
{
    private static TensorFile Sample()
    {
        var values = new float[] { 0f, 1f, -2.5f, 3.14159f, 1e-3f, -65504f, 1e-8f, 123.456f, float.PositiveInfinity, float.NaN, -0f, 7f };
        return new TensorFile(
        [
            new NamedTensor("a.weight", [3, 4], values),
            new NamedTensor("b", [2], [5f, -6f]),
            new NamedTensor("scalar", [], [42f]),
            new NamedTensor("empty", [0, 3], []),
            new NamedTensor("big", [1000], IoTestUtil.Random(1000, 3)),
        ], new Dictionary<string, string> { ["k"] = "v", ["unicode"] = "héllo \"quoted\"" });
    }

    [Fact]
    public void RoundTripF32IsExact()
    {
        using var dir = new TempDir();
        var src = Sample();
        string p = dir.File("m.safetensors");
        SafeTensors.Write(p, src);
        var back = SafeTensors.Read(p);
        Assert.Equal(CheckpointFormat.SafeTensors, back.SourceFormat);
        Assert.Equal(p, back.SourcePath);
        Assert.Equal(src.Names, back.Names); // file order = write order
        foreach (var t in src.Tensors)
        {
            Assert.Equal(t.Shape, back[t.Name].Shape);
            Assert.Equal(TensorDType.F32, back[t.Name].SourceDType);
            for (int i = 0; i < t.Data.Length; i++)
                Assert.Equal(BitConverter.SingleToInt32Bits(t.Data[i]), BitConverter.SingleToInt32Bits(back[t.Name].Data[i]));
        }
        Assert.Equal("v", back.Metadata["k"]);
        Assert.Equal("héllo \"quoted\"", back.Metadata["unicode"]);
        // Data section starts 8-byte aligned and no temp file is left behind.
        var bytes = File.ReadAllBytes(p);
        Assert.Equal(0UL, (8 + BinaryPrimitives.ReadUInt64LittleEndian(bytes)) % 8);
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Theory]
    [InlineData(TensorDType.F16)]
    [InlineData(TensorDType.BF16)]
    public void RoundTripHalfPrecisionWithinRounding(TensorDType dtype)
    {
        using var dir = new TempDir();
        var data = IoTestUtil.Random(4096, 9).Select((x, i) => x * MathF.Pow(2, i % 13 - 6)).ToArray();
        string p = dir.File("h.safetensors");
        SafeTensors.Write(p, [new NamedTensor("w", [64, 64], data)], null, dtype);
        var header = SafeTensors.ReadHeader(p);
        Assert.Equal(dtype == TensorDType.F16 ? "F16" : "BF16", header.Entries[0].DTypeName);
        var back = SafeTensors.Read(p)["w"];
        Assert.Equal(dtype, back.SourceDType);
        // Relative rounding error ≤ 2^-11 (F16, normal range) or 2^-8 (BF16).
        double tol = dtype == TensorDType.F16 ? 1.0 / 2048 : 1.0 / 256;
        for (int i = 0; i < data.Length; i++)
            Assert.True(Math.Abs(back.Data[i] - data[i]) <= tol * Math.Abs(data[i]) + 1e-7, $"{i}: {data[i]} → {back.Data[i]}");
        // Writing what was read gives identical values (the conversion is idempotent).
        SafeTensors.Write(p, [back], null, dtype);
        Assert.Equal(back.Data, SafeTensors.Read(p)["w"].Data);
    }

    [Fact]
    public void BFloat16RoundsToNearestEven()
    {
        Assert.Equal((ushort)0x3F80, DTypeConversion.ToBFloat16Bits(1f));
        Assert.Equal((ushort)0x3F80, DTypeConversion.ToBFloat16Bits(BitConverter.UInt32BitsToSingle(0x3F808000))); // tie → even
        Assert.Equal((ushort)0x3F82, DTypeConversion.ToBFloat16Bits(BitConverter.UInt32BitsToSingle(0x3F818000))); // tie → even (up)
        Assert.Equal((ushort)0x3F81, DTypeConversion.ToBFloat16Bits(BitConverter.UInt32BitsToSingle(0x3F808001)));
        Assert.True(float.IsNaN(DTypeConversion.FromBFloat16Bits(DTypeConversion.ToBFloat16Bits(float.NaN))));
        Assert.Equal(float.PositiveInfinity, DTypeConversion.FromBFloat16Bits(DTypeConversion.ToBFloat16Bits(float.PositiveInfinity)));
    }

    [Fact]
    public void ReaderReadsSingleTensorsAndRawBytes()
    {
        using var dir = new TempDir();
        string p = dir.File("m.safetensors");
        SafeTensors.Write(p, Sample());
        using var r = SafeTensorsReader.Open(p);
        Assert.Equal(5, r.Entries.Count);
        Assert.Equal([5f, -6f], r.ReadTensor("b"));
        Assert.Equal(8, r.GetRawBytes("b").Length);
        var ex = Assert.Throws<CheckpointFormatException>(() => r.ReadTensor("nope"));
        Assert.Contains("nope", ex.Message);
        Assert.Contains(p, ex.Message);
    }

    [Fact]
    public void OverwriteIsAtomicReplace()
    {
        using var dir = new TempDir();
        string p = dir.File("m.safetensors");
        SafeTensors.Write(p, [new NamedTensor("x", [1], [1f])]);
        SafeTensors.Write(p, [new NamedTensor("y", [2], [2f, 3f])]);
        var back = SafeTensors.Read(p);
        Assert.Equal(["y"], back.Names);
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void WriterRejectsBadInput()
    {
        using var dir = new TempDir();
        Assert.Throws<ArgumentException>(() => SafeTensors.Write(dir.File("a"), [new NamedTensor("x", [1], [1f]), new NamedTensor("x", [1], [1f])]));
        Assert.Throws<ArgumentException>(() => SafeTensors.Write(dir.File("a"), [new NamedTensor("__metadata__", [1], [1f])]));
        Assert.Throws<ArgumentException>(() => SafeTensors.Write(dir.File("a"), [new NamedTensor("x", [1], [1f])], null, TensorDType.F64));
        Assert.Throws<ArgumentException>(() => new NamedTensor("x", [2, 2], [1f]));
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    // ---- validation ---------------------------------------------------------------------------------

    private static CheckpointFormatException ReadBytesExpectError(byte[] bytes, string tag = "bad")
    {
        using var dir = new TempDir();
        string p = dir.File(tag + ".safetensors");
        File.WriteAllBytes(p, bytes);
        var ex = Assert.Throws<CheckpointFormatException>(() => SafeTensors.Read(p));
        Assert.Contains(p, ex.Message);
        Assert.Equal(p, ex.FilePath);
        return ex;
    }

    private static byte[] F32(int n) => new byte[n * 4];

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(7)]
    public void FileShorterThanEightBytes(int length)
    {
        var ex = ReadBytesExpectError(new byte[length]);
        Assert.Contains("shorter than the 8-byte header length", ex.Message);
    }

    [Fact]
    public void HeaderLengthBeyondFile()
    {
        var ex = ReadBytesExpectError(IoTestUtil.RawSafetensors("{}", [], claimedHeaderLength: 1000));
        Assert.Contains("runs past the end of the file", ex.Message);
    }

    [Fact]
    public void HeaderLengthAbsurd()
    {
        var ex = ReadBytesExpectError(IoTestUtil.RawSafetensors("{}", [], claimedHeaderLength: ulong.MaxValue));
        Assert.Contains("absurd", ex.Message);
        ex = ReadBytesExpectError(IoTestUtil.RawSafetensors("{}", [], claimedHeaderLength: 200_000_000));
        Assert.Contains("absurd", ex.Message);
    }

    [Theory]
    [InlineData("{\"a\":", "not valid JSON")]
    [InlineData("[1,2]", "must be a JSON object")]
    [InlineData("\"str\"", "must be a JSON object")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}", "not valid JSON")]
    [InlineData("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", "tensor 'a': entry has no \"dtype\"")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "tensor 'a': entry has no \"shape\"")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", "tensor 'a': entry has no \"data_offsets\"")]
    [InlineData("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", "tensor 'a': unknown dtype \"F33\"")]
    [InlineData("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", "tensor 'a': \"dtype\" must be a string")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", "tensor 'a': negative dimension -1")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", "tensor 'a': shape entry 1.5 is not an integer")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,4]}}", "tensor 'a': \"shape\" must be an array")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", "tensor 'a': \"data_offsets\" must be [begin, end]")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", "tensor 'a': data offset -4 is not a non-negative integer")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", "tensor 'a': data_offsets end 4 is before begin 8")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,400]}}", "tensor 'a': data_offsets [0, 400] run past the end of the data section (16 bytes)")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", "tensor 'a': shape [2] of F32 needs 8 bytes but data_offsets [0, 4] span 4")]
    [InlineData("{\"a\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", "tensor 'a': shape [2, 2] of F16 needs 8 bytes")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", "tensor 'b' data_offsets [4, 12] overlap tensor 'a' [0, 8]")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", "duplicate key \"a\" (duplicate tensor name)")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", "duplicate key \"dtype\" in object \"a\"")]
    [InlineData("{\"__metadata__\":{\"k\":1}}", "__metadata__ value for \"k\" must be a string")]
    [InlineData("{\"__metadata__\":[]}", "__metadata__ must be an object")]
    [InlineData("{\"a\":[1]}", "tensor 'a': entry must be an object")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", "tensor 'a': dimension 4294967296 is too large")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647,2147483647],\"data_offsets\":[0,4]}}", "overflows")]
    public void HeaderProblemsAreNamed(string header, string expected)
    {
        var ex = ReadBytesExpectError(IoTestUtil.RawSafetensors(header, F32(4)));
        Assert.Contains(expected, ex.Message);
    }

    [Fact]
    public void UnsupportedDtypeRejectedWhenRead()
    {
        using var dir = new TempDir();
        string p = dir.File("i64.safetensors");
        File.WriteAllBytes(p, IoTestUtil.RawSafetensors(
            "{\"step\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", F32(4)));
        using (var r = SafeTensorsReader.Open(p)) // the header itself is valid
        {
            Assert.Equal([0f, 0f], r.ReadTensor("w"));
            var e1 = Assert.Throws<CheckpointFormatException>(() => r.ReadTensor("step"));
            Assert.Contains("tensor 'step' has dtype I64, which is not supported", e1.Message);
        }
        var ex = Assert.Throws<CheckpointFormatException>(() => SafeTensors.Read(p));
        Assert.Contains("'step' I64", ex.Message);
    }

    [Fact]
    public void EmptyHeaderIsAcceptedButGapsAreRefused()
    {
        using var dir = new TempDir();
        string p = dir.File("e.safetensors");
        File.WriteAllBytes(p, IoTestUtil.RawSafetensors("{}", []));
        Assert.Equal(0, SafeTensors.Read(p).Count);
        File.WriteAllBytes(p, IoTestUtil.RawSafetensors("{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}   ", F32(2)));
        var f = SafeTensors.Read(p);
        Assert.Equal(["a", "b"], f.Names); // file (offset) order
        // The format requires the tensors to tile the data section (issue 14: gaps and trailing bytes are refused).
        File.WriteAllBytes(p, IoTestUtil.RawSafetensors("{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}   ", F32(4)));
        Assert.Contains("gap of 4 bytes", Assert.Throws<CheckpointFormatException>(() => SafeTensors.Read(p)).Message);
    }

    [Fact]
    public void TruncatedAtEveryBoundaryGivesAClearError()
    {
        using var dir = new TempDir();
        string good = dir.File("good.safetensors");
        SafeTensors.Write(good, Sample());
        var bytes = File.ReadAllBytes(good);
        string p = dir.File("cut.safetensors");
        int checkedCount = 0;
        for (int n = 0; n < bytes.Length; n += n < 400 ? 1 : 97)
        {
            File.WriteAllBytes(p, bytes.AsSpan(0, n).ToArray());
            var ex = Assert.Throws<CheckpointFormatException>(() => SafeTensors.Read(p));
            Assert.Contains(p, ex.Message);
            checkedCount++;
        }
        Assert.True(checkedCount > 400);
    }

    [Fact]
    public void RandomByteCorruptionNeverCrashes()
    {
        using var dir = new TempDir();
        string good = dir.File("good.safetensors");
        SafeTensors.Write(good, Sample());
        var bytes = File.ReadAllBytes(good);
        int headerEnd = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var rng = new Random(1234);
        string p = dir.File("fuzz.safetensors");
        long dataBytes = bytes.Length - headerEnd;
        int errors = 0, ok = 0;
        for (int iter = 0; iter < 400; iter++)
        {
            var b = (byte[])bytes.Clone();
            int flips = 1 + rng.Next(3);
            for (int f = 0; f < flips; f++) b[rng.Next(headerEnd)] = (byte)rng.Next(256);
            File.WriteAllBytes(p, b);
            TensorFile read;
            try
            {
                read = SafeTensors.Read(p);
            }
            catch (CheckpointFormatException e)
            {
                // Refused with one clear message naming the file (any other exception type fails the test).
                Assert.Contains(p, e.Message);
                errors++;
                continue;
            }
            // Accepted: every tensor is self-consistent, names are unique and no tensor claims more data than the file holds.
            Assert.All(read.Tensors, t => Assert.Equal(NamedTensor.ElementCountOf(t.Shape), t.Data.LongLength));
            Assert.Equal(read.Tensors.Count, read.Tensors.Select(t => t.Name).Distinct().Count());
            Assert.All(read.Tensors, t => Assert.True(t.Data.LongLength <= dataBytes, $"{t.Name}: {t.Data.LongLength} elements from {dataBytes} data bytes"));
            ok++;
        }
        output.WriteLine($"{errors} refused, {ok} accepted");
        Assert.True(errors > 100, $"only {errors} of 400 corrupted headers refused");
    }

    [Fact]
    public void MissingFileIsAFormatError()
    {
        using var dir = new TempDir();
        var ex = Assert.Throws<CheckpointFormatException>(() => SafeTensors.Read(dir.File("none.safetensors")));
        Assert.Contains("cannot open", ex.Message);
    }
}

using System.Buffers.Binary;
using System.IO.Compression;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.MetaTraining;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.MetaTraining;

/// <summary>IDX images/labels, gzipped and plain, and every malformation the reader must name.</summary>
public sealed class IdxReaderTests
{
    private static byte[] Header(int magic, params int[] dims)
    {
        var b = new byte[4 + 4 * dims.Length];
        BinaryPrimitives.WriteInt32BigEndian(b, magic);
        for (int i = 0; i < dims.Length; i++) BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(4 + 4 * i), dims[i]);
        return b;
    }

    private static byte[] Gzip(byte[] data)
    {
        using var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Fastest)) gz.Write(data);
        return ms.ToArray();
    }

    private static byte[] Pixels(int n) => Enumerable.Range(0, n).Select(i => (byte)(i * 7 % 256)).ToArray();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Reads_images_and_labels(bool gzip)
    {
        using var dir = new TempDir();
        byte[] images = [.. Header(0x803, 3, 2, 4), .. Pixels(3 * 2 * 4)];
        byte[] labels = [.. Header(0x801, 3), 9, 0, 4];
        string ip = dir.File(gzip ? "images.gz" : "images"), lp = dir.File(gzip ? "labels.gz" : "labels");
        File.WriteAllBytes(ip, gzip ? Gzip(images) : images);
        File.WriteAllBytes(lp, gzip ? Gzip(labels) : labels);
        var im = IdxReader.ReadImages(ip);
        Assert.Equal((3, 2, 4, 8), (im.Count, im.Rows, im.Cols, im.ImageBytes));
        Assert.Equal(Pixels(24).AsSpan(8, 8).ToArray(), im.GetImage(1));
        Assert.Throws<ArgumentOutOfRangeException>(() => im.GetImage(3));
        var lb = IdxReader.ReadLabels(lp);
        Assert.Equal(3, lb.Count);
        Assert.Equal(4, lb[2]);

        // As a meta-training source: gray, or replicated into 3 channels.
        var source = new IdxImageSource(im);
        var gray = source.Load(2, 1);
        Assert.Equal((4, 2, 1), (gray.Width, gray.Height, gray.Channels));
        Assert.Equal(im.GetImage(2), gray.Pixels);
        var rgb = source.Load(2, 3);
        Assert.Equal(im.GetImage(2)[5], rgb.Pixels[15]);
        Assert.Equal(im.GetImage(2)[5], rgb.Pixels[17]);
    }

    public static IEnumerable<object[]> Malformed() =>
    [
        ["empty", Array.Empty<byte>(), "too short"],
        ["labels as images", (byte[])[.. Header(0x801, 3), 1, 2, 3], "IDX labels file"],
        ["float type", (byte[])[.. Header(0x0D03, 1, 1, 1), 0, 0, 0, 0], "0x00000D03"],
        ["not IDX", "hello, world"u8.ToArray(), "expected 0x00000803"],
        ["header cut", Header(0x803, 3, 2), "dimension 2 of 3 missing"],
        ["zero dim", Header(0x803, 0, 2, 2), "must be positive"],
        ["negative dim", Header(0x803, 2, -1, 2), "must be positive"],
        ["truncated", (byte[])[.. Header(0x803, 2, 2, 2), .. Pixels(7)], "truncated"],
        ["trailing", (byte[])[.. Header(0x803, 1, 2, 2), .. Pixels(5)], "trailing"],
        ["huge dims", (byte[])[.. Header(0x803, 65536, 65536, 2), 1], "describe more than"],
    ];

    [Theory]
    [MemberData(nameof(Malformed))]
    public void Malformed_files_are_refused_naming_the_file(string name, byte[] content, string expected)
    {
        using var dir = new TempDir();
        foreach (bool gzip in new[] { false, true })
        {
            string path = dir.File(name.Replace(' ', '_') + (gzip ? ".gz" : ""));
            File.WriteAllBytes(path, gzip ? Gzip(content) : content);
            var e = Assert.Throws<IdxFormatException>(() => IdxReader.ReadImages(path));
            Assert.StartsWith(path + ": ", e.Message);
            Assert.Contains(expected, e.Message);
        }
    }

    [Fact]
    public void Corrupt_gzip_missing_file_and_folder_are_refused()
    {
        using var dir = new TempDir();
        var good = Gzip([.. Header(0x803, 2, 2, 2), .. Pixels(8)]);
        string cut = dir.File("cut.gz");
        File.WriteAllBytes(cut, good.AsSpan(0, good.Length - 12).ToArray());
        Assert.Contains("cut.gz", Assert.Throws<IdxFormatException>(() => IdxReader.ReadImages(cut)).Message);
        string garbage = dir.File("garbage.gz");
        File.WriteAllBytes(garbage, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
        Assert.StartsWith(garbage + ": ", Assert.Throws<IdxFormatException>(() => IdxReader.ReadImages(garbage)).Message);
        Assert.Contains("no such file", Assert.Throws<IdxFormatException>(() => IdxReader.ReadImages(dir.File("missing.gz"))).Message);
        Assert.Contains("folder", Assert.Throws<IdxFormatException>(() => IdxReader.ReadLabels(dir.Path)).Message);
    }

    [SkippableFact]
    public void Reads_the_installed_Fashion_MNIST_test_set_when_present()
    {
        const string root = "/usr/share/datasets/fashion-mnist";
        string images = Path.Combine(root, "t10k-images-idx3-ubyte.gz"), labels = Path.Combine(root, "t10k-labels-idx1-ubyte.gz");
        Skip.IfNot(File.Exists(images) && File.Exists(labels), $"{root}: Debian's dataset-fashion-mnist is not installed here");
        var im = IdxReader.ReadImages(images);
        var lb = IdxReader.ReadLabels(labels);
        Assert.Equal((10000, 28, 28), (im.Count, im.Rows, im.Cols));
        Assert.Equal(10000, lb.Count);
        Assert.All(lb.All.ToArray(), l => Assert.InRange(l, 0, 9));
        Assert.Equal(9, lb[0]);   // the first Fashion-MNIST test image is an ankle boot
    }
}

using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Compression;
using System.Text;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Webp;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;
using WhereToEdit.Engine.IO;
using Xunit;

namespace WhereToEdit.Tests.IO;

public class ImageLoaderTests
{
    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    private static ImageLoadException ExpectError(string path, ImageLoader? loader = null, int channels = 3)
    {
        var ex = Assert.Throws<ImageLoadException>(() => (loader ?? new ImageLoader()).Decode(path, channels));
        Assert.Contains(path, ex.Message);
        return ex;
    }

    // ---- a hand-made PNG claiming 100000 × 100000 pixels -----------------------------------------

    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
        }
        return ~crc;
    }

    private static void Chunk(MemoryStream ms, string type, byte[] data)
    {
        var len = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(len, (uint)data.Length);
        ms.Write(len);
        var td = Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
        ms.Write(td);
        var crc = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(crc, Crc32(td));
        ms.Write(crc);
    }

    private static byte[] BombPng(int width, int height)
    {
        var ms = new MemoryStream();
        ms.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        var ihdr = new byte[13];
        BinaryPrimitives.WriteUInt32BigEndian(ihdr, (uint)width);
        BinaryPrimitives.WriteUInt32BigEndian(ihdr.AsSpan(4), (uint)height);
        ihdr[8] = 8; // bit depth
        ihdr[9] = 2; // RGB
        Chunk(ms, "IHDR", ihdr);
        var z = new MemoryStream();
        using (var zl = new ZLibStream(z, CompressionLevel.SmallestSize, leaveOpen: true))
            zl.Write(new byte[64 * 1024]); // a tiny stream of zeros; a real bomb would go on for gigabytes
        Chunk(ms, "IDAT", z.ToArray());
        Chunk(ms, "IEND", []);
        return ms.ToArray();
    }

    [Fact]
    public void DecompressionBombIsRefusedBeforeDecoding()
    {
        using var dir = new TempDir();
        string p = dir.File("bomb.png");
        var bytes = BombPng(100_000, 100_000);
        Assert.True(bytes.Length < 2000);
        File.WriteAllBytes(p, bytes);
        var loader = new ImageLoader();
        long before = GC.GetAllocatedBytesForCurrentThread();
        var sw = Stopwatch.StartNew();
        var ex = ExpectError(p, loader);
        sw.Stop();
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Contains("100000×100000", ex.Message);
        Assert.Contains("refused before decoding", ex.Message);
        Assert.True(allocated < 16L << 20, $"allocated {allocated} bytes");
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10));
        Assert.Equal((100_000, 100_000, "PNG"), (loader.Identify(p).Width, loader.Identify(p).Height, loader.Identify(p).Format));
    }

    [Fact]
    public void PixelLimitIsConfigurable()
    {
        var ex = ExpectError(Fixture("resize_rgb_61x47.png"), new ImageLoader(new ImageLoaderOptions { MaxPixels = 1000 }));
        Assert.Contains("2,867 pixels, above the limit of 1,000", ex.Message);
        ex = ExpectError(Fixture("resize_rgb_61x47.png"), new ImageLoader(new ImageLoaderOptions { MaxFileBytes = 100 }));
        Assert.Contains("above the limit", ex.Message);
    }

    [Fact]
    public void EmptyMissingAndNonImageFiles()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("zero.jpg"), []);
        Assert.Contains("empty (0 bytes)", ExpectError(dir.File("zero.jpg")).Message);
        Assert.Contains("no such file", ExpectError(dir.File("missing.png")).Message);
        File.WriteAllText(dir.File("notes.png"), "this is text, not a picture");
        Assert.Contains("not a supported image", ExpectError(dir.File("notes.png")).Message);
        File.WriteAllBytes(dir.File("x.tga"), [0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 24, 0, 1, 2, 3]);
        ExpectError(dir.File("x.tga"));
    }

    [Fact]
    public void TruncatedPngAndJpegAreRefused()
    {
        using var dir = new TempDir();
        var png = File.ReadAllBytes(Fixture("resize_rgb_61x47.png"));
        byte[] jpg;
        using (var img = Image.Load<Rgb24>(png))
        using (var ms = new MemoryStream())
        {
            img.SaveAsJpeg(ms, new JpegEncoder { Quality = 90 });
            jpg = ms.ToArray();
        }
        foreach (var (name, bytes) in new[] { ("t.png", png), ("t.jpg", jpg) })
        {
            string p = dir.File(name);
            for (int n = 1; n < bytes.Length - 2; n += Math.Max(1, bytes.Length / 60))
            {
                File.WriteAllBytes(p, bytes.AsSpan(0, n).ToArray());
                ExpectError(p);
            }
        }
    }

    [Fact]
    public void CorruptBytesGiveImageLoadExceptionOrAnImage()
    {
        // ImageSharp throws NullReferenceException / DivideByZeroException on some fuzzed JPEG, BMP and WebP files:
        // the loader must turn every failure into an ImageLoadException naming the file.
        var png = File.ReadAllBytes(Fixture("resize_rgb_61x47.png"));
        using var img = Image.Load<Rgb24>(png);
        var files = new List<(string Ext, byte[] Bytes)> { ("png", png) };
        foreach (var ext in new[] { "jpg", "gif", "bmp", "webp" })
        {
            using var ms = new MemoryStream();
            switch (ext)
            {
                case "jpg": img.SaveAsJpeg(ms); break;
                case "gif": img.SaveAsGif(ms); break;
                case "bmp": img.SaveAsBmp(ms); break;
                default: img.SaveAsWebp(ms); break;
            }
            files.Add((ext, ms.ToArray()));
        }
        var loader = new ImageLoader();
        var rng = new Random(1);
        int errors = 0, decoded = 0;
        foreach (var (ext, bytes) in files)
        {
            for (int i = 0; i < 300; i++)
            {
                var b = (byte[])bytes.Clone();
                switch (rng.Next(3))
                {
                    case 0:
                        for (int k = 0; k < 1 + rng.Next(4); k++) b[rng.Next(b.Length)] ^= (byte)(1 + rng.Next(255));
                        break;
                    case 1:
                        b = b.AsSpan(0, rng.Next(b.Length)).ToArray();
                        break;
                    default:
                        for (int k = 0; k < 2; k++) b[rng.Next(Math.Min(64, b.Length))] = (byte)rng.Next(256);
                        break;
                }
                string name = $"fuzz-{i}.{ext}";
                try
                {
                    loader.Decode(b, name);
                    decoded++;
                }
                catch (ImageLoadException e)
                {
                    Assert.Contains(name, e.Message);
                    errors++;
                }
            }
        }
        Assert.Equal(1500, errors + decoded);
        Assert.True(errors > 300);
    }

    [Fact]
    public void AlphaIsDroppedOrCompositedOnBlack()
    {
        using var dir = new TempDir();
        string p = dir.File("rgba.png");
        using (var img = new Image<Rgba32>(2, 1))
        {
            img[0, 0] = new Rgba32(200, 100, 50, 128);
            img[1, 0] = new Rgba32(10, 20, 30, 0);
            img.SaveAsPng(p);
        }
        var loader = new ImageLoader();
        Assert.Equal([200, 100, 50, 10, 20, 30], loader.Decode(p, 3, AlphaHandling.Drop).Pixels);
        Assert.Equal([100, 50, 25, 0, 0, 0], loader.Decode(p, 3, AlphaHandling.CompositeOnBlack).Pixels);
    }

    [Fact]
    public void GrayAndRgbConvertBetweenChannelCounts()
    {
        var loader = new ImageLoader();
        var gray1 = loader.Decode(Fixture("resize_gray_61x47.png"), 1);
        var gray3 = loader.Decode(Fixture("resize_gray_61x47.png"), 3);
        for (int i = 0; i < gray1.Pixels.Length; i++)
            Assert.True(gray3.Pixels[3 * i] == gray1.Pixels[i] && gray3.Pixels[3 * i + 1] == gray1.Pixels[i] && gray3.Pixels[3 * i + 2] == gray1.Pixels[i]);
        var rgb = loader.Decode(Fixture("resize_rgb_61x47.png"), 3);
        var l = loader.Decode(Fixture("resize_rgb_61x47.png"), 1);
        for (int i = 0; i < l.Pixels.Length; i++)
        {
            int r = rgb.Pixels[3 * i], g = rgb.Pixels[3 * i + 1], b = rgb.Pixels[3 * i + 2];
            Assert.Equal((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16, l.Pixels[i]); // PIL "L"
        }
    }

    [Fact]
    public void AnimatedGifGivesItsFirstFrame()
    {
        using var dir = new TempDir();
        string p = dir.File("anim.gif");
        using (var img = new Image<Rgba32>(4, 4, new Rgba32(255, 0, 0)))
        {
            using var second = new Image<Rgba32>(4, 4, new Rgba32(0, 0, 255));
            img.Frames.AddFrame(second.Frames.RootFrame);
            img.SaveAsGif(p, new GifEncoder());
        }
        using (var check = Image.Load<Rgba32>(p))
            Assert.Equal(2, check.Frames.Count);
        var d = new ImageLoader().Decode(p);
        Assert.Equal((4, 4), (d.Width, d.Height));
        Assert.Equal((255, 0, 0), (d.Pixels[0], d.Pixels[1], d.Pixels[2]));
    }

    [Fact]
    public void ExifOrientationIsApplied()
    {
        using var dir = new TempDir();
        string p = dir.File("rot.jpg");
        using (var img = new Image<Rgb24>(40, 16, new Rgb24(128, 128, 128)))
        {
            img.Metadata.ExifProfile = new ExifProfile();
            img.Metadata.ExifProfile.SetValue(ExifTag.Orientation, (ushort)6); // rotate 90° clockwise to display
            img.SaveAsJpeg(p);
        }
        var loader = new ImageLoader();
        var d = loader.Decode(p);
        Assert.Equal((16, 40), (d.Width, d.Height));
        var raw = loader.Decode(p, 3, AlphaHandling.Drop, applyExifOrientation: false);
        Assert.Equal((40, 16), (raw.Width, raw.Height));
    }

    [Fact]
    public void BmpAndLosslessWebpDecodeExactly()
    {
        using var dir = new TempDir();
        var loader = new ImageLoader();
        var want = loader.Decode(Fixture("resize_rgb_61x47.png")).Pixels;
        using var img = Image.Load<Rgb24>(Fixture("resize_rgb_61x47.png"));
        img.SaveAsBmp(dir.File("a.bmp"));
        img.SaveAsWebp(dir.File("a.webp"), new WebpEncoder { FileFormat = WebpFileFormatType.Lossless });
        Assert.Equal(want, loader.Decode(dir.File("a.bmp")).Pixels);
        Assert.Equal(want, loader.Decode(dir.File("a.webp")).Pixels);
    }

    [Fact]
    public void LoadWritesChwIntoCallerSpan()
    {
        var loader = new ImageLoader();
        var pre = new Preprocessing(ResizeMode.ShorterSide, 36, 32, Interpolation.Bilinear, [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]);
        var buffer = new float[2 * pre.OutputLength];
        loader.Load(Fixture("resize_rgb_61x47.png"), pre, buffer.AsSpan(pre.OutputLength));
        Assert.All(buffer.AsSpan(0, pre.OutputLength).ToArray(), v => Assert.Equal(0f, v));
        Assert.All(buffer.AsSpan(pre.OutputLength).ToArray(), v => Assert.InRange(v, -1f, 1f));
        Assert.Throws<ArgumentException>(() => loader.Load(Fixture("resize_rgb_61x47.png"), pre, new float[10]));
        var bytes = File.ReadAllBytes(Fixture("resize_rgb_61x47.png"));
        var fromBytes = new float[pre.OutputLength];
        loader.Load(bytes, "in-memory.png", pre, fromBytes);
        Assert.Equal(buffer.AsSpan(pre.OutputLength).ToArray(), fromBytes);
    }
}

public class ImageLoaderEdgeTests
{
    [Fact]
    public void ExtremeAspectRatioIsRefused()
    {
        using var dir = new TempDir();
        string p = dir.File("strip.png");
        using (var img = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.L8>(4000, 1))
            SixLabors.ImageSharp.ImageExtensions.SaveAsPng(img, p);
        var ex = Assert.Throws<ImageLoadException>(() => new ImageLoader().Load(p, Preprocessing.ReferenceCode));
        Assert.Contains("aspect ratio of 4000×1 is too extreme", ex.Message);
        // Direct resize has no such problem.
        var v = new ImageLoader().Load(p, Preprocessing.HuggingFace);
        Assert.Equal(3 * 224 * 224, v.Length);
    }
}

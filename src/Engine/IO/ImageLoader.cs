using System.Buffers.Binary;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Bmp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Webp;
using SixLabors.ImageSharp.Memory;
using SixLabors.ImageSharp.Metadata;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace WhereToEdit.Engine.IO;

/// <summary>Limits checked before any pixel is decoded.</summary>
public sealed record ImageLoaderOptions
{
    /// <summary>Largest width·height accepted (default 50 megapixels).</summary>
    public long MaxPixels { get; init; } = 50_000_000;

    /// <summary>Largest file accepted (default 256 MiB).</summary>
    public long MaxFileBytes { get; init; } = 256L << 20;
}

/// <summary>An 8-bit image, interleaved HWC, 1 (gray) or 3 (RGB) channels.</summary>
public sealed record DecodedImage(int Width, int Height, int Channels, byte[] Pixels);

/// <summary>
/// Decodes JPEG, PNG, BMP, GIF and WebP with ImageSharp and preprocesses them for a model.
/// Before decoding pixels the header is identified and refused when width·height exceeds
/// <see cref="ImageLoaderOptions.MaxPixels"/> (a decompression bomb costs nothing). Animated GIFs decode only their
/// first frame; animated WebPs are refused when frames·pixels exceed the limit, otherwise ImageSharp 2 decodes them
/// (its 2.1 decoder refuses some animated files; those end in a clean "cannot decode WebP" error). EXIF orientation is applied when asked. Channel conversion: gray → RGB
/// replicates; RGB → gray uses PIL's "L" weights (299/587/114 in 16-bit fixed point); alpha is dropped (PIL's
/// convert("RGB")) or composited on black, per <see cref="AlphaHandling"/>. Resizing is <see cref="PilResize"/>.
/// Every failure is an <see cref="ImageLoadException"/> naming the file.
/// Thread-safe: one instance may decode on several threads.
/// </summary>
public sealed class ImageLoader
{
    /// <summary>File extensions taken as images wherever a folder of images is read (lower case, with the dot).</summary>
    public static readonly string[] Extensions = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"];

    /// <summary>True when <paramref name="path"/> has one of <see cref="Extensions"/> (any case).</summary>
    public static bool HasImageExtension(string path) => Extensions.Contains(Path.GetExtension(path).ToLowerInvariant());

    private readonly Configuration _config;

    public ImageLoader(ImageLoaderOptions? options = null)
    {
        Options = options ?? new ImageLoaderOptions();
        if (Options.MaxPixels <= 0) throw new ArgumentException("MaxPixels must be positive");
        _config = new Configuration(new PngConfigurationModule(), new JpegConfigurationModule(), new GifConfigurationModule(),
                                    new BmpConfigurationModule(), new WebpConfigurationModule());
        _config.ImageFormatsManager.SetDecoder(GifFormat.Instance, new GifDecoder { DecodingMode = FrameDecodingMode.First });
        long limitMb = Math.Max(64, Options.MaxPixels * 16 / (1 << 20) + 64);
        _config.MemoryAllocator = MemoryAllocator.Create(new MemoryAllocatorOptions { AllocationLimitMegabytes = (int)Math.Min(limitMb, int.MaxValue) });
    }

    public ImageLoaderOptions Options { get; }

    /// <summary>Width, height and format name from the header only (no pixel limit is applied here).</summary>
    public (int Width, int Height, string Format) Identify(string path)
    {
        var (w, h, f) = Identify(ReadFile(path), path, checkLimits: false);
        return (w, h, f.Name);
    }

    private (int Width, int Height, IImageFormat Format) Identify(byte[] data, string name, bool checkLimits)
    {
        if (data.Length == 0) throw new ImageLoadException(name, "file is empty (0 bytes)");
        IImageFormat? format;
        try
        {
            format = Image.DetectFormat(_config, data);
        }
        catch (Exception e) when (IsDecodeError(e))
        {
            throw new ImageLoadException(name, $"cannot detect image format: {e.Message}", e);
        }
        if (format is null)
            throw new ImageLoadException(name, "not a supported image (JPEG, PNG, BMP, GIF, WebP)");   // never echo the file's bytes
        if (format == PngFormat.Instance) PngChunks.Check(data, name, Options.MaxPixels);   // text-chunk bombs and truncation before ImageSharp inflates anything
        IImageInfo? info;
        try
        {
            using var ms = new MemoryStream(data, writable: false);
            info = Image.Identify(_config, ms);
        }
        catch (Exception e) when (IsDecodeError(e))
        {
            throw new ImageLoadException(name, $"corrupt or truncated {format.Name} header: {Describe(e)}", e);
        }
        if (info is null) throw new ImageLoadException(name, $"cannot read the {format.Name} header");
        if (info.Width <= 0 || info.Height <= 0)
            throw new ImageLoadException(name, $"{format.Name} header gives an empty size {info.Width}×{info.Height}");
        long pixels = (long)info.Width * info.Height;
        if (!checkLimits) return (info.Width, info.Height, format);
        if (pixels > Options.MaxPixels)
            throw new ImageLoadException(name, $"{format.Name} is {info.Width}×{info.Height} = {pixels:N0} pixels, above the limit of {Options.MaxPixels:N0} (refused before decoding)");
        if (format == WebpFormat.Instance)
        {
            int frames = CountWebpFrames(data);
            if (frames > 1 && pixels * frames > Options.MaxPixels)
                throw new ImageLoadException(name, $"animated WebP of {frames} frames × {pixels:N0} pixels exceeds the limit of {Options.MaxPixels:N0} pixels (refused before decoding)");
        }
        return (info.Width, info.Height, format);
    }

    /// <summary>Decodes a file to 8-bit pixels with the model's channel count (1 or 3).</summary>
    public DecodedImage Decode(string path, int channels = 3, AlphaHandling alpha = AlphaHandling.Drop, bool applyExifOrientation = true) =>
        Decode(ReadFile(path), path, channels, alpha, applyExifOrientation);

    /// <summary>Decodes encoded bytes; <paramref name="name"/> names them in errors.</summary>
    public DecodedImage Decode(byte[] data, string name, int channels = 3, AlphaHandling alpha = AlphaHandling.Drop, bool applyExifOrientation = true)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (channels is not (1 or 3)) throw new ArgumentException("channels must be 1 or 3");
        var (_, _, format) = Identify(data, name, checkLimits: true);
        string formatName = format.Name;
        if (format != PngFormat.Instance) CheckComplete(data, format, name);   // PNG was walked in Identify
        Image<Rgba32> image;
        try
        {
            image = Image.Load<Rgba32>(_config, data);
        }
        catch (Exception e) when (IsDecodeError(e))
        {
            throw new ImageLoadException(name, $"cannot decode {formatName} (corrupt or truncated): {Describe(e)}", e);
        }
        using (image)
        {
            try
            {
                if (applyExifOrientation) image.Mutate(x => x.AutoOrient());
            }
            catch (Exception e) when (IsDecodeError(e))
            {
                throw new ImageLoadException(name, $"cannot apply EXIF orientation: {e.Message}", e);
            }
            int w = image.Width, h = image.Height;
            if ((long)w * h > Options.MaxPixels)
                throw new ImageLoadException(name, $"decoded image is {w}×{h}, above the pixel limit");
            var pixels = new byte[(long)w * h * channels];
            var frame = image.Frames.RootFrame; // first frame of an animation
            frame.ProcessPixelRows(accessor =>
            {
                for (int y = 0; y < accessor.Height; y++)
                {
                    var row = accessor.GetRowSpan(y);
                    int o = y * w * channels;
                    for (int x = 0; x < row.Length; x++)
                    {
                        var p = row[x];
                        int r = p.R, g = p.G, b = p.B;
                        if (alpha == AlphaHandling.CompositeOnBlack && p.A != 255)
                        {
                            r = (r * p.A + 127) / 255;
                            g = (g * p.A + 127) / 255;
                            b = (b * p.A + 127) / 255;
                        }
                        if (channels == 3)
                        {
                            pixels[o + 3 * x] = (byte)r;
                            pixels[o + 3 * x + 1] = (byte)g;
                            pixels[o + 3 * x + 2] = (byte)b;
                        }
                        else
                        {
                            pixels[o + x] = (byte)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
                        }
                    }
                }
            });
            return new DecodedImage(w, h, channels, pixels);
        }
    }

    /// <summary>Loads and preprocesses a file into <paramref name="destination"/> (CHW, exactly <see cref="Preprocessing.OutputLength"/> floats).</summary>
    public void Load(string path, Preprocessing preprocessing, Span<float> destination)
    {
        var img = Decode(path, preprocessing.Channels, preprocessing.Alpha, preprocessing.ApplyExifOrientation);
        CheckResizable(img, preprocessing, path);
        Preprocess(img, preprocessing, destination);
    }

    /// <summary>Longest side a resize may produce (an extreme aspect ratio would otherwise ask for a gigantic image).</summary>
    public const int MaxResizedSide = 1 << 16;

    private static (int Width, int Height) ResizedSize(DecodedImage image, Preprocessing p) =>
        p.ResizeMode == ResizeMode.ShorterSide ? PilResize.ShorterSideSize(image.Width, image.Height, p.ResizeSize) : (p.ResizeSize, p.ResizeSize);

    private static void CheckResizable(DecodedImage image, Preprocessing p, string name)
    {
        long shorter = Math.Min(image.Width, image.Height), longer = Math.Max(image.Width, image.Height);
        if (p.ResizeMode == ResizeMode.ShorterSide && (long)p.ResizeSize * longer / shorter > MaxResizedSide)
            throw new ImageLoadException(name, $"aspect ratio of {image.Width}×{image.Height} is too extreme: its shorter side resized to {p.ResizeSize} gives a longer side above {MaxResizedSide}");
    }

    public float[] Load(string path, Preprocessing preprocessing)
    {
        var dst = new float[preprocessing.OutputLength];
        Load(path, preprocessing, dst);
        return dst;
    }

    /// <summary>Loads and preprocesses encoded bytes.</summary>
    public void Load(byte[] data, string name, Preprocessing preprocessing, Span<float> destination)
    {
        var img = Decode(data, name, preprocessing.Channels, preprocessing.Alpha, preprocessing.ApplyExifOrientation);
        CheckResizable(img, preprocessing, name);
        Preprocess(img, preprocessing, destination);
    }

    /// <summary>
    /// Resize (shorter side or direct), center crop (torchvision rounding, zero padding when the crop is larger),
    /// /255, (x − mean)/std, CHW into <paramref name="destination"/>.
    /// </summary>
    public static void Preprocess(DecodedImage image, Preprocessing p, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(p);
        var problems = p.Problems();
        if (problems.Count > 0) throw new ArgumentException("invalid preprocessing: " + string.Join("; ", problems));
        if (image.Channels != p.Channels)
            throw new ArgumentException($"image has {image.Channels} channels, preprocessing expects {p.Channels}");
        int crop = p.CropSize, c = p.Channels;
        if (destination.Length != p.OutputLength)
            throw new ArgumentException($"destination holds {destination.Length} floats; {c}×{crop}×{crop} = {p.OutputLength} needed");

        if (p.ResizeMode == ResizeMode.ShorterSide
            && (long)p.ResizeSize * Math.Max(image.Width, image.Height) / Math.Min(image.Width, image.Height) > MaxResizedSide)
            throw new ArgumentException($"a {image.Width}×{image.Height} image resized to shorter side {p.ResizeSize} exceeds {MaxResizedSide} px");
        var (rw, rh) = ResizedSize(image, p);
        int left = PilResize.CenterCropOffset(rw, crop), top = PilResize.CenterCropOffset(rh, crop);
        // Part of the crop window inside the resized image.
        int x0 = Math.Max(left, 0), y0 = Math.Max(top, 0);
        int x1 = Math.Min(left + crop, rw), y1 = Math.Min(top + crop, rh);
        int w = Math.Max(x1 - x0, 0), h = Math.Max(y1 - y0, 0);
        var region = PilResize.ResizeRegion(image.Pixels, image.Width, image.Height, c, rw, rh, p.Interpolation, p.Precision, x0, y0, w, h);

        int plane = crop * crop;
        for (int k = 0; k < c; k++)
        {
            float mean = p.Mean[k], std = p.Std[k];
            float pad = (0f - mean) / std;
            var dst = destination.Slice(k * plane, plane);
            dst.Fill(pad);
            for (int y = 0; y < h; y++)
            {
                int dy = y0 - top + y;
                int dx0 = x0 - left;
                for (int x = 0; x < w; x++)
                    dst[dy * crop + dx0 + x] = (region[(y * w + x) * c + k] / 255f - mean) / std;
            }
        }
    }

    private byte[] ReadFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists) throw new ImageLoadException(path, "no such file");
            if (PathSafety.InputFileProblem(path) is { } problem) throw new ImageLoadException(path, problem);
            if (info.Length > Options.MaxFileBytes)
                throw new ImageLoadException(path, $"file is {info.Length:N0} bytes, above the limit of {Options.MaxFileBytes:N0}");
            return File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageLoadException(path, $"cannot read: {e.Message}", e);
        }
    }

    /// <summary>
    /// ImageSharp reports corrupt input with many exception types (ImageFormatException, but on fuzzed files also
    /// NullReferenceException, DivideByZeroException, IndexOutOfRangeException …): all of them mean "bad file".
    /// Only out-of-memory is let through.
    /// </summary>
    private static string Describe(Exception e) => e is ImageFormatException ? e.Message : $"{e.GetType().Name}: {e.Message}";

    private static bool IsDecodeError(Exception e) => e is not (OutOfMemoryException or ImageLoadException);

    /// <summary>Refuses files cut short where the format has an end marker (PIL refuses truncated images too).</summary>
    private static void CheckComplete(byte[] data, IImageFormat format, string name)
    {
        if (format == PngFormat.Instance)
        {
            PngChunks.Check(data, name, maxPixels: 0);   // (Decode walks PNGs in Identify with the pixel limit)
        }
        else if (format == JpegFormat.Instance)
        {
            if (data.AsSpan().LastIndexOf((ReadOnlySpan<byte>)[0xFF, 0xD9]) < 0)
                throw new ImageLoadException(name, "truncated JPEG (no end-of-image marker)");
        }
        else if (format == GifFormat.Instance)
        {
            if (Array.LastIndexOf(data, (byte)0x3B) < 13)
                throw new ImageLoadException(name, "truncated GIF (no trailer)");
        }
        else if (format == WebpFormat.Instance)
        {
            if (data.Length >= 12 && 8L + BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(4)) > data.Length)
                throw new ImageLoadException(name, "truncated WebP (RIFF size exceeds the file)");
        }
        else if (format == BmpFormat.Instance)
        {
            if (data.Length >= 6 && BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(2)) is uint size and > 54 && size > data.Length)
                throw new ImageLoadException(name, "truncated BMP (header size exceeds the file)");
        }
    }

    /// <summary>Counts ANMF chunks of a RIFF WebP (1 for a still image).</summary>
    private static int CountWebpFrames(byte[] data)
    {
        int frames = 0;
        long pos = 12;
        while (pos + 8 <= data.Length)
        {
            var fourcc = data.AsSpan((int)pos, 4);
            uint size = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan((int)pos + 4));
            if (fourcc.SequenceEqual("ANMF"u8)) frames++;
            pos += 8 + size + (size & 1);
        }
        return Math.Max(frames, 1);
    }
}

using WhereToEdit.Engine.IO;

namespace WhereToEdit.Engine.MetaTraining;

/// <summary>
/// Unlabelled training images for meta-training (labels are never used). Each image decodes to 8-bit pixels
/// (HWC) with the model's channel count; the meta-training transform (<see cref="RandomResizedCrop"/>) brings it to
/// the model's size. Implementations are thread-safe for <see cref="Load"/>.
/// </summary>
internal interface IImageSource
{
    int Count { get; }

    /// <summary>One line: what and where (kept in checkpoints, so a resume can tell a different data set).</summary>
    string Description { get; }

    /// <summary>A name for image <paramref name="index"/> in error messages.</summary>
    string NameOf(int index);

    /// <summary>Image <paramref name="index"/> with 1 (gray) or 3 (RGB) channels.</summary>
    DecodedImage Load(int index, int channels);
}

/// <summary>
/// Images of an IDX file (MNIST / Fashion-MNIST: 28×28 gray). A 3-channel model gets the gray value in all three
/// channels (PIL's convert("RGB") of an "L" image); the crop and resize to the model's size happen in the transform.
/// </summary>
internal sealed class IdxImageSource(IdxImages images) : IImageSource
{
    public IdxImages Images { get; } = images ?? throw new ArgumentNullException(nameof(images));

    public int Count => Images.Count;

    public string Description => $"idx {Path.GetFileName(Images.Path)} ({Images.Count} images {Images.Rows}×{Images.Cols})";

    public string NameOf(int index) => $"{Images.Path}[{index}]";

    public DecodedImage Load(int index, int channels)
    {
        if (channels is not (1 or 3)) throw new ArgumentOutOfRangeException(nameof(channels), channels, "channels must be 1 or 3");
        var gray = Images.Image(index);
        var pixels = new byte[gray.Length * channels];
        if (channels == 1) gray.CopyTo(pixels);
        else
            for (int i = 0; i < gray.Length; i++) pixels[3 * i] = pixels[3 * i + 1] = pixels[3 * i + 2] = gray[i];
        return new DecodedImage(Images.Cols, Images.Rows, channels, pixels);
    }
}

/// <summary>
/// Image files under a folder: torchvision's ImageFolder layout (<c>class/xxx.png</c>, class folders ignored since
/// labels are unused) or a flat folder, searched recursively for .png .jpg .jpeg .bmp .gif .webp and sorted by
/// ordinal path. Decoded with <see cref="ImageLoader"/> like torchvision's PIL loader: alpha dropped, no EXIF
/// rotation (PIL's Image.open does not apply it).
/// </summary>
internal sealed class FolderImageSource : IImageSource
{
    private readonly string[] _files;
    private readonly ImageLoader _loader;

    public FolderImageSource(string root, ImageLoader? loader = null)
    {
        ArgumentNullException.ThrowIfNull(root);
        if (!Directory.Exists(root))
            throw new DirectoryNotFoundException(File.Exists(root) ? $"{root}: is a file; --data expects a folder of images" : $"{root}: no such folder");
        Root = root;
        _files = [.. FolderWalk.Files(root, ImageLoader.HasImageExtension)];
        if (_files.Length == 0) throw new ArgumentException($"{root}: folder holds no images ({string.Join(" ", ImageLoader.Extensions)})");
        _loader = loader ?? new ImageLoader();
    }

    public string Root { get; }

    public IReadOnlyList<string> Files => _files;

    public int Count => _files.Length;

    public string Description => $"folder {Root} ({_files.Length} images)";

    public string NameOf(int index) => _files[index];

    public DecodedImage Load(int index, int channels) =>
        _loader.Decode(_files[index], channels, AlphaHandling.Drop, applyExifOrientation: false);
}

/// <summary>
/// Random-noise images (uniform 8-bit values) of a fixed size, a function of (seed, index): for benchmarks and tests,
/// where the timing or the arithmetic does not depend on what the pictures show.
/// </summary>
internal sealed class SyntheticImageSource(int count, int width, int height, ulong seed = 0) : IImageSource
{
    public int Count { get; } = count > 0 ? count : throw new ArgumentOutOfRangeException(nameof(count), count, "need at least one image");

    public string Description => $"synthetic noise ({Count} images {width}×{height}, seed {seed})";

    public string NameOf(int index) => $"noise[{index}]";

    public DecodedImage Load(int index, int channels)
    {
        if ((uint)index >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"{Count} synthetic images");
        var rng = new Tensors.Rng(unchecked(seed * 0x9E37_79B9_7F4A_7C15UL + (ulong)index));
        var pixels = new byte[width * height * channels];
        for (int i = 0; i < pixels.Length; i++) pixels[i] = (byte)rng.NextInt(0, 256);
        return new DecodedImage(width, height, channels, pixels);
    }
}

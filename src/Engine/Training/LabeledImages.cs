namespace WhereToEdit.Engine.Training;

/// <summary>A set of 8-bit single-channel images with class labels, held in memory (e.g. Fashion-MNIST).</summary>
public sealed class LabeledImages
{
    public LabeledImages(byte[] pixels, byte[] labels, int height, int width, string source)
    {
        if (height <= 0 || width <= 0) throw new ArgumentException($"{source}: image size {height}×{width} is not positive");
        if (pixels.Length != (long)labels.Length * height * width)
            throw new ArgumentException($"{source}: {pixels.Length} pixels for {labels.Length} images of {height}×{width}");
        Pixels = pixels;
        Labels = labels;
        Height = height;
        Width = width;
        Source = source;
    }

    public byte[] Pixels { get; }
    public byte[] Labels { get; }
    public int Height { get; }
    public int Width { get; }
    public string Source { get; }
    public int Count => Labels.Length;
    public int PixelsPerImage => Height * Width;

    public ReadOnlySpan<byte> Image(int i) => Pixels.AsSpan(i * PixelsPerImage, PixelsPerImage);

    /// <summary>Fashion-MNIST's class names, in label order.</summary>
    public static readonly string[] FashionMnistLabels =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
}

public static class LabeledImagesIdx
{
    /// <summary>Debian's dataset-fashion-mnist package puts the gzipped IDX files here.</summary>
    public const string DebianFashionMnist = "/usr/share/datasets/fashion-mnist";

    /// <summary>Reads an IDX image file and its label file (gzipped or not) into memory.</summary>
    public static LabeledImages Load(string imagesPath, string labelsPath)
    {
        var images = IO.IdxReader.ReadImages(imagesPath);
        var labels = IO.IdxReader.ReadLabels(labelsPath);
        if (images.Count != labels.Count)
            throw new IO.IdxFormatException(labelsPath, $"{labels.Count} labels for the {images.Count} images of {imagesPath}");
        var pixels = new byte[(long)images.Count * images.ImageBytes];
        for (int i = 0; i < images.Count; i++) images.Image(i).CopyTo(pixels.AsSpan(i * images.ImageBytes));
        return new LabeledImages(pixels, labels.All.ToArray(), images.Rows, images.Cols, imagesPath);
    }

    /// <summary>The train or test split of Fashion-MNIST from a folder holding the four standard IDX files.</summary>
    public static LabeledImages FashionMnist(string folder, bool train)
    {
        string prefix = train ? "train" : "t10k";
        string Find(string stem)
        {
            foreach (string name in new[] { stem + ".gz", stem })
            {
                string path = Path.Combine(folder, name);
                if (File.Exists(path)) return path;
            }
            throw new FileNotFoundException($"{folder}: no {stem}(.gz) — install Debian's dataset-fashion-mnist or pass --data with the IDX files", Path.Combine(folder, stem));
        }
        return Load(Find($"{prefix}-images-idx3-ubyte"), Find($"{prefix}-labels-idx1-ubyte"));
    }
}

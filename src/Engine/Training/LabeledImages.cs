namespace WhereToEdit.Engine.Training;

/// <summary>A set of 8-bit single-channel images with class labels, held in memory (e.g. Fashion-MNIST).</summary>
public sealed class LabeledImages
{
    public LabeledImages(byte[] pixels, byte[] labels, int height, int width, string source, string[]? names = null)
    {
        if (height <= 0 || width <= 0) throw new ArgumentException($"{source}: image size {height}×{width} is not positive");
        if (pixels.Length != (long)labels.Length * height * width)
            throw new ArgumentException($"{source}: {pixels.Length} pixels for {labels.Length} images of {height}×{width}");
        Pixels = pixels;
        Labels = labels;
        Height = height;
        Width = width;
        Source = source;
        int classes = labels.Length == 0 ? 0 : labels.Max() + 1;
        Names = names ?? (classes <= FashionMnistLabels.Length ? FashionMnistLabels : Enumerable.Range(0, classes).Select(c => $"class {c}").ToArray());
        if (classes > Names.Length) throw new ArgumentException($"{source}: label {classes - 1} but only {Names.Length} class names");
    }

    /// <summary>Class names in label order (Fashion-MNIST's unless the data folder names its own in labels.txt).</summary>
    public string[] Names { get; }

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
        var data = Load(Find($"{prefix}-images-idx3-ubyte"), Find($"{prefix}-labels-idx1-ubyte"));
        string namesPath = Path.Combine(folder, NamesFile);
        if (!File.Exists(namesPath)) return data;
        var names = ReadNames(namesPath);
        return new LabeledImages(data.Pixels, data.Labels, data.Height, data.Width, data.Source, names);
    }

    /// <summary>A data folder may name its classes, one per line in label order (e.g. <see cref="OrientationTask"/>'s 40).</summary>
    public const string NamesFile = "labels.txt";

    private static string[] ReadNames(string path)
    {
        var info = new FileInfo(path);
        if (info.Length > 1 << 20) throw new IO.IdxFormatException(path, $"class-name file of {info.Length} bytes; at most 1 MiB");
        var names = File.ReadAllLines(path).Select(l => l.TrimEnd('\r')).ToList();
        while (names.Count > 0 && names[^1].Length == 0) names.RemoveAt(names.Count - 1);
        if (names.Count is 0 or > 256) throw new IO.IdxFormatException(path, $"holds {names.Count} class names; 1 to 256 expected, one per line");
        int empty = names.FindIndex(n => n.Trim().Length == 0);
        if (empty >= 0) throw new IO.IdxFormatException(path, $"line {empty + 1} is empty; every class needs a name");
        return names.ToArray();
    }
}

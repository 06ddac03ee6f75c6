using WhereToEdit.Engine.IO;

namespace WhereToEdit.Engine.Training;

/// <summary>
/// A harder Fashion-MNIST task for a second test bed (issue 10): every image is shown at one of four orientations
/// (0°, 90°, 180°, 270° clockwise) and the class is garment × orientation, 40 classes. The orientation of image i is a
/// fixed function of (seed, split, i), so the data set is a file like any other, and its failures split into
/// "which garment" and "which way up" confusions: groups that plausibly need different units to fix, which the
/// saliency pre-check (`wte saliency`) measures. Random flips must be off when training on it (a flip turns 90° into
/// 270° for symmetric garments).
/// </summary>
public static class OrientationTask
{
    public const int Orientations = 4;

    /// <summary>"T-shirt/top 90°"-style names, label = garment · 4 + orientation.</summary>
    public static string[] Names(IReadOnlyList<string> garments) =>
        garments.SelectMany(g => Enumerable.Range(0, Orientations).Select(o => $"{g} {o * 90}°")).ToArray();

    /// <summary>The orientation (0..3) of image <paramref name="index"/> of a split: SplitMix64 of the seed, split and index.</summary>
    public static int OrientationOf(ulong seed, bool train, int index)
    {
        ulong z = seed * 0x9E3779B97F4A7C15UL + (train ? 0x51UL : 0xA3UL) * 0xBF58476D1CE4E5B9UL + (ulong)index * 0x94D049BB133111EBUL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return (int)((z ^ (z >> 31)) % Orientations);
    }

    /// <summary>Every image rotated by its orientation; labels become garment · 4 + orientation.</summary>
    public static LabeledImages Transform(LabeledImages data, ulong seed, bool train)
    {
        if (data.Height != data.Width) throw new ArgumentException($"{data.Source}: images are {data.Height}×{data.Width}; rotations need square images");
        if (data.Names.Length * Orientations > 256)
            throw new ArgumentException($"{data.Source}: {data.Names.Length} classes × {Orientations} orientations do not fit in IDX byte labels");
        int side = data.Width, size = side * side;
        var pixels = new byte[data.Pixels.Length];
        var labels = new byte[data.Count];
        for (int i = 0; i < data.Count; i++)
        {
            int o = OrientationOf(seed, train, i);
            Rotate(data.Image(i), pixels.AsSpan(i * size, size), side, o);
            labels[i] = (byte)(data.Labels[i] * Orientations + o);
        }
        return new LabeledImages(pixels, labels, side, side, $"{data.Source} (orientation task, seed {seed})", Names(data.Names));
    }

    /// <summary>Rotates a square image clockwise by <paramref name="quarterTurns"/> × 90°.</summary>
    public static void Rotate(ReadOnlySpan<byte> src, Span<byte> dst, int side, int quarterTurns)
    {
        int n = side - 1;
        for (int y = 0; y < side; y++)
            for (int x = 0; x < side; x++)
            {
                // The destination pixel (y, x) comes from the source pixel that a clockwise turn moves there.
                (int sy, int sx) = (quarterTurns & 3) switch
                {
                    0 => (y, x),
                    1 => (n - x, y),
                    2 => (n - y, n - x),
                    _ => (x, n - y),
                };
                dst[y * side + x] = src[sy * side + sx];
            }
    }

    /// <summary>
    /// Writes the task's train and test splits as the four gzipped IDX files of Fashion-MNIST's layout plus
    /// labels.txt, so `wte pretrain --data`, `wte benchmark build --data` and `wte meta-train --idx` read it unchanged.
    /// </summary>
    public static IReadOnlyList<string> Write(LabeledImages train, LabeledImages test, string folder)
    {
        Directory.CreateDirectory(folder);
        var written = new List<string>();
        foreach (var (split, data) in new[] { ("train", train), ("t10k", test) })
        {
            string images = Path.Combine(folder, $"{split}-images-idx3-ubyte.gz"), labels = Path.Combine(folder, $"{split}-labels-idx1-ubyte.gz");
            Evaluation.BroadLocality.WriteIdx(images, IdxReader.ImagesMagic, [data.Count, data.Height, data.Width], data.Pixels);
            Evaluation.BroadLocality.WriteIdx(labels, IdxReader.LabelsMagic, [data.Count], data.Labels);
            written.Add(images);
            written.Add(labels);
        }
        string names = Path.Combine(folder, LabeledImagesIdx.NamesFile);
        AtomicFile.WriteAllText(names, string.Join("\n", train.Names) + "\n");
        written.Add(names);
        return written;
    }
}

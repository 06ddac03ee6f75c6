using System.Buffers.Binary;
using System.IO.Compression;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Training;

namespace WhereToEdit.Engine.Evaluation;

/// <summary>
/// The broad locality set: test images the base model classifies correctly, the same number from every class
/// (a seeded sample per class, listed in test-set order). Unlike the near-boundary "sensitive" set it does not
/// saturate: an edit that flips half of the sensitive images typically flips a few percent of these, so the
/// locality axis can tell methods apart. Stored beside the benchmark's manifest as two gzipped IDX files (images
/// and their true labels; 2000 Fashion-MNIST images take about 0.6 MB), so `wte demo` needs no dataset.
/// </summary>
public static class BroadLocality
{
    public const string ImagesFile = "broad-locality-images-idx3-ubyte.gz";
    public const string LabelsFile = "broad-locality-labels-idx1-ubyte.gz";
    public const int DefaultCount = 2000;

    /// <summary>The selected test-set indices: <paramref name="count"/>/classes correct images per class (fewer where a class has fewer).</summary>
    public static int[] Select(IReadOnlyList<int> labels, IReadOnlyList<int> predicted, int classes, int count, ulong seed)
    {
        if (count < classes) throw new ArgumentException($"broad locality set of {count} images: need at least one per class ({classes})");
        int perClass = count / classes;
        var chosen = new List<int>();
        for (int k = 0; k < classes; k++)
        {
            var right = Enumerable.Range(0, labels.Count).Where(i => labels[i] == k && predicted[i] == k).ToList();
            chosen.AddRange(BenchmarkBuilder.Sample(right, Math.Min(perClass, right.Count), BenchmarkBuilder.SeedFor(seed, "broad-locality", k)));
        }
        chosen.Sort();
        return chosen.ToArray();
    }

    /// <summary>
    /// Classifies <paramref name="test"/>, selects the set and writes its two IDX files into <paramref name="folder"/>
    /// (temp name, fsync, rename). Returns the test indices written.
    /// </summary>
    public static int[] Build(VitModel model, Preprocessing preprocessing, LabeledImages test, string folder, int count = DefaultCount, ulong seed = 0, int batch = 256)
    {
        int classes = model.Config.NumClasses, side = test.Width, n = test.Count;
        if (test.Height != test.Width) throw new ArgumentException($"{test.Source}: images are {test.Height}×{test.Width}; square images expected");
        var logits = BenchmarkBuilder.Classify(model, preprocessing, test.Pixels, n, side, batch);
        var predicted = new int[n];
        for (int i = 0; i < n; i++) predicted[i] = BenchmarkBuilder.ArgmaxAndMargin(logits.AsSpan(i * classes, classes)).Predicted;
        var indices = Select(test.Labels.Select(l => (int)l).ToArray(), predicted, classes, count, seed);
        var pixels = new byte[indices.Length * side * side];
        var labels = new byte[indices.Length];
        for (int j = 0; j < indices.Length; j++)
        {
            test.Image(indices[j]).CopyTo(pixels.AsSpan(j * side * side));
            labels[j] = test.Labels[indices[j]];
        }
        Directory.CreateDirectory(folder);
        WriteIdx(Path.Combine(folder, ImagesFile), IdxReader.ImagesMagic, [indices.Length, side, side], pixels);
        WriteIdx(Path.Combine(folder, LabelsFile), IdxReader.LabelsMagic, [indices.Length], labels);
        return indices;
    }

    /// <summary>True when <paramref name="folder"/> holds a broad locality set.</summary>
    public static bool Exists(string folder) => File.Exists(Path.Combine(folder, ImagesFile));

    /// <summary>
    /// The set's images in the model's preprocessing (null when the folder has none). With <paramref name="limit"/> &gt; 0
    /// only the first ⌊limit/classes⌋ images of every class are kept (a stratified subset, for time-boxed runs).
    /// </summary>
    public static List<float[]>? Load(string folder, Preprocessing preprocessing, int limit = 0)
    {
        if (!Exists(folder)) return null;
        var idx = IdxReader.ReadImages(Path.Combine(folder, ImagesFile));
        var labels = IdxReader.ReadLabels(Path.Combine(folder, LabelsFile));
        if (labels.Count != idx.Count)
            throw new IdxFormatException(labels.Path, $"holds {labels.Count} labels for the {idx.Count} images of {ImagesFile}");
        int classes = 0;
        for (int i = 0; i < labels.Count; i++) classes = Math.Max(classes, labels[i] + 1);
        int perClass = limit > 0 ? Math.Max(1, limit / classes) : int.MaxValue;
        var taken = new int[classes];
        var result = new List<float[]>(idx.Count);
        for (int i = 0; i < idx.Count; i++)
        {
            if (taken[labels[i]]++ >= perClass) continue;
            var dst = new float[preprocessing.OutputLength];
            ImageLoader.Preprocess(new DecodedImage(idx.Cols, idx.Rows, 1, idx.GetImage(i)), preprocessing, dst);
            result.Add(dst);
        }
        return result;
    }

    /// <summary>A gzipped unsigned-byte IDX file, written to a temp name in the target folder, fsynced and renamed.</summary>
    public static void WriteIdx(string path, int magic, int[] dims, byte[] data)
    {
        string tmp = path + ".tmp";
        using (var file = new FileStream(tmp, FileMode.Create, FileAccess.Write))
        {
            using (var gz = new GZipStream(file, CompressionLevel.SmallestSize, leaveOpen: true))
            {
                Span<byte> word = stackalloc byte[4];
                BinaryPrimitives.WriteInt32BigEndian(word, magic);
                gz.Write(word);
                foreach (int d in dims)
                {
                    BinaryPrimitives.WriteInt32BigEndian(word, d);
                    gz.Write(word);
                }
                gz.Write(data);
            }
            file.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
    }
}

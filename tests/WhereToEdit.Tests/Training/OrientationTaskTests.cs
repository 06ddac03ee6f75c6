using WhereToEdit.Engine.Training;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Training;

/// <summary>The garment × orientation task of the second test bed: rotations, labels, names and the data folder it writes.</summary>
public sealed class OrientationTaskTests
{
    [Fact]
    public void Quarter_turns_are_clockwise_and_four_make_the_identity()
    {
        // 3×3: a marker in the top-left corner moves top-right, bottom-right, bottom-left.
        byte[] image = [9, 0, 0, 0, 0, 0, 0, 0, 0];
        var dst = new byte[9];
        OrientationTask.Rotate(image, dst, 3, 1);
        Assert.Equal(9, dst[2]);
        OrientationTask.Rotate(image, dst, 3, 2);
        Assert.Equal(9, dst[8]);
        OrientationTask.Rotate(image, dst, 3, 3);
        Assert.Equal(9, dst[6]);
        var rng = new Random(3);
        var x = new byte[16];
        rng.NextBytes(x);
        byte[] a = (byte[])x.Clone(), b = new byte[16];
        for (int k = 0; k < 4; k++) { OrientationTask.Rotate(a, b, 4, 1); (a, b) = (b, a); }
        Assert.Equal(x, a);
    }

    [Fact]
    public void Labels_are_garment_times_four_plus_orientation_and_the_folder_reads_back()
    {
        var rng = new Random(1);
        int n = 200, side = 5;
        var pixels = new byte[n * side * side];
        rng.NextBytes(pixels);
        var labels = Enumerable.Range(0, n).Select(i => (byte)(i % 10)).ToArray();
        var train = OrientationTask.Transform(new LabeledImages(pixels, labels, side, side, "synthetic"), seed: 7, train: true);
        Assert.Equal(40, train.Names.Length);
        Assert.Equal("Trouser 90°", train.Names[1 * 4 + 1]);
        var seen = new int[4];
        var rotated = new byte[side * side];
        for (int i = 0; i < n; i++)
        {
            int o = OrientationTask.OrientationOf(7, true, i);
            seen[o]++;
            Assert.Equal(labels[i] * 4 + o, train.Labels[i]);
            OrientationTask.Rotate(pixels.AsSpan(i * side * side, side * side), rotated, side, o);
            Assert.Equal(rotated, train.Image(i).ToArray());
        }
        Assert.All(seen, c => Assert.InRange(c, 30, 70));   // every orientation is drawn about equally often
        Assert.NotEqual(Enumerable.Range(0, n).Select(i => OrientationTask.OrientationOf(7, true, i)), Enumerable.Range(0, n).Select(i => OrientationTask.OrientationOf(8, true, i)));

        using var dir = new TempDir();
        var test = OrientationTask.Transform(new LabeledImages(pixels[..(50 * side * side)], labels[..50], side, side, "synthetic"), seed: 7, train: false);
        OrientationTask.Write(train, test, dir.Path);
        var back = LabeledImagesIdx.FashionMnist(dir.Path, train: true);
        Assert.Equal(train.Labels, back.Labels);
        Assert.Equal(train.Pixels, back.Pixels);
        Assert.Equal(train.Names, back.Names);
        Assert.Equal(50, LabeledImagesIdx.FashionMnist(dir.Path, train: false).Count);

        File.WriteAllText(Path.Combine(dir.Path, LabeledImagesIdx.NamesFile), "a\n\nb\n");
        var e = Assert.ThrowsAny<Exception>(() => LabeledImagesIdx.FashionMnist(dir.Path, train: true));
        Assert.Contains("labels.txt", e.Message);
        Assert.Contains("line 2 is empty", e.Message);
    }
}

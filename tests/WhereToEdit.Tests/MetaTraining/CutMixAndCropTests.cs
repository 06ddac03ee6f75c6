using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.MetaTraining;
using WhereToEdit.Engine.Tensors;
using Xunit;

namespace WhereToEdit.Tests.MetaTraining;

/// <summary>CutMix box rules on the patch grid and the RandomResizedCrop transform.</summary>
public sealed class CutMixAndCropTests
{
    [Theory]
    [InlineData(14, 3, 8)]
    [InlineData(7, 2, 4)]
    [InlineData(4, 1, 2)]
    [InlineData(16, 3, 9)]
    [InlineData(24, 5, 14)]
    [InlineData(1, 1, 1)]
    public void Box_size_range_scales_with_the_grid(int grid, int lo, int hi) => Assert.Equal((lo, hi), CutMix.SizeRange(grid));

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Boxes_stay_inside_the_grid_with_the_right_corner_rule(bool referenceBounds)
    {
        const int grid = 14;
        var rng = new Rng(1);
        var sizes = new HashSet<int>();
        bool touchesLastRow = false, touchesLastColumn = false, touchesTop = false;
        for (int i = 0; i < 20000; i++)
        {
            var box = CutMix.Sample(rng, grid, referenceBounds);
            Assert.InRange(box.Height, 3, 8);
            Assert.InRange(box.Width, 3, 8);
            sizes.Add(box.Height); sizes.Add(box.Width);
            Assert.True(box.Top >= 0 && box.Left >= 0 && box.Top + box.Height <= grid && box.Left + box.Width <= grid, $"{box} leaves the grid");
            touchesLastRow |= box.Top + box.Height == grid;
            touchesLastColumn |= box.Left + box.Width == grid;
            touchesTop |= box.Top == 0;
        }
        Assert.Equal(6, sizes.Count);   // every size 3..8 occurs
        Assert.True(touchesTop);
        // The correct rule reaches the last row and column; the reference's randint(0, G − h) never does.
        Assert.Equal(!referenceBounds, touchesLastRow);
        Assert.Equal(!referenceBounds, touchesLastColumn);
    }

    [Fact]
    public void Boxes_are_a_function_of_the_seed() =>
        Assert.Equal(Enumerable.Range(0, 5).Select(_ => CutMix.Sample(new Rng(9), 14)), Enumerable.Range(0, 5).Select(_ => CutMix.Sample(new Rng(9), 14)));

    [Fact]
    public void Apply_takes_the_donor_inside_the_box_only()
    {
        const int c = 2, size = 12, patch = 3;
        var baseImage = Enumerable.Repeat(1f, c * size * size).ToArray();
        var donor = Enumerable.Repeat(2f, c * size * size).ToArray();
        var mixed = new float[baseImage.Length];
        var box = new CutMixBox(1, 2, 2, 1);   // rows 3..8, columns 6..8
        CutMix.Apply(baseImage, donor, mixed, c, size, patch, box);
        for (int k = 0; k < c; k++)
            for (int y = 0; y < size; y++)
                for (int x = 0; x < size; x++)
                    Assert.Equal(y is >= 3 and < 9 && x is >= 6 and < 9 ? 2f : 1f, mixed[(k * size + y) * size + x]);
        Assert.Throws<ArgumentException>(() => CutMix.Apply(baseImage, donor, mixed, c, size, patch, new CutMixBox(3, 0, 2, 1)));
    }

    [Fact]
    public void Crop_windows_follow_torchvision_rules()
    {
        var crop = new RandomResizedCrop(224).Validate();
        var rng = new Rng(4);
        for (int i = 0; i < 5000; i++)
        {
            var (w, h) = (rng.NextInt(40, 400), rng.NextInt(40, 400));
            var box = crop.Sample(rng, w, h);
            Assert.True(box.Top >= 0 && box.Left >= 0 && box.Top + box.Height <= h && box.Left + box.Width <= w, $"{box} outside {w}×{h}");
            double area = (double)box.Width * box.Height / (w * h), ratio = (double)box.Width / box.Height;
            if (area < 0.2 || ratio < 0.6 || ratio > 1.6)   // beyond rounding: only the fallback (centre crop, ratio clamped)
            {
                Assert.Equal((h - box.Height) / 2, box.Top);
                Assert.Equal((w - box.Width) / 2, box.Left);
            }
        }
        // An extreme strip always falls back: full height, width = round(h·4/3), centred.
        var strip = crop.Sample(new Rng(1), 1000, 10);
        Assert.Equal(new CropBox(0, (1000 - 13) / 2, 10, 13), strip);
    }

    [Fact]
    public void Crop_apply_resizes_and_normalises_to_chw()
    {
        // A 28×28 gray ramp, cropped and resized UP to 56 (the IDX path): values stay within the crop's range.
        var pixels = new byte[28 * 28];
        for (int y = 0; y < 28; y++)
            for (int x = 0; x < 28; x++) pixels[y * 28 + x] = (byte)(x * 9);
        var image = new DecodedImage(28, 28, 1, pixels);
        var crop = new RandomResizedCrop(56);
        var dst = new float[56 * 56];
        crop.Apply(image, new CropBox(2, 10, 14, 14), [0.5f], [0.5f], dst);
        float lo = (10 * 9 / 255f - 0.5f) / 0.5f, hi = (23 * 9 / 255f - 0.5f) / 0.5f;
        Assert.All(dst, v => Assert.InRange(v, lo - 1e-6f, hi + 1e-6f));
        Assert.True(dst[0] < dst[55]);   // left to right ramp
        // A constant RGB image gives the constant per channel.
        var rgb = new DecodedImage(5, 7, 3, Enumerable.Range(0, 35).SelectMany(_ => new byte[] { 255, 0, 51 }).ToArray());
        var out3 = new float[3 * 4 * 4];
        new RandomResizedCrop(4).Apply(rgb, new CropBox(1, 1, 5, 3), [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f], out3);
        Assert.All(out3.AsSpan(0, 16).ToArray(), v => Assert.Equal(1f, v));
        Assert.All(out3.AsSpan(16, 16).ToArray(), v => Assert.Equal(-1f, v));
        Assert.All(out3.AsSpan(32, 16).ToArray(), v => Assert.Equal(-0.6f, v, 1e-6f));
        Assert.Throws<ArgumentException>(() => crop.Apply(image, new CropBox(20, 0, 10, 10), [0.5f], [0.5f], dst));
    }
}

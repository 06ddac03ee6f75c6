using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.Tensors;
using Xunit;

namespace WhereToEdit.Tests.Evaluation;

public sealed class StyleFilterTests
{
    private static byte[] Step(int w, int h, int edge, byte left, byte right, bool vertical = true)
    {
        var a = new byte[w * h];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                a[y * w + x] = (vertical ? x : y) < edge ? left : right;
        return a;
    }

    private static double Variance(byte[] a)
    {
        double mean = a.Average(v => (double)v);
        return a.Average(v => (v - mean) * (v - mean));
    }

    [Theory]
    [InlineData(1, true)]
    [InlineData(2, true)]
    [InlineData(3, false)]
    public void Kuwahara_preserves_a_step_edge_exactly(int radius, bool vertical)
    {
        var step = Step(16, 12, 7, 40, 210, vertical);
        Assert.Equal(step, StyleFilters.Kuwahara(step, 16, 12, radius));
    }

    [Fact]
    public void Kuwahara_flattens_noise_but_keeps_the_mean()
    {
        var rng = new System.Random(7);
        var noisy = new byte[28 * 28];
        for (int i = 0; i < noisy.Length; i++) noisy[i] = (byte)(128 + rng.Next(-40, 41));
        var smooth = StyleFilters.Kuwahara(noisy, 28, 28, 2);
        Assert.True(Variance(smooth) < Variance(noisy) / 3, $"variance {Variance(noisy):F1} → {Variance(smooth):F1}");
        Assert.InRange(smooth.Average(v => (double)v), 118, 138);
    }

    [Fact]
    public void Kuwahara_picks_the_flat_side_of_a_noisy_edge()
    {
        // Left half flat 30, right half noisy around 200: pixels next to the edge on the left must stay 30.
        var rng = new System.Random(3);
        var a = Step(20, 20, 10, 30, 200);
        for (int y = 0; y < 20; y++)
            for (int x = 10; x < 20; x++) a[y * 20 + x] = (byte)(200 + rng.Next(-30, 31));
        var k = StyleFilters.Kuwahara(a, 20, 20, 2);
        for (int y = 0; y < 20; y++)
            for (int x = 0; x < 10; x++) Assert.Equal(30, k[y * 20 + x]);
        for (int y = 0; y < 20; y++)
            for (int x = 10; x < 20; x++) Assert.InRange(k[y * 20 + x], 160, 240);
    }

    [Fact]
    public void Kuwahara_handles_images_smaller_than_its_window_and_checks_its_arguments()
    {
        byte[] tiny = [10, 20, 30, 40];
        var k = StyleFilters.Kuwahara(tiny, 2, 2, 3);
        Assert.Equal(4, k.Length);
        Assert.All(k, v => Assert.InRange(v, (byte)10, (byte)40));
        Assert.Equal(new byte[] { 77 }, StyleFilters.Kuwahara([77], 1, 1, 2));
        Assert.Throws<ArgumentException>(() => StyleFilters.Kuwahara(tiny, 2, 2, 0));
        Assert.Throws<ArgumentException>(() => StyleFilters.Kuwahara(tiny, 3, 2, 1));
    }

    [Fact]
    public void Quantize_maps_onto_evenly_spaced_levels_and_is_idempotent()
    {
        var all = Enumerable.Range(0, 256).Select(v => (byte)v).ToArray();
        Assert.Equal(new byte[] { 0, 255 }, StyleFilters.Quantize(all, 2).Distinct().Order().ToArray());
        var six = StyleFilters.Quantize(all, 6);
        Assert.Equal(new byte[] { 0, 51, 102, 153, 204, 255 }, six.Distinct().Order().ToArray());
        Assert.Equal(six, StyleFilters.Quantize(six, 6));
        for (int v = 0; v < 256; v++) Assert.True(Math.Abs(six[v] - v) <= 26, $"{v} → {six[v]}");
        Assert.Equal(all, StyleFilters.Quantize(all, 256));
        Assert.Throws<ArgumentException>(() => StyleFilters.Quantize(all, 1));
    }

    [Fact]
    public void Oil_painting_is_kuwahara_then_quantisation()
    {
        var rng = new System.Random(5);
        var img = new byte[28 * 28];
        for (int i = 0; i < img.Length; i++) img[i] = (byte)rng.Next(256);
        var style = new OilPaintingStyle(Radius: 2, Levels: 5);
        var oil = StyleFilters.OilPainting(img, 28, 28, style);
        Assert.Equal(StyleFilters.Quantize(StyleFilters.Kuwahara(img, 28, 28, 2), 5), oil);
        Assert.True(oil.Distinct().Count() <= 5);
        Assert.Throws<ArgumentException>(() => StyleFilters.OilPainting(img, 28, 28, new OilPaintingStyle(Radius: 0)));
    }

    private static readonly Spotlight Centered = new(0.5, 0.5, 0.3, 0.3, 0.15, 2.0, 0.1, 0.1);

    [Fact]
    public void Spotlight_is_brighter_at_the_spot_than_far_away()
    {
        var gray = Enumerable.Repeat((byte)180, 28 * 28).ToArray();
        var lit = StyleFilters.ApplySpotlight(gray, 28, 28, Centered);
        int spot = lit[14 * 28 + 14], corner = lit[0], farCorner = lit[27 * 28 + 27];
        Assert.True(spot > 2 * corner && spot > 2 * farCorner, $"spot {spot}, corners {corner} {farCorner}");
        // Along the beam (angle 0.3 rad) the light falls off more slowly than across it.
        double along = StyleFilters.LightAt(Centered, 14 + 6, 14 + 2, 28, 28), across = StyleFilters.LightAt(Centered, 14 - 2, 14 + 6, 28, 28);
        Assert.True(along > across, $"along {along:F3} across {across:F3}");
        // White under the spot stays (nearly) white; gamma darkens mid-tones; black gets only haze.
        var white = StyleFilters.ApplySpotlight(Enumerable.Repeat((byte)255, 28 * 28).ToArray(), 28, 28, Centered);
        Assert.True(white[13 * 28 + 13] >= 250, $"white at the spot: {white[13 * 28 + 13]}");
        Assert.True(lit[13 * 28 + 13] < 180);
        var black = StyleFilters.ApplySpotlight(new byte[28 * 28], 28, 28, Centered);
        Assert.All(black, v => Assert.InRange(v, (byte)0, (byte)26));
    }

    [Fact]
    public void Drawn_spotlights_stay_in_range_and_in_0_255()
    {
        var style = new SpotlightStyle();
        var rng = new System.Random(11);
        var img = new byte[28 * 28];
        for (int i = 0; i < img.Length; i++) img[i] = (byte)rng.Next(256);
        for (ulong seed = 0; seed < 50; seed++)
        {
            var s = style.Draw(new Rng(seed));
            Assert.InRange(s.CenterX, style.CenterMin, style.CenterMax);
            Assert.InRange(s.Gamma, style.GammaMin, style.GammaMax);
            Assert.InRange(s.Ambient, style.AmbientMin, style.AmbientMax);
            Assert.True(s.SigmaAcross < s.SigmaAlong);
            for (int y = 0; y < 28; y += 3)
                for (int x = 0; x < 28; x += 3)
                    Assert.InRange(StyleFilters.LightAt(s, x, y, 28, 28), s.Ambient, 1.0);
            // Never brighter than the input lit by full light plus haze: 255·L·(haze + (1 − haze)·v^γ) ≤ 255.
            var lit = StyleFilters.ApplySpotlight(img, 28, 28, s);
            var white = StyleFilters.ApplySpotlight(Enumerable.Repeat((byte)255, 28 * 28).ToArray(), 28, 28, s);
            for (int i = 0; i < lit.Length; i++) Assert.True(lit[i] <= white[i]);
            Assert.Equal(lit, StyleFilters.ApplySpotlight(img, 28, 28, style.Draw(new Rng(seed))));
        }
        Assert.Throws<ArgumentException>(() => StyleFilters.ApplySpotlight(img, 28, 28, Centered with { SigmaAcross = 0 }));
        Assert.Throws<ArgumentException>(() => new SpotlightStyle { GammaMin = 3, GammaMax = 2 }.Validate());
    }
}

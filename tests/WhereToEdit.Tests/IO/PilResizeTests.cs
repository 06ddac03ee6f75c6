using WhereToEdit.Engine.IO;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.IO;

/// <summary>
/// Compares <see cref="PilResize"/> with Pillow's output stored by tests/reference/make_resize_fixture.py
/// (see tests/reference/README-resize.md). Differences are in 8-bit units (0–255).
/// </summary>
public class PilResizeTests(ITestOutputHelper output)
{
    /// <summary>Allowed |Δ| of the float-precision path against Pillow's 8-bit output (see README-resize.md).</summary>
    private const double FloatBound = 1.05;

    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    private static readonly (int W, int H)[] Sizes = [(30, 23), (17, 40), (66, 51), (61, 30), (40, 47), (100, 9)];

    private static (double Mean, double Max) Diff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        Assert.Equal(a.Length, b.Length);
        double sum = 0, max = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double d = Math.Abs(a[i] - b[i]);
            sum += d;
            max = Math.Max(max, d);
        }
        return (sum / a.Length, max);
    }

    [Theory]
    [InlineData("rgb", 3)]
    [InlineData("gray", 1)]
    public void MatchesPillow(string kind, int channels)
    {
        var fx = SafeTensors.Read(Fixture("resize_pil.safetensors"));
        var img = new ImageLoader().Decode(Fixture($"resize_{kind}_61x47.png"), channels);
        Assert.Equal((61, 47, channels), (img.Width, img.Height, img.Channels));
        Assert.Equal(fx[$"{kind}/input"].Data, img.Pixels.Select(b => (float)b).ToArray()); // decoding is exact

        double worstExact = 0, worstFloat = 0;
        output.WriteLine($"Pillow {fx.Metadata["pillow"]}, {kind} 61x47, differences in 0-255 units (uint8 emulation | float):");
        foreach (var filter in new[] { Interpolation.Bilinear, Interpolation.Bicubic })
        {
            string fname = filter.ToString().ToLowerInvariant();
            foreach (var (w, h) in Sizes)
            {
                var want = fx[$"{kind}/{fname}/{w}x{h}"];
                Assert.Equal([h, w, channels], want.Shape);
                var exact = PilResize.ResizeUint8(img.Pixels, 61, 47, channels, w, h, filter).Select(b => (float)b).ToArray();
                var flt = PilResize.ResizeFloat(img.Pixels, 61, 47, channels, w, h, filter);
                var (em, ex) = Diff(exact, want.Data);
                var (fm, fmax) = Diff(flt, want.Data);
                worstExact = Math.Max(worstExact, ex);
                worstFloat = Math.Max(worstFloat, fmax);
                output.WriteLine($"  {fname,-8} {w,3}x{h,-3} uint8 mean {em:F4} max {ex:F3} | float mean {fm:F4} max {fmax:F3}");
            }
        }
        output.WriteLine($"  worst: uint8 {worstExact:F3}, float {worstFloat:F3}");
        Assert.Equal(0, worstExact);   // bit-exact emulation of PIL's 8-bit path (the default)
        // Float mode skips PIL's two roundings: |Δ| ≤ 0.5 (final) + 0.5·Σ|w_vertical| (intermediate), and bicubic's
        // negative lobes make Σ|w| slightly above 1, so the bound is ≈ 1.05 units, not 1 (measured worst 1.013).
        Assert.True(worstFloat <= FloatBound, $"float resize differs from Pillow by {worstFloat} units");
    }

    [Theory]
    [InlineData("rgb", 3)]
    [InlineData("gray", 1)]
    public void PipelineMatchesTorchvisionResizeAndCenterCrop(string kind, int channels)
    {
        var fx = SafeTensors.Read(Fixture("resize_pil.safetensors"));
        var loader = new ImageLoader();
        foreach (var filter in new[] { Interpolation.Bilinear, Interpolation.Bicubic })
        {
            var want = fx[$"{kind}/pipeline/{filter.ToString().ToLowerInvariant()}_s36_c32"];
            var mean = Enumerable.Repeat(0.5f, channels).ToArray();
            var std = Enumerable.Repeat(0.25f, channels).ToArray();
            var pre = new Preprocessing(ResizeMode.ShorterSide, 36, 32, filter, mean, std);
            var chw = loader.Load(Fixture($"resize_{kind}_61x47.png"), pre);
            // Expected: HWC uint8 → /255 → (x − 0.5)/0.25, CHW; float32 arithmetic as torchvision's ToTensor + Normalize.
            double max = 0;
            for (int c = 0; c < channels; c++)
            for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++)
            {
                float v = want.Data[(y * 32 + x) * channels + c];
                float expected = (v / 255f - 0.5f) / 0.25f;
                max = Math.Max(max, Math.Abs(expected - chw[(c * 32 + y) * 32 + x]));
            }
            output.WriteLine($"{kind} {filter}: shorter side 36 → crop 32, max |Δ| after normalisation {max:G3}");
            Assert.Equal(0, max);

            var fl = loader.Load(Fixture($"resize_{kind}_61x47.png"), pre with { Precision = ResamplePrecision.Float });
            double fmax = 0;
            for (int i = 0; i < fl.Length; i++) fmax = Math.Max(fmax, Math.Abs(fl[i] - chw[i]) * 0.25 * 255);
            output.WriteLine($"{kind} {filter}: float-precision pipeline max |Δ| {fmax:F3} units");
            Assert.True(fmax <= FloatBound, $"float pipeline differs by {fmax} units");
        }
    }

    [Fact]
    public void ShorterSideAndCropArithmeticFollowTorchvision()
    {
        Assert.Equal((256, 341), PilResize.ShorterSideSize(375, 500, 256)); // int(256·500/375) = 341
        Assert.Equal((341, 256), PilResize.ShorterSideSize(500, 375, 256));
        Assert.Equal((248, 248), PilResize.ShorterSideSize(640, 640, 248));
        Assert.Equal(58, PilResize.CenterCropOffset(341, 224)); // round(58.5) = 58 (half to even)
        Assert.Equal(2, PilResize.CenterCropOffset(227, 224));   // round(1.5) = 2
        Assert.Equal(0, PilResize.CenterCropOffset(225, 224));   // round(0.5) = 0
        Assert.Equal(-1, PilResize.CenterCropOffset(221, 224));  // pad (224−221)//2 = 1 on the leading side
    }

    [Fact]
    public void IdentityResizeCopiesAndCropSmallerThanImagePads()
    {
        var px = Enumerable.Range(0, 4 * 3).Select(i => (byte)(i * 20)).ToArray();
        Assert.Equal(px, PilResize.ResizeUint8(px, 4, 3, 1, 4, 3, Interpolation.Bicubic));
        // 2×2 image, direct resize to 2, crop 4: zero padding (value 0 → (0 − mean)/std) around it.
        var img = new DecodedImage(2, 2, 1, [255, 255, 255, 255]);
        var dst = new float[16];
        ImageLoader.Preprocess(img, new Preprocessing(ResizeMode.Direct, 2, 4, Interpolation.Bilinear, [0.5f], [0.5f]), dst);
        Assert.Equal([-1f, -1, -1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1, -1, -1, -1], dst);
    }
}

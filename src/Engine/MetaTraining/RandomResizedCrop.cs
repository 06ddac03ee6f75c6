using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.MetaTraining;

/// <summary>A crop window in pixels.</summary>
internal readonly record struct CropBox(int Top, int Left, int Height, int Width);

/// <summary>
/// The meta-training transform: torchvision's RandomResizedCrop(size, scale, ratio) on a PIL image, then ToTensor and
/// Normalize(mean, std). The window is drawn as torchvision does — up to 10 tries of area·U(scale) and exp(U(log ratio)),
/// w = round(√(area·ratio)), h = round(√(area/ratio)) (round half to even, as Python), accepted when it fits, then
/// top = randint(0, H − h + 1), left = randint(0, W − w + 1); otherwise the centre crop with the ratio clamped — but every
/// draw comes from our seeded <see cref="Rng"/>, not torch's generator. The window is cut out and resized to
/// size×size with PIL's antialiased bilinear filter (8-bit arithmetic, bit-exact with PIL).
/// Small inputs (28×28 IDX images) take exactly the same path: the window covers 25–100 % of the 28×28 image and is
/// resized UP to the model's size (e.g. 224, or 28 for a 28-pixel model), so no separate resize to the model's size
/// happens before the crop.
/// </summary>
internal sealed record RandomResizedCrop(int Size, double ScaleMin = 0.25, double ScaleMax = 1.0, double RatioMin = 3.0 / 4.0, double RatioMax = 4.0 / 3.0)
{
    public RandomResizedCrop Validate()
    {
        if (Size <= 0) throw new ArgumentOutOfRangeException(nameof(Size), Size, "crop size must be positive");
        if (!(ScaleMin > 0 && ScaleMin <= ScaleMax && ScaleMax <= 1)) throw new ArgumentException($"crop scale range ({ScaleMin}, {ScaleMax}) must satisfy 0 < min ≤ max ≤ 1");
        if (!(RatioMin > 0 && RatioMin <= RatioMax && double.IsFinite(RatioMax))) throw new ArgumentException($"crop ratio range ({RatioMin}, {RatioMax}) must satisfy 0 < min ≤ max");
        return this;
    }

    /// <summary>Draws a crop window for a <paramref name="width"/>×<paramref name="height"/> image.</summary>
    public CropBox Sample(Rng rng, int width, int height)
    {
        ArgumentNullException.ThrowIfNull(rng);
        if (width <= 0 || height <= 0) throw new ArgumentException($"image size {width}×{height} must be positive");
        double area = (double)width * height;
        double logLo = Math.Log(RatioMin), logHi = Math.Log(RatioMax);
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double target = area * (ScaleMin + (ScaleMax - ScaleMin) * rng.NextDouble());
            double ratio = Math.Exp(logLo + (logHi - logLo) * rng.NextDouble());
            int w = (int)Math.Round(Math.Sqrt(target * ratio), MidpointRounding.ToEven);
            int h = (int)Math.Round(Math.Sqrt(target / ratio), MidpointRounding.ToEven);
            if (w > 0 && w <= width && h > 0 && h <= height)
                return new CropBox(rng.NextInt(0, height - h + 1), rng.NextInt(0, width - w + 1), h, w);
        }
        double inRatio = (double)width / height;
        int cw, ch;
        if (inRatio < RatioMin) { cw = width; ch = (int)Math.Round(cw / RatioMin, MidpointRounding.ToEven); }
        else if (inRatio > RatioMax) { ch = height; cw = (int)Math.Round(ch * RatioMax, MidpointRounding.ToEven); }
        else { cw = width; ch = height; }
        return new CropBox((height - ch) / 2, (width - cw) / 2, ch, cw);
    }

    /// <summary>
    /// Cuts <paramref name="box"/> out of <paramref name="image"/>, resizes it to Size×Size (PIL bilinear) and writes
    /// (v/255 − mean)/std in CHW order into <paramref name="destination"/> (channels·Size·Size floats).
    /// </summary>
    public void Apply(DecodedImage image, CropBox box, ReadOnlySpan<float> mean, ReadOnlySpan<float> std, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(image);
        int c = image.Channels, s = Size;
        if (mean.Length != c || std.Length != c) throw new ArgumentException($"normalisation has {mean.Length} means and {std.Length} stds for a {c}-channel image");
        if (destination.Length != c * s * s) throw new ArgumentException($"destination holds {destination.Length} floats, {c}×{s}×{s} needed");
        if (box.Top < 0 || box.Left < 0 || box.Height <= 0 || box.Width <= 0 || box.Top + box.Height > image.Height || box.Left + box.Width > image.Width)
            throw new ArgumentException($"crop {box} is outside the {image.Width}×{image.Height} image");
        var crop = new byte[box.Height * box.Width * c];
        for (int y = 0; y < box.Height; y++)
            image.Pixels.AsSpan(((box.Top + y) * image.Width + box.Left) * c, box.Width * c).CopyTo(crop.AsSpan(y * box.Width * c));
        var resized = PilResize.ResizeRegion(crop, box.Width, box.Height, c, s, s, Interpolation.Bilinear, ResamplePrecision.PilUint8, 0, 0, s, s);
        int plane = s * s;
        for (int k = 0; k < c; k++)
        {
            float m = mean[k], sd = std[k];
            var dst = destination.Slice(k * plane, plane);
            for (int i = 0; i < plane; i++) dst[i] = (resized[i * c + k] / 255f - m) / sd;
        }
    }
}

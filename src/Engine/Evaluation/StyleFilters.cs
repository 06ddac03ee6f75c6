using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Evaluation;

/// <summary>The oil-painting rendering: a Kuwahara filter, then intensities quantised to a few levels.</summary>
/// <param name="Radius">Kuwahara radius r: four (r+1)×(r+1) quadrants around each pixel (2 → 3×3 quadrants in a 5×5 window).</param>
/// <param name="Levels">Grey levels kept after filtering (evenly spaced over 0–255, both ends included).</param>
public sealed record OilPaintingStyle(int Radius = 2, int Levels = 6)
{
    public OilPaintingStyle Validate()
    {
        if (Radius < 1) throw new ArgumentException($"oil painting: radius {Radius} must be at least 1");
        if (Levels is < 2 or > 256) throw new ArgumentException($"oil painting: levels {Levels} must be in 2–256");
        return this;
    }
}

/// <summary>
/// The ranges the spotlight rendering draws its per-image parameters from (uniformly). Sizes are fractions of the
/// image side.
/// </summary>
public sealed record SpotlightStyle
{
    /// <summary>The spot's centre, per axis, as a fraction of the side.</summary>
    public double CenterMin { get; init; } = 0.1;
    public double CenterMax { get; init; } = 0.9;

    /// <summary>Fall-off (Gaussian σ) along the beam's long axis, as a fraction of the side.</summary>
    public double SigmaMin { get; init; } = 0.3;
    public double SigmaMax { get; init; } = 0.5;

    /// <summary>σ across the beam ÷ σ along it: below 1 gives the directional, elongated pool of light.</summary>
    public double AspectMin { get; init; } = 0.35;
    public double AspectMax { get; init; } = 0.6;

    /// <summary>Gamma on the object's intensities (above 1 darkens mid-tones, as stage light does).</summary>
    public double GammaMin { get; init; } = 1.6;
    public double GammaMax { get; init; } = 2.4;

    /// <summary>Light that reaches everywhere, as a fraction of the spot's (low: the scene is dark away from the spot).</summary>
    public double AmbientMin { get; init; } = 0.05;
    public double AmbientMax { get; init; } = 0.15;

    /// <summary>Light scattered by haze: makes the pool of light visible on the black background.</summary>
    public double HazeMin { get; init; } = 0.08;
    public double HazeMax { get; init; } = 0.2;

    public SpotlightStyle Validate()
    {
        void Range(string name, double lo, double hi, double min, double max)
        {
            if (!(lo >= min && lo <= hi && hi <= max)) throw new ArgumentException($"spotlight: {name} range [{lo}, {hi}] must lie in [{min}, {max}] with min ≤ max");
        }
        Range("centre", CenterMin, CenterMax, 0, 1);
        Range("sigma", SigmaMin, SigmaMax, 1e-3, 10);
        Range("aspect", AspectMin, AspectMax, 1e-3, 1);
        Range("gamma", GammaMin, GammaMax, 0.1, 10);
        Range("ambient", AmbientMin, AmbientMax, 0, 1);
        Range("haze", HazeMin, HazeMax, 0, 1);
        return this;
    }

    /// <summary>One image's spotlight drawn from these ranges.</summary>
    public Spotlight Draw(Rng rng)
    {
        ArgumentNullException.ThrowIfNull(rng);
        double U(double lo, double hi) => lo + (hi - lo) * rng.NextDouble();
        double cx = U(CenterMin, CenterMax), cy = U(CenterMin, CenterMax);
        double angle = U(0, Math.PI);
        double sigma = U(SigmaMin, SigmaMax);
        double aspect = U(AspectMin, AspectMax);
        return new Spotlight(cx, cy, angle, sigma, sigma * aspect, U(GammaMin, GammaMax), U(AmbientMin, AmbientMax), U(HazeMin, HazeMax));
    }
}

/// <summary>
/// One spotlight: an elliptical Gaussian pool of light centred at (<paramref name="CenterX"/>, <paramref name="CenterY"/>)
/// (fractions of width and height), long axis at <paramref name="Angle"/> radians, σ along and across it as fractions
/// of the mean side. Light L = ambient + (1 − ambient)·exp(−½(u²/σ_along² + v²/σ_across²)); a pixel v becomes
/// 255·clamp(L·(haze + (1 − haze)·(v/255)^γ), 0, 1), rounded.
/// </summary>
public readonly record struct Spotlight(double CenterX, double CenterY, double Angle, double SigmaAlong, double SigmaAcross,
                                        double Gamma, double Ambient, double Haze);

/// <summary>
/// The style shifts of the benchmark's style subsets (analogues of the paper's AI-generated oil-painting and
/// stage-lighting images), on 8-bit single-channel images stored row-major. Pure functions: same input, same output.
/// </summary>
internal static class StyleFilters
{
    /// <summary>
    /// Kuwahara filter: each pixel becomes the mean of whichever of its four (r+1)×(r+1) quadrants (up-left, up-right,
    /// down-left, down-right; each includes the pixel) has the lowest variance; ties go to the first in that order.
    /// Only pixels inside the image count (quadrants shrink at the border). Means are rounded half away from zero.
    /// Edges survive (one quadrant always lies on the pixel's side of an edge); texture and noise flatten.
    /// </summary>
    public static byte[] Kuwahara(ReadOnlySpan<byte> src, int width, int height, int radius)
    {
        CheckImage(src, width, height);
        if (radius < 1) throw new ArgumentException($"Kuwahara radius {radius} must be at least 1");
        // Summed-area tables of v and v² make every quadrant O(1).
        int sw = width + 1;
        var sum = new long[(height + 1) * sw];
        var sq = new long[(height + 1) * sw];
        for (int y = 0; y < height; y++)
        {
            long rowSum = 0, rowSq = 0;
            for (int x = 0; x < width; x++)
            {
                int v = src[y * width + x];
                rowSum += v;
                rowSq += v * v;
                sum[(y + 1) * sw + x + 1] = sum[y * sw + x + 1] + rowSum;
                sq[(y + 1) * sw + x + 1] = sq[y * sw + x + 1] + rowSq;
            }
        }
        long Box(long[] t, int x0, int y0, int x1, int y1) => t[y1 * sw + x1] - t[y0 * sw + x1] - t[y1 * sw + x0] + t[y0 * sw + x0];

        var dst = new byte[width * height];
        for (int y = 0; y < height; y++)
        {
            for (int x = 0; x < width; x++)
            {
                double bestVar = double.PositiveInfinity, bestMean = 0;
                for (int q = 0; q < 4; q++)
                {
                    // Inclusive pixel ranges of the quadrant, clipped to the image; half-open in the tables.
                    int x0 = (q & 1) == 0 ? Math.Max(x - radius, 0) : x;
                    int x1 = (q & 1) == 0 ? x : Math.Min(x + radius, width - 1);
                    int y0 = (q & 2) == 0 ? Math.Max(y - radius, 0) : y;
                    int y1 = (q & 2) == 0 ? y : Math.Min(y + radius, height - 1);
                    long n = (long)(x1 - x0 + 1) * (y1 - y0 + 1);
                    long s = Box(sum, x0, y0, x1 + 1, y1 + 1), s2 = Box(sq, x0, y0, x1 + 1, y1 + 1);
                    // n²·variance, exact in integers, compared across quadrants of different sizes via /n².
                    double variance = (double)(n * s2 - s * s) / ((double)n * n);
                    if (variance < bestVar)
                    {
                        bestVar = variance;
                        bestMean = (double)s / n;
                    }
                }
                dst[y * width + x] = (byte)Math.Clamp(Math.Round(bestMean, MidpointRounding.AwayFromZero), 0, 255);
            }
        }
        return dst;
    }

    /// <summary>Maps every value to the nearest of <paramref name="levels"/> evenly spaced grey levels (0 and 255 included).</summary>
    public static byte[] Quantize(ReadOnlySpan<byte> src, int levels)
    {
        if (levels is < 2 or > 256) throw new ArgumentException($"quantisation levels {levels} must be in 2–256");
        var table = new byte[256];
        for (int v = 0; v < 256; v++)
        {
            double step = Math.Round(v * (levels - 1) / 255.0, MidpointRounding.AwayFromZero);
            table[v] = (byte)Math.Round(step * 255.0 / (levels - 1), MidpointRounding.AwayFromZero);
        }
        var dst = new byte[src.Length];
        for (int i = 0; i < src.Length; i++) dst[i] = table[src[i]];
        return dst;
    }

    /// <summary>Oil painting: Kuwahara (radius from the style) then quantisation to its levels.</summary>
    public static byte[] OilPainting(ReadOnlySpan<byte> src, int width, int height, OilPaintingStyle style)
    {
        ArgumentNullException.ThrowIfNull(style);
        style.Validate();
        return Quantize(Kuwahara(src, width, height, style.Radius), style.Levels);
    }

    /// <summary>The light reaching pixel (x, y) (its centre) under a spotlight, in (0, 1].</summary>
    public static double LightAt(in Spotlight s, int x, int y, int width, int height)
    {
        double side = (width + height) / 2.0;
        double dx = (x + 0.5 - s.CenterX * width) / side, dy = (y + 0.5 - s.CenterY * height) / side;
        double cos = Math.Cos(s.Angle), sin = Math.Sin(s.Angle);
        double u = dx * cos + dy * sin, v = -dx * sin + dy * cos;
        double fall = Math.Exp(-0.5 * (u * u / (s.SigmaAlong * s.SigmaAlong) + v * v / (s.SigmaAcross * s.SigmaAcross)));
        return s.Ambient + (1 - s.Ambient) * fall;
    }

    /// <summary>Stage lighting: gamma on the object, a hazy pool of light from one spot, darkness (ambient) elsewhere.</summary>
    public static byte[] ApplySpotlight(ReadOnlySpan<byte> src, int width, int height, in Spotlight s)
    {
        CheckImage(src, width, height);
        if (!(s.SigmaAlong > 0 && s.SigmaAcross > 0 && s.Gamma > 0 && s.Ambient is >= 0 and <= 1 && s.Haze is >= 0 and <= 1
              && double.IsFinite(s.CenterX) && double.IsFinite(s.CenterY) && double.IsFinite(s.Angle)))
            throw new ArgumentException($"spotlight parameters out of range: {s}");
        var gamma = new double[256];
        for (int v = 0; v < 256; v++) gamma[v] = s.Haze + (1 - s.Haze) * Math.Pow(v / 255.0, s.Gamma);
        var dst = new byte[width * height];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                double value = 255.0 * LightAt(s, x, y, width, height) * gamma[src[y * width + x]];
                dst[y * width + x] = (byte)Math.Clamp(Math.Round(value, MidpointRounding.AwayFromZero), 0, 255);
            }
        return dst;
    }

    private static void CheckImage(ReadOnlySpan<byte> src, int width, int height)
    {
        if (width <= 0 || height <= 0) throw new ArgumentException($"image size {width}×{height} must be positive");
        if (src.Length != width * height) throw new ArgumentException($"{src.Length} pixels for a {width}×{height} single-channel image");
    }
}

namespace WhereToEdit.Engine.IO;

/// <summary>
/// Image resizing that reproduces PIL's <c>Image.resize</c> with BILINEAR / BICUBIC (what torchvision and Hugging Face
/// apply to PIL images): separable convolution, horizontal pass first, output pixel i centred at (i + 0.5)·scale in
/// input coordinates, filter support multiplied by the downscale factor (antialiasing), weights normalised to sum 1,
/// taps clipped at the image border (no padding). Bicubic is Keys' cubic with a = −0.5.
/// In <see cref="ResamplePrecision.PilUint8"/> mode the weights become 22-bit fixed point and each pass rounds and clips
/// to 0–255 exactly as PIL's 8-bit path does; <see cref="ResamplePrecision.Float"/> keeps the passes in float.
/// Images are interleaved HWC with 1–4 channels; values are 0–255.
/// </summary>
internal static class PilResize
{
    private const int PrecisionBits = 32 - 8 - 2;

    /// <summary>Per-output-pixel taps: first input index, tap count, and weights at [i·KSize ..].</summary>
    internal sealed class Coefficients(int[] first, int[] count, double[] weights, int kSize)
    {
        public int[] First { get; } = first;
        public int[] Count { get; } = count;
        public double[] Weights { get; } = weights;
        public int KSize { get; } = kSize;

        private int[]? _fixed;

        /// <summary>PIL's fixed-point weights: trunc(w·2²² ± 0.5).</summary>
        public int[] Fixed => _fixed ??= Weights.Select(w => w < 0 ? (int)(-0.5 + w * (1 << PrecisionBits)) : (int)(0.5 + w * (1 << PrecisionBits))).ToArray();
    }

    private static double Filter(Interpolation f, double x)
    {
        if (x < 0) x = -x;
        if (f == Interpolation.Bilinear) return x < 1.0 ? 1.0 - x : 0.0;
        const double a = -0.5;
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
        return 0.0;
    }

    private static double Support(Interpolation f) => f == Interpolation.Bilinear ? 1.0 : 2.0;

    internal static Coefficients Precompute(int inSize, int outSize, Interpolation f)
    {
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = Support(f) * filterScale;
        if (!(support < 1 << 24) || outSize <= 0) throw new ArgumentException($"resize {inSize} → {outSize} px is out of range");
        int kSize = (int)Math.Ceiling(support) * 2 + 1;
        ResourceBudget.Require(ResourceBudget.Bytes(outSize, kSize + 2, 8), "image resize", $"resizing {inSize} → {outSize} px");
        var first = new int[outSize];
        var count = new int[outSize];
        var weights = new double[outSize * kSize];
        double ss = 1.0 / filterScale;
        for (int xx = 0; xx < outSize; xx++)
        {
            double center = (xx + 0.5) * scale;
            int xmin = (int)(center - support + 0.5);
            if (xmin < 0) xmin = 0;
            int xmax = (int)(center + support + 0.5);
            if (xmax > inSize) xmax = inSize;
            xmax -= xmin;
            if (xmax > kSize) xmax = kSize;
            double total = 0;
            int k0 = xx * kSize;
            for (int x = 0; x < xmax; x++)
            {
                double w = Filter(f, (x + xmin - center + 0.5) * ss);
                weights[k0 + x] = w;
                total += w;
            }
            if (total != 0)
                for (int x = 0; x < xmax; x++) weights[k0 + x] /= total;
            first[xx] = xmin;
            count[xx] = xmax;
        }
        return new Coefficients(first, count, weights, kSize);
    }

    private static byte Clip8(int v) => v >= (1 << PrecisionBits << 8) ? (byte)255 : v <= 0 ? (byte)0 : (byte)(v >> PrecisionBits);

    /// <summary>Full resize in PIL's 8-bit arithmetic; bit-exact with <c>PIL.Image.resize</c>.</summary>
    public static byte[] ResizeUint8(ReadOnlySpan<byte> src, int width, int height, int channels, int outWidth, int outHeight, Interpolation f)
    {
        var r = ResizeRegion(src, width, height, channels, outWidth, outHeight, f, ResamplePrecision.PilUint8, 0, 0, outWidth, outHeight);
        var b = new byte[r.Length];
        for (int i = 0; i < r.Length; i++) b[i] = (byte)r[i];
        return b;
    }

    /// <summary>Full resize in float (values 0–255, clipped).</summary>
    public static float[] ResizeFloat(ReadOnlySpan<byte> src, int width, int height, int channels, int outWidth, int outHeight, Interpolation f) =>
        ResizeRegion(src, width, height, channels, outWidth, outHeight, f, ResamplePrecision.Float, 0, 0, outWidth, outHeight);

    /// <summary>
    /// Resizes to outWidth×outHeight and returns only the region [x0, x0+w) × [y0, y0+h) of the result (HWC floats 0–255;
    /// integers in PilUint8 mode). Each output pixel is computed exactly as in the full resize.
    /// </summary>
    public static float[] ResizeRegion(ReadOnlySpan<byte> src, int width, int height, int channels, int outWidth, int outHeight,
                                       Interpolation f, ResamplePrecision precision, int x0, int y0, int w, int h)
    {
        if (width <= 0 || height <= 0 || channels is < 1 or > 4) throw new ArgumentException("bad input image size");
        if (src.Length != (long)width * height * channels) throw new ArgumentException("pixel buffer does not match width·height·channels");
        if (outWidth <= 0 || outHeight <= 0) throw new ArgumentException("output size must be positive");
        if (x0 < 0 || y0 < 0 || w < 0 || h < 0 || x0 + w > outWidth || y0 + h > outHeight) throw new ArgumentException("region outside the output");
        int c = channels;
        bool needH = outWidth != width, needV = outHeight != height;
        var ch = needH ? Precompute(width, outWidth, f) : null;
        var cv = needV ? Precompute(height, outHeight, f) : null;

        // Input rows needed by the vertical pass.
        int rowLo, rowHi;
        if (h == 0) { rowLo = 0; rowHi = 0; }
        else if (cv is null) { rowLo = y0; rowHi = y0 + h; }
        else
        {
            rowLo = int.MaxValue; rowHi = 0;
            for (int y = y0; y < y0 + h; y++)
            {
                rowLo = Math.Min(rowLo, cv.First[y]);
                rowHi = Math.Max(rowHi, cv.First[y] + cv.Count[y]);
            }
            if (rowHi <= rowLo) { rowLo = 0; rowHi = 0; }
        }
        int rows = rowHi - rowLo;
        ResourceBudget.Require(ResourceBudget.Add(ResourceBudget.Bytes(w, h, c, 4), ResourceBudget.Bytes(rows, w, c, 4)), "image resize", $"a {w}×{h} region of a {outWidth}×{outHeight} resize");
        var result = new float[w * h * c];
        bool exact = precision == ResamplePrecision.PilUint8;

        // Horizontal pass → tmp rows [rowLo, rowHi) × columns [x0, x0 + w).
        var tmpB = exact ? new byte[rows * w * c] : null;
        var tmpF = exact ? null : new float[rows * w * c];
        for (int r = 0; r < rows; r++)
        {
            int inRow = (rowLo + r) * width * c;
            int outRow = r * w * c;
            for (int x = 0; x < w; x++)
            {
                int ox = x0 + x;
                for (int k = 0; k < c; k++)
                {
                    if (ch is null)
                    {
                        byte v = src[inRow + ox * c + k];
                        if (exact) tmpB![outRow + x * c + k] = v; else tmpF![outRow + x * c + k] = v;
                        continue;
                    }
                    int fst = ch.First[ox], n = ch.Count[ox], kb = ox * ch.KSize;
                    if (exact)
                    {
                        var kk = ch.Fixed;
                        int ss = 1 << (PrecisionBits - 1);
                        for (int t = 0; t < n; t++) ss += src[inRow + (fst + t) * c + k] * kk[kb + t];
                        tmpB![outRow + x * c + k] = Clip8(ss);
                    }
                    else
                    {
                        var kk = ch.Weights;
                        float ss = 0;
                        for (int t = 0; t < n; t++) ss += src[inRow + (fst + t) * c + k] * (float)kk[kb + t];
                        tmpF![outRow + x * c + k] = Math.Clamp(ss, 0f, 255f);
                    }
                }
            }
        }

        // Vertical pass.
        int stride = w * c;
        for (int y = 0; y < h; y++)
        {
            int oy = y0 + y;
            for (int i = 0; i < stride; i++)
            {
                float value;
                if (cv is null)
                {
                    int r = oy - rowLo;
                    value = exact ? tmpB![r * stride + i] : tmpF![r * stride + i];
                }
                else
                {
                    int fst = cv.First[oy] - rowLo, n = cv.Count[oy], kb = oy * cv.KSize;
                    if (exact)
                    {
                        var kk = cv.Fixed;
                        int ss = 1 << (PrecisionBits - 1);
                        for (int t = 0; t < n; t++) ss += tmpB![(fst + t) * stride + i] * kk[kb + t];
                        value = Clip8(ss);
                    }
                    else
                    {
                        var kk = cv.Weights;
                        float ss = 0;
                        for (int t = 0; t < n; t++) ss += tmpF![(fst + t) * stride + i] * (float)kk[kb + t];
                        value = Math.Clamp(ss, 0f, 255f);
                    }
                }
                result[y * stride + i] = value;
            }
        }
        return result;
    }

    /// <summary>torchvision's Resize(int) on a PIL image: the shorter side becomes <paramref name="size"/>, the longer int(size·long/short).</summary>
    public static (int Width, int Height) ShorterSideSize(int width, int height, int size)
    {
        if (width <= height) return (size, (int)Math.Max(1, (long)size * height / width));
        return ((int)Math.Max(1, (long)size * width / height), size);
    }

    /// <summary>
    /// torchvision's center_crop start offset along one axis: round((size − crop)/2) with round-half-to-even; when the
    /// crop is larger than the image torchvision zero-pads (crop − size) // 2 on the leading side, giving a negative start.
    /// </summary>
    public static int CenterCropOffset(int size, int crop) =>
        crop > size ? -((crop - size) / 2) : (int)Math.Round((size - crop) / 2.0, MidpointRounding.ToEven);
}

using System.Globalization;
using System.Text.Json;

namespace WhereToEdit.Engine.IO;

/// <summary>How the image is brought to the crop size.</summary>
public enum ResizeMode
{
    /// <summary>Shorter side → <see cref="Preprocessing.ResizeSize"/> keeping the aspect ratio (longer side truncated as torchvision does), then center crop.</summary>
    ShorterSide,
    /// <summary>Both sides → <see cref="Preprocessing.ResizeSize"/> (aspect ratio not kept), then center crop (none when equal to the crop).</summary>
    Direct,
}

/// <summary>PIL resampling filter (with PIL's antialiasing: the kernel support grows with the downscale factor).</summary>
public enum Interpolation
{
    Bilinear,
    /// <summary>Keys cubic, a = −0.5 (PIL's BICUBIC).</summary>
    Bicubic,
}

/// <summary>What happens to an alpha channel.</summary>
public enum AlphaHandling
{
    /// <summary>Drop alpha and keep the stored colour (what PIL's <c>convert("RGB")</c> does, so what timm/torchvision pipelines see).</summary>
    Drop,
    /// <summary>Composite on black: colour · alpha / 255 (transparent areas become black).</summary>
    CompositeOnBlack,
}

/// <summary>Arithmetic of the resize.</summary>
public enum ResamplePrecision
{
    /// <summary>PIL's 8-bit path: fixed-point weights (22 fraction bits), rounding and clipping to 0–255 after each pass. Bit-exact with PIL.</summary>
    PilUint8,
    /// <summary>The same weights in float, no intermediate rounding (clipped to [0, 255]); within about one 8-bit unit of PIL.</summary>
    Float,
}

/// <summary>
/// Image preprocessing a model was trained with: resize, center crop, scale to [0, 1], normalise with mean/std
/// per channel, CHW order. <see cref="Mean"/> and <see cref="Std"/> have one entry per model channel.
/// Center-crop offsets follow torchvision: top = round((H − C) / 2) with round-half-to-even, and an image smaller
/// than the crop is zero-padded (pixel value 0 before normalisation) as torchvision pads.
/// </summary>
public sealed record Preprocessing(ResizeMode ResizeMode, int ResizeSize, int CropSize, Interpolation Interpolation, float[] Mean, float[] Std)
{
    /// <summary>Alpha channel handling (default: drop, as PIL).</summary>
    public AlphaHandling Alpha { get; init; } = AlphaHandling.Drop;

    /// <summary>Resize arithmetic (default: PIL's exact 8-bit path).</summary>
    public ResamplePrecision Precision { get; init; } = ResamplePrecision.PilUint8;

    /// <summary>
    /// Rotate/flip by the EXIF orientation tag before anything else (default true). PIL's <c>Image.open</c> does NOT do
    /// this, so photos with an orientation tag differ from what a plain timm/torchvision script sees.
    /// </summary>
    public bool ApplyExifOrientation { get; init; } = true;

    /// <summary>Model input channels (1 or 3).</summary>
    public int Channels => Mean.Length;

    /// <summary>Floats one image needs: channels · crop · crop.</summary>
    public int OutputLength => Channels * CropSize * CropSize;

    private static readonly float[] Half3 = [0.5f, 0.5f, 0.5f];
    private static readonly float[] ImageNetMean = [0.485f, 0.456f, 0.406f];
    private static readonly float[] ImageNetStd = [0.229f, 0.224f, 0.225f];

    /// <summary>The reference edit/eval code: shorter side 256, center 224, bilinear, mean/std 0.5.</summary>
    public static Preprocessing ReferenceCode => new(ResizeMode.ShorterSide, 256, 224, Interpolation.Bilinear, [.. Half3], [.. Half3]);

    /// <summary>timm augreg_in21k_ft_in1k: shorter side 248 (= floor(224 / 0.9)), center 224, bicubic, mean/std 0.5.</summary>
    public static Preprocessing TimmAugReg => new(ResizeMode.ShorterSide, 248, 224, Interpolation.Bicubic, [.. Half3], [.. Half3]);

    /// <summary>Hugging Face ViTImageProcessor: direct 224×224, bilinear, mean/std 0.5.</summary>
    public static Preprocessing HuggingFace => new(ResizeMode.Direct, 224, 224, Interpolation.Bilinear, [.. Half3], [.. Half3]);

    /// <summary>torchvision ImageNet default: shorter side 256, center 224, bilinear, ImageNet mean/std.</summary>
    public static Preprocessing TorchvisionImageNet => new(ResizeMode.ShorterSide, 256, 224, Interpolation.Bilinear, [.. ImageNetMean], [.. ImageNetStd]);

    /// <summary>Largest crop accepted (3 × 16384² floats fit one array; real models use ≤ 1024).</summary>
    public const int MaxCropSize = 16384;

    /// <summary>Problems (empty when usable).</summary>
    public IReadOnlyList<string> Problems()
    {
        var p = new List<string>();
        if (ResizeSize <= 0) p.Add($"resize size {ResizeSize} must be positive");
        if (CropSize <= 0) p.Add($"crop size {CropSize} must be positive");
        if (ResizeSize > ImageLoader.MaxResizedSide) p.Add($"resize size {ResizeSize} is above {ImageLoader.MaxResizedSide}");
        if (CropSize > MaxCropSize) p.Add($"crop size {CropSize} is above {MaxCropSize}");
        if (Mean is null || Std is null) { p.Add("mean and std are required"); return p; }
        if (Mean.Length is not (1 or 3)) p.Add($"mean has {Mean.Length} values; 1 or 3 channels are supported");
        if (Std.Length != Mean.Length) p.Add($"std has {Std.Length} values but mean has {Mean.Length}");
        if (Std.Any(s => !(s > 0) || !float.IsFinite(s))) p.Add("every std value must be positive");
        if (Mean.Any(m => !float.IsFinite(m))) p.Add("every mean value must be finite");
        return p;
    }

    public void EnsureValid(string path)
    {
        var p = Problems();
        if (p.Count > 0) throw new CheckpointFormatException(path, "invalid preprocessing: " + string.Join("; ", p));
    }

    /// <summary>The same preprocessing for a model with <paramref name="channels"/> inputs (3 → 1 keeps the first mean/std only when all are equal).</summary>
    public Preprocessing ForChannels(int channels, string path)
    {
        if (channels == Channels) return this;
        if (channels == 1 && Mean.Distinct().Count() == 1 && Std.Distinct().Count() == 1)
            return this with { Mean = [Mean[0]], Std = [Std[0]] };
        if (channels == 3 && Channels == 1)
            return this with { Mean = [Mean[0], Mean[0], Mean[0]], Std = [Std[0], Std[0], Std[0]] };
        throw new CheckpointFormatException(path, $"preprocessing has {Channels} channel(s) of mean/std but the model takes {channels}");
    }

    /// <summary>
    /// timm's eval transform from a pretrained_cfg: scale = floor(crop / crop_pct); crop_mode "center" (default) resizes the
    /// shorter side to scale, "squash" resizes both sides; then center crop. Other modes and interpolations are refused.
    /// </summary>
    public static Preprocessing FromTimmPretrainedCfg(int cropSize, string interpolation, double cropPct, string? cropMode,
                                                      float[] mean, float[] std, string path)
    {
        if (!(cropPct > 0) || cropPct > 10)
            throw new CheckpointFormatException(path, $"pretrained_cfg crop_pct {cropPct} is out of range");
        double scaled = Math.Floor(cropSize / cropPct);
        if (!(scaled >= 1 && scaled <= ImageLoader.MaxResizedSide))
            throw new CheckpointFormatException(path, $"pretrained_cfg crop_pct {cropPct} with crop {cropSize} gives a resize of {scaled} px (1..{ImageLoader.MaxResizedSide} accepted)");
        int scale = (int)scaled;
        var interp = ParseInterpolation(interpolation, path, "pretrained_cfg interpolation");
        var mode = (cropMode ?? "center") switch
        {
            "center" => ResizeMode.ShorterSide,
            "squash" => ResizeMode.Direct,
            _ => throw new CheckpointFormatException(path, $"pretrained_cfg crop_mode \"{cropMode}\" is not supported (center, squash)"),
        };
        var p = new Preprocessing(mode, scale, cropSize, interp, mean, std);
        p.EnsureValid(path);
        return p;
    }

    internal static Interpolation ParseInterpolation(string s, string path, string what) => s.ToLowerInvariant() switch
    {
        "bilinear" => Interpolation.Bilinear,
        "bicubic" => Interpolation.Bicubic,
        _ => throw new CheckpointFormatException(path, $"{what} \"{s}\" is not supported (bilinear, bicubic)"),
    };

    // ---- equality (arrays by value) ----------------------------------------------------------------

    public bool Equals(Preprocessing? other) =>
        other is not null && ResizeMode == other.ResizeMode && ResizeSize == other.ResizeSize && CropSize == other.CropSize
        && Interpolation == other.Interpolation && Mean.AsSpan().SequenceEqual(other.Mean) && Std.AsSpan().SequenceEqual(other.Std)
        && Alpha == other.Alpha && Precision == other.Precision && ApplyExifOrientation == other.ApplyExifOrientation;

    public override int GetHashCode() => HashCode.Combine(ResizeMode, ResizeSize, CropSize, Interpolation, Mean.Length, Alpha, Precision, ApplyExifOrientation);

    public override string ToString() =>
        $"{(ResizeMode == ResizeMode.ShorterSide ? "shorter side" : "direct")} {ResizeSize} → center {CropSize}, {Interpolation.ToString().ToLowerInvariant()}, " +
        $"mean [{string.Join(", ", Mean.Select(F))}] std [{string.Join(", ", Std.Select(F))}], {Channels} ch" +
        (Precision == ResamplePrecision.Float ? ", float resize" : "") + (Alpha == AlphaHandling.CompositeOnBlack ? ", alpha on black" : "") +
        (ApplyExifOrientation ? "" : ", no EXIF rotation");

    private static string F(float x) => x.ToString("0.####", CultureInfo.InvariantCulture);

    // ---- JSON (the "wte.preprocessing" metadata value) ---------------------------------------------

    public string ToJson()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteString("resize_mode", ResizeMode == ResizeMode.ShorterSide ? "shorter_side" : "direct");
            w.WriteNumber("resize_size", ResizeSize);
            w.WriteNumber("crop_size", CropSize);
            w.WriteString("interpolation", Interpolation == Interpolation.Bilinear ? "bilinear" : "bicubic");
            w.WriteStartArray("mean");
            foreach (var m in Mean) w.WriteNumberValue(m);
            w.WriteEndArray();
            w.WriteStartArray("std");
            foreach (var s in Std) w.WriteNumberValue(s);
            w.WriteEndArray();
            w.WriteNumber("channels", Channels);
            w.WriteString("alpha", Alpha == AlphaHandling.Drop ? "drop" : "composite_on_black");
            w.WriteString("precision", Precision == ResamplePrecision.PilUint8 ? "pil_uint8" : "float");
            w.WriteBoolean("exif_orientation", ApplyExifOrientation);
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(ms.ToArray());
    }

    public static Preprocessing FromJson(string json, string path)
    {
        const string what = "preprocessing (wte.preprocessing)";
        using var doc = StrictJson.Parse(json, path, what);
        var r = doc.RootElement;
        if (r.ValueKind != JsonValueKind.Object) throw new CheckpointFormatException(path, $"{what} must be a JSON object");
        JsonElement Req(string k) => StrictJson.TryGet(r, k, out var e) ? e : throw new CheckpointFormatException(path, $"{what} has no \"{k}\"");
        var mode = StrictJson.GetString(Req("resize_mode"), "resize_mode", path, what) switch
        {
            "shorter_side" => ResizeMode.ShorterSide,
            "direct" => ResizeMode.Direct,
            var s => throw new CheckpointFormatException(path, $"{what}: unknown resize_mode \"{s}\""),
        };
        var p = new Preprocessing(mode,
            StrictJson.GetInt(Req("resize_size"), "resize_size", path, what),
            StrictJson.GetInt(Req("crop_size"), "crop_size", path, what),
            ParseInterpolation(StrictJson.GetString(Req("interpolation"), "interpolation", path, what), path, what),
            StrictJson.GetFloatArray(Req("mean"), "mean", path, what),
            StrictJson.GetFloatArray(Req("std"), "std", path, what));
        if (StrictJson.TryGet(r, "channels", out var ch) && StrictJson.GetInt(ch, "channels", path, what) != p.Channels)
            throw new CheckpointFormatException(path, $"{what}: channels {StrictJson.Show(ch)} disagrees with {p.Channels} mean values");
        if (StrictJson.TryGet(r, "alpha", out var a))
            p = p with
            {
                Alpha = StrictJson.GetString(a, "alpha", path, what) switch
                {
                    "drop" => AlphaHandling.Drop,
                    "composite_on_black" => AlphaHandling.CompositeOnBlack,
                    var s => throw new CheckpointFormatException(path, $"{what}: unknown alpha \"{s}\""),
                },
            };
        if (StrictJson.TryGet(r, "precision", out var pr))
            p = p with
            {
                Precision = StrictJson.GetString(pr, "precision", path, what) switch
                {
                    "pil_uint8" => ResamplePrecision.PilUint8,
                    "float" => ResamplePrecision.Float,
                    var s => throw new CheckpointFormatException(path, $"{what}: unknown precision \"{s}\""),
                },
            };
        if (StrictJson.TryGet(r, "exif_orientation", out var ex))
            p = p with { ApplyExifOrientation = StrictJson.GetBool(ex, "exif_orientation", path, what) };
        p.EnsureValid(path);
        return p;
    }
}

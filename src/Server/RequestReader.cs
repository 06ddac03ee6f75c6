using System.Globalization;
using Microsoft.AspNetCore.Http;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Jobs;

namespace WhereToEdit.Server;

/// <summary>
/// Turns request bodies into preprocessed images and edit options. Every problem becomes an <see cref="ApiError"/>
/// naming the field. Uploaded bytes are decoded in memory with the CLI's decode limits; nothing from a request is
/// ever used as a file path.
/// </summary>
internal sealed class RequestReader(EditService service, ServeOptions options, ServerMetrics metrics)
{
    private static readonly HashSet<string> EditFields = ["image", "label", "method", "keep", "lr", "max_steps", "seed", "coef"];
    private readonly ImageLoader _loader = new();

    public static bool IsMultipart(HttpRequest r) =>
        r.ContentType is { } t && t.StartsWith("multipart/form-data", StringComparison.OrdinalIgnoreCase);

    private static bool IsRawImage(HttpRequest r) =>
        r.ContentType is { } t && (t.StartsWith("image/png", StringComparison.OrdinalIgnoreCase) || t.StartsWith("image/jpeg", StringComparison.OrdinalIgnoreCase));

    /// <summary>The one image of a predict request: a raw PNG/JPEG body or a multipart field 'image'.</summary>
    public async Task<float[]> ReadPredictImageAsync(HttpRequest request, CancellationToken cancel)
    {
        byte[] bytes;
        if (IsRawImage(request)) bytes = await ReadBodyAsync(request, cancel);
        else if (IsMultipart(request))
        {
            var form = await ReadFormAsync(request, cancel);
            foreach (string key in form.Keys.Concat(form.Files.Select(f => f.Name)))
                if (key != "image") throw ApiError.BadRequest($"{key}: unknown field; predict takes one field 'image'");
            var files = form.Files.GetFiles("image");
            if (files.Count != 1) throw ApiError.BadRequest($"image: predict takes exactly one image, got {files.Count}");
            bytes = await ReadFileAsync(files[0], cancel);
        }
        else throw new ApiError(StatusCodes.Status415UnsupportedMediaType,
            $"Content-Type: '{request.ContentType}' is not image/png, image/jpeg or multipart/form-data with a field 'image'");
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        var pixels = Preprocess(bytes, "image");
        metrics.PredictDecode.Observe(System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds);
        return pixels;
    }

    public int ReadTopK(HttpRequest request)
    {
        var values = request.Query["top_k"];
        if (values.Count == 0) return Math.Min(5, service.Config.NumClasses);
        if (values.Count > 1 || !int.TryParse(values[0], NumberStyles.None, CultureInfo.InvariantCulture, out int k) || k < 1 || k > options.MaxTopK)
            throw ApiError.BadRequest($"top_k: '{values}' is not an integer in 1..{options.MaxTopK}");
        return Math.Min(k, service.Config.NumClasses);
    }

    /// <summary>An edit form: 1–3 'image' files, 'label', optional method, keep, lr, max_steps, seed, coef.</summary>
    public async Task<EditRequest> ReadEditAsync(HttpRequest request, CancellationToken cancel)
    {
        if (!IsMultipart(request))
            throw new ApiError(StatusCodes.Status415UnsupportedMediaType, $"Content-Type: '{request.ContentType}' is not multipart/form-data (fields image, label, method, keep, lr, max_steps, seed)");
        var form = await ReadFormAsync(request, cancel);
        foreach (string key in form.Keys.Concat(form.Files.Select(f => f.Name)))
            if (!EditFields.Contains(key)) throw ApiError.BadRequest($"{key}: unknown field; an edit takes {string.Join(", ", EditFields)}");
        if (form.Keys.Contains("image")) throw ApiError.BadRequest("image: must be a file, not a text value");
        var files = form.Files.GetFiles("image");
        if (files.Count is < 1 or > 3) throw ApiError.BadRequest($"image: an edit takes 1 to 3 images, got {files.Count}");
        var c = service.Config;
        int per = service.Loaded.Preprocessing.OutputLength;
        var pixels = new float[files.Count * per];
        for (int i = 0; i < files.Count; i++)
            Preprocess(await ReadFileAsync(files[i], cancel), $"image {i + 1}").CopyTo(pixels, i * per);

        string? Single(string field)
        {
            var v = form[field];
            if (v.Count > 1) throw ApiError.BadRequest($"{field}: given {v.Count} times");
            return v.Count == 0 ? null : v[0];
        }
        int label = ParseLabel(Single("label") ?? throw ApiError.BadRequest("label: missing (a class index or label name)"), c.NumClasses, service.Loaded.Labels);
        var method = Single("method") is { } m ? ParseMethod(m) : EditMethod.Hprd;
        double keep = Number(Single("keep"), "keep", 0.1, v => v > 0 && v <= 1, "a number in (0, 1]");
        float? lr = Single("lr") is { } lrText ? (float)Number(lrText, "lr", 0, v => v > 0 && v <= 1, "a number in (0, 1]") : null;   // null: the width rule, as wte edit
        float coef = (float)Number(Single("coef"), "coef", 0, v => v >= 0 && v <= 1e6, "a number ≥ 0");
        int maxSteps = Single("max_steps") is { } s
            ? int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 0 && n <= options.MaxEditSteps ? n
                : throw ApiError.BadRequest($"max_steps: '{s}' is not an integer in 0..{options.MaxEditSteps}")
            : 100;
        ulong seed = Single("seed") is { } sd
            ? ulong.TryParse(sd, NumberStyles.None, CultureInfo.InvariantCulture, out ulong u) ? u : throw ApiError.BadRequest($"seed: '{sd}' is not a non-negative integer")
            : 0;
        return new EditRequest(new LoadedEdit
        {
            Pixels = pixels, ImageNames = Enumerable.Range(1, files.Count).Select(i => $"upload-{i}").ToArray(), Label = label, Method = method,
            Keep = keep, LearningRate = lr, MaxSteps = maxSteps, Coefficient = coef, Seed = seed,
        });
    }

    private static double Number(string? text, string field, double fallback, Func<double, bool> ok, string expected)
    {
        if (text is null) return fallback;
        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v) && ok(v)
            ? v : throw ApiError.BadRequest($"{field}: '{text}' is not {expected}");
    }

    private static EditMethod ParseMethod(string text) => text.Trim().ToLowerInvariant() switch
    {
        "hprd" => EditMethod.Hprd,
        "ft-l1" => EditMethod.FtL1,
        "ft-l2" => EditMethod.FtL2,
        "random" => EditMethod.Random,
        _ => throw ApiError.BadRequest($"method: '{text}' is not hprd, ft-l1, ft-l2 or random"),
    };

    internal static int ParseLabel(string text, int classes, IReadOnlyList<string>? labels)
    {
        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int index))
            return index < classes ? index : throw ApiError.BadRequest($"label: {index} is not a class of the model (0..{classes - 1})");
        if (labels is not null)
            for (int i = 0; i < labels.Count; i++)
                if (string.Equals(labels[i], text.Trim(), StringComparison.OrdinalIgnoreCase)) return i;
        throw ApiError.BadRequest($"label: '{text}' is not a class index or one of the model's label names");
    }

    private float[] Preprocess(byte[] bytes, string field)
    {
        if (bytes.Length == 0) throw ApiError.BadRequest($"{field}: empty");
        var p = service.Loaded.Preprocessing;
        var dst = new float[p.OutputLength];
        try
        {
            _loader.Load(bytes, field, p, dst);
        }
        catch (ImageLoadException e)
        {
            throw ApiError.BadRequest($"{field}: {e.Problem}");
        }
        return dst;
    }

    private async Task<byte[]> ReadBodyAsync(HttpRequest request, CancellationToken cancel)
    {
        if (request.ContentLength > options.MaxBodyBytes) throw TooLarge();
        if (request.ContentLength is long length)
        {
            // The usual case: read straight into an array of the declared size (no staging buffer, no copy).
            var exact = new byte[length];
            int filled = 0;
            while (filled < exact.Length)
            {
                int n = await request.Body.ReadAsync(exact.AsMemory(filled), cancel);
                if (n == 0) throw ApiError.BadRequest($"body: ended after {filled} of the {length} bytes Content-Length announced");
                filled += n;
            }
            return exact;
        }
        using var ms = new MemoryStream();
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(16384);
        try
        {
            int read;
            while ((read = await request.Body.ReadAsync(buffer, cancel)) > 0)
            {
                if (ms.Length + read > options.MaxBodyBytes) throw TooLarge();
                ms.Write(buffer, 0, read);
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
        return ms.ToArray();
    }

    private async Task<IFormCollection> ReadFormAsync(HttpRequest request, CancellationToken cancel)
    {
        if (request.ContentLength > options.MaxBodyBytes) throw TooLarge();
        try
        {
            return await request.ReadFormAsync(cancel);
        }
        catch (InvalidDataException e)
        {
            throw e.Message.Contains("limit", StringComparison.OrdinalIgnoreCase) ? TooLarge() : ApiError.BadRequest($"body: malformed multipart form: {e.Message}");
        }
        catch (IOException e) when (!cancel.IsCancellationRequested)
        {
            throw ApiError.BadRequest($"body: malformed multipart form: {e.Message}");
        }
    }

    private static async Task<byte[]> ReadFileAsync(IFormFile file, CancellationToken cancel)
    {
        using var ms = new MemoryStream((int)Math.Min(file.Length, int.MaxValue));
        await file.CopyToAsync(ms, cancel);
        return ms.ToArray();
    }

    private ApiError TooLarge() => new(StatusCodes.Status413PayloadTooLarge, $"body: larger than the limit of {options.MaxBodyBytes} bytes");
}

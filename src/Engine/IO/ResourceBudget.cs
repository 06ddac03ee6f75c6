using System.Globalization;

namespace WhereToEdit.Engine.IO;

/// <summary>What a file's own header asks for is more memory than the limit allows (refused before allocating).</summary>
internal sealed class ResourceLimitException(string message) : Exception(message);

/// <summary>
/// The memory a single hostile file may make us allocate: sizes implied by headers (tensor shapes × dtype, image
/// pixels after preprocessing, tokens × width × heads, zip member sizes) are computed with checked arithmetic and
/// refused above <see cref="LimitBytes"/> before anything is allocated. The default is three quarters of the memory the runtime
/// may use (physical RAM, a cgroup limit or DOTNET_GCHeapHardLimit); `--max-memory` sets it.
/// </summary>
public static class ResourceBudget
{
    // Per logical call flow, so concurrent in-process commands (tests) do not see each other's limit.
    private static readonly AsyncLocal<long?> Limit = new();
    private static readonly long Default = DefaultLimit();

    public static long DefaultLimit() => Math.Max(256L << 20, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4 * 3);

    /// <summary>The largest allocation one input may imply, in bytes.</summary>
    public static long LimitBytes
    {
        get => Limit.Value ?? Default;
        set => Limit.Value = value > 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "the memory limit must be positive");
    }

    /// <summary>The product of the factors, or <see cref="long.MaxValue"/> when it overflows (negative factors count as 0).</summary>
    public static long Bytes(params ReadOnlySpan<long> factors)
    {
        long r = 1;
        foreach (long f in factors)
        {
            if (f <= 0) return 0;
            if (r > long.MaxValue / f) return long.MaxValue;
            r *= f;
        }
        return r;
    }

    /// <summary>Saturating sum.</summary>
    public static long Add(long a, long b) => a > long.MaxValue - b ? long.MaxValue : a + b;

    /// <summary>Refuses <paramref name="bytes"/> above the limit, naming <paramref name="source"/> (a file or flag) and what needs it.</summary>
    public static void Require(long bytes, string source, string what)
    {
        if (bytes > LimitBytes)
            throw new ResourceLimitException($"{source}: {what} needs {Show(bytes)}, above the memory limit of {Show(LimitBytes)} (raise it with --max-memory)");
    }

    public static string Show(long bytes) => bytes == long.MaxValue ? "more than 8 EiB (overflows)"
        : bytes >= 1L << 30 ? string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):0.##} GiB ({bytes:N0} bytes)")
        : string.Create(CultureInfo.InvariantCulture, $"{bytes:N0} bytes");

    /// <summary>Parses "4G", "512M", "1.5GiB", "100000" (bytes) into bytes.</summary>
    public static long ParseSize(string text, string flag = "--max-memory")
    {
        string t = text.Trim().ToUpperInvariant();
        if (t.EndsWith("IB", StringComparison.Ordinal)) t = t[..^2];
        else if (t.EndsWith('B')) t = t[..^1];
        double unit = 1;
        if (t.Length > 0 && "KMGT".Contains(t[^1], StringComparison.Ordinal))
        {
            unit = Math.Pow(1024, "KMGT".IndexOf(t[^1], StringComparison.Ordinal) + 1);
            t = t[..^1];
        }
        if (!double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !(v > 0) || !double.IsFinite(v * unit) || v * unit >= long.MaxValue)
            throw new ArgumentException($"{flag} '{text}': expected a positive size like 8G, 512M or a byte count");
        return Math.Max(1, (long)(v * unit));
    }
}

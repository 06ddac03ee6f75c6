using System.Net;

namespace WhereToEdit.Server;

/// <summary>What `wte serve` was asked for. Every limit has a safe default; tests shrink them.</summary>
public sealed record ServeOptions
{
    public required string ModelPath { get; init; }
    public string? HypernetPath { get; init; }
    /// <summary>Journal folder; without one, edits live in memory only and are lost on restart.</summary>
    public string? JournalPath { get; init; }
    public string Urls { get; init; } = "http://127.0.0.1:8080";
    /// <summary>Bearer token that POST and DELETE require; null = loopback only, no authentication.</summary>
    public string? Token { get; init; }
    /// <summary>CPU worker threads; 0 = WTE_THREADS, else all cores for edits and <see cref="PredictThreads"/> for predictions.</summary>
    public int Threads { get; init; }
    public string Device { get; init; } = "cpu";

    /// <summary>Most predictions one forward pass takes.</summary>
    public int MaxBatch { get; init; } = 32;
    /// <summary>
    /// How long the batcher waits for more requests once one is queued. Zero (the default): none; a batch is what queued
    /// while the previous one ran, so an idle server answers at once and a busy one batches by itself.
    /// </summary>
    public TimeSpan MaxBatchDelay { get; init; } = TimeSpan.Zero;
    /// <summary>Queued predictions beyond this are refused with 503.</summary>
    public int QueueCapacity { get; init; } = 1024;
    public long MaxBodyBytes { get; init; } = 16L << 20;
    public int MaxTopK { get; init; } = 1000;
    public int MaxEditSteps { get; init; } = 1000;
    /// <summary>Requests per second per client for GET and predict (token bucket).</summary>
    public int RequestsPerSecond { get; init; } = 2000;
    /// <summary>Edits and reverts per minute per client.</summary>
    public int EditsPerMinute { get; init; } = 120;
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Time an edit request may wait for the edits before it (the edit itself always runs to completion).</summary>
    public TimeSpan EditTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Refuses a non-loopback address unless a token is set, and an unusable token.</summary>
    public void Validate()
    {
        if (Token is not null && Token.Length < 16)
            throw new ArgumentException("token (--token-file or WTE_TOKEN): must be at least 16 characters");
        if (Token is not null && Token.Any(char.IsWhiteSpace))
            throw new ArgumentException("token (--token-file or WTE_TOKEN): must not contain whitespace");
        foreach (string url in UrlList())
        {
            if (!Uri.TryCreate(url.Replace("://*", "://0.0.0.0", StringComparison.Ordinal).Replace("://+", "://0.0.0.0", StringComparison.Ordinal), UriKind.Absolute, out var uri)
                || uri.Scheme is not ("http" or "https"))
                throw new ArgumentException($"--urls {url}: not an http:// or https:// address");
            if (Token is null && !IsLoopback(uri))
                throw new ArgumentException($"--urls {url}: not a loopback address; serving beyond this machine needs a token (--token-file or WTE_TOKEN)");
        }
        if (MaxBatch < 1) throw new ArgumentException("max batch must be ≥ 1");
        if (Threads < 0) throw new ArgumentException($"--threads {Threads}: must be ≥ 0 (0 = all cores)");
    }

    /// <summary>
    /// Threads of the prediction backend: <see cref="Threads"/> when given (or WTE_THREADS is set), else all cores but
    /// one, at least one. The core left over runs Kestrel, decoding and the answers: a forward pass spread over every
    /// core stalls whenever one of its threads is preempted by the HTTP work (perf/RESULTS.md: at concurrency 8 on
    /// 2 cores under load, 1 prediction thread gave 2–6× the throughput of 2).
    /// </summary>
    public int PredictThreads() =>
        Threads > 0 || Environment.GetEnvironmentVariable("WTE_THREADS") is { Length: > 0 } ? Threads : Math.Max(1, Environment.ProcessorCount - 1);

    public IReadOnlyList<string> UrlList() =>
        Urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static bool IsLoopback(Uri uri)
    {
        if (uri.IsLoopback) return true;   // localhost, 127.0.0.0/8, ::1
        return IPAddress.TryParse(uri.Host.Trim('[', ']'), out var ip) && IPAddress.IsLoopback(ip);
    }
}

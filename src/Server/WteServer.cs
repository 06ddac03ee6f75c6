using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.Timeouts;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Prometheus;
using WhereToEdit.Engine.Editing;

namespace WhereToEdit.Server;

/// <summary>
/// `wte serve`: the HTTP contract (docs/SERVE.md) as thin minimal-API endpoints over <see cref="EditService"/> and
/// <see cref="ModelHost"/>, with bearer authentication for POST and DELETE, a rate limiter, request timeouts, body and
/// image limits, Prometheus metrics and the embedded web page.
/// </summary>
public static class WteServer
{
    private const string EditTimeoutPolicy = "edit";

    /// <summary>
    /// Loads the model (and hypernetwork), replays the journal and builds the app without starting it. Bad options, a
    /// corrupt journal or one for another base model throw here, before anything listens.
    /// </summary>
    public static WebApplication Build(ServeOptions options, Action<WebApplicationBuilder>? configure = null)
    {
        options.Validate();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ApplicationName = typeof(WteServer).Assembly.GetName().Name });
        builder.WebHost.UseKestrelHttpsConfiguration();
        builder.WebHost.UseUrls(options.Urls);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxBodyBytes;
            k.AddServerHeader = false;
        });
        builder.Logging.SetMinimumLevel(LogLevel.Information);
        builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        builder.Services.Configure<FormOptions>(f =>
        {
            f.MultipartBodyLengthLimit = options.MaxBodyBytes;
            f.ValueCountLimit = 16;
            f.MemoryBufferThreshold = (int)Math.Min(options.MaxBodyBytes, int.MaxValue);   // uploads stay in memory
        });
        builder.Services.AddRateLimiter(r =>
        {
            r.GlobalLimiter = PartitionedRateLimiter.Create<HttpContext, string>(ctx =>
            {
                string client = ctx.Connection.RemoteIpAddress?.ToString() ?? "local";
                return ChangesState(ctx.Request)
                    ? RateLimitPartition.GetFixedWindowLimiter("edit " + client, _ => new FixedWindowRateLimiterOptions
                    {
                        PermitLimit = options.EditsPerMinute, Window = TimeSpan.FromMinutes(1), QueueLimit = 0,
                    })
                    : RateLimitPartition.GetTokenBucketLimiter("request " + client, _ => new TokenBucketRateLimiterOptions
                    {
                        TokenLimit = options.RequestsPerSecond, TokensPerPeriod = options.RequestsPerSecond,
                        ReplenishmentPeriod = TimeSpan.FromSeconds(1), QueueLimit = 0, AutoReplenishment = true,
                    });
            });
            r.OnRejected = (ctx, cancel) => WriteError(ctx.HttpContext, StatusCodes.Status429TooManyRequests,
                ChangesState(ctx.HttpContext.Request) ? $"rate: more than {options.EditsPerMinute} edits and reverts per minute from this client"
                                                      : $"rate: more than {options.RequestsPerSecond} requests per second from this client");
        });
        builder.Services.AddRequestTimeouts(t =>
        {
            t.DefaultPolicy = TimeoutPolicy(options.RequestTimeout);
            t.AddPolicy(EditTimeoutPolicy, TimeoutPolicy(options.EditTimeout));
        });
        configure?.Invoke(builder);

        var metrics = new ServerMetrics();
        var app = builder.Build();
        var log = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("wte.serve");
        var service = new EditService(options, metrics, log);
        app.Lifetime.ApplicationStopped.Register(service.Dispose);
        var reader = new RequestReader(service, options, metrics);
        var token = options.Token is null ? null : SHA256.HashData(Encoding.UTF8.GetBytes(options.Token));

        app.Use(async (ctx, next) =>
        {
            try
            {
                await next(ctx);
            }
            catch (ApiError e)
            {
                await WriteError(ctx, e.Status, e.Message, e.Details);
            }
            catch (BadHttpRequestException e)
            {
                await WriteError(ctx, e.StatusCode, e.StatusCode == 413 ? $"body: larger than the limit of {options.MaxBodyBytes} bytes" : $"request: {e.Message}");
            }
            catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
            {
                // The client went away (or the timeout middleware answered): nothing to write.
            }
            catch (Exception e)
            {
                log.LogError(e, "{Method} {Path} failed", ctx.Request.Method, ctx.Request.Path);
                await WriteError(ctx, StatusCodes.Status500InternalServerError, "internal error (the server log has the details)");
            }
        });
        app.UseStatusCodePages(ctx => WriteError(ctx.HttpContext, ctx.HttpContext.Response.StatusCode,
            ctx.HttpContext.Response.StatusCode switch
            {
                404 => $"path: no route {ctx.HttpContext.Request.Path}",
                405 => $"method: {ctx.HttpContext.Request.Method} is not allowed on {ctx.HttpContext.Request.Path}",
                _ => $"request: HTTP {ctx.HttpContext.Response.StatusCode}",
            }).AsTask());
        app.UseRouting();
        app.UseHttpMetrics(o => o.SetMetricFactory(metrics.Factory));
        app.UseRateLimiter();
        app.Use(async (ctx, next) =>
        {
            // POST and DELETE change or load the model: with a token they need it, checked before the body is read.
            if (token is not null && (HttpMethods.IsPost(ctx.Request.Method) || HttpMethods.IsDelete(ctx.Request.Method)))
            {
                string header = ctx.Request.Headers.Authorization.ToString();
                bool ok = header.StartsWith("Bearer ", StringComparison.Ordinal)
                          && CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(header[7..].Trim())), token);
                if (!ok)
                {
                    ctx.Response.Headers.WWWAuthenticate = "Bearer";
                    await WriteError(ctx, StatusCodes.Status401Unauthorized, "Authorization: missing or wrong bearer token");
                    return;
                }
            }
            await next(ctx);
        });
        app.UseRequestTimeouts();

        app.MapGet("/healthz", () => Results.Json(new { status = "ok" }));
        app.MapGet("/v1/model", () =>
        {
            var state = service.State;
            return Results.Json(new
            {
                base_fingerprint = service.BaseFingerprint,
                fingerprint = state.Fingerprint,
                version = state.Number,
                edits = state.EditIds,
                architecture = JsonNode.Parse(service.Loaded.Architecture.ToJson()),
                labels = service.Loaded.Labels ?? Enumerable.Range(0, service.Config.NumClasses).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToList(),
                hypernet = service.HasHypernet,
            });
        });
        app.MapPost("/v1/predict", async (HttpContext ctx) =>
        {
            int k = reader.ReadTopK(ctx.Request);
            var pixels = await reader.ReadPredictImageAsync(ctx.Request, ctx.RequestAborted);
            var answer = await service.Host.PredictAsync(pixels, k, ctx.RequestAborted);
            return Results.Json(new { version = answer.Version, top = answer.Top.Select(t => new { index = t.Index, label = t.Label, prob = t.Probability }) });
        });
        app.MapPost("/v1/edits", async (HttpContext ctx) =>
        {
            var request = await reader.ReadEditAsync(ctx.Request, ctx.RequestAborted);
            var edit = await service.EditAsync(request, ctx.RequestAborted);
            return Results.Json(new { id = edit.Id, version = edit.Version, record = edit.Record }, statusCode: StatusCodes.Status201Created);
        }).WithRequestTimeout(EditTimeoutPolicy);
        app.MapGet("/v1/edits", () => Results.Json(service.ActiveEdits().Select(e => new { id = e.Id, version = e.Version, record = e.Record })));
        app.MapGet("/v1/edits/{id}", (string id) =>
        {
            var edit = service.ActiveEdits().FirstOrDefault(e => e.Id == id) ?? throw new ApiError(404, $"id: no applied edit '{Clip(id)}'");
            var info = edit.Patch.Info;
            return Results.Json(new
            {
                id = edit.Id, version = edit.Version, record = edit.Record,
                patch = new
                {
                    method = info.Method, keep = info.Keep, labels = info.Labels, edit_blocks = info.EditBlocks,
                    base_fingerprint = info.BaseFingerprint, edited_fingerprint = info.EditedFingerprint,
                    units = edit.Patch.Units.ToDictionary(u => u.Parameter, u => u.Indices.Length),
                    weights = edit.Patch.WeightCount,
                },
            });
        });
        app.MapDelete("/v1/edits/{id}", async (string id, HttpContext ctx) =>
        {
            if (!service.ActiveEdits().Any(e => e.Id == id)) throw new ApiError(404, $"id: no applied edit '{Clip(id)}'");
            var state = await service.RevertAsync(id, ctx.RequestAborted);
            return Results.Json(new { id, reverted = true, version = state.Number, fingerprint = state.Fingerprint });
        }).WithRequestTimeout(EditTimeoutPolicy);
        app.MapMetrics("/metrics", metrics.Registry);
        app.MapGet("/", () => Results.Content(WebPage.Html, "text/html; charset=utf-8"));
        return app;
    }

    /// <summary>
    /// Builds, starts and blocks until Ctrl+C / SIGTERM; prints where it listens (with <paramref name="json"/>: one JSON
    /// line <c>{"listening": [...]}</c>, for scripts that wait for the server; the answers themselves are JSON over HTTP).
    /// </summary>
    public static void Run(ServeOptions options, TextWriter stdout, bool json = false)
    {
        var app = Build(options);
        app.StartAsync().GetAwaiter().GetResult();
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
        stdout.WriteLine(json ? new JsonObject { ["listening"] = new JsonArray([.. addresses.Select(a => (JsonNode)a)]) }.ToJsonString()
                              : $"wte serve: listening on {string.Join(" ", addresses)}");
        stdout.Flush();
        app.WaitForShutdownAsync().GetAwaiter().GetResult();
        app.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }

    private static bool ChangesState(HttpRequest r) =>
        HttpMethods.IsDelete(r.Method) || (HttpMethods.IsPost(r.Method) && r.Path.StartsWithSegments("/v1/edits"));

    private static RequestTimeoutPolicy TimeoutPolicy(TimeSpan timeout) => new()
    {
        Timeout = timeout,
        TimeoutStatusCode = StatusCodes.Status504GatewayTimeout,
        WriteTimeoutResponse = ctx => WriteError(ctx, StatusCodes.Status504GatewayTimeout, $"request: not answered within {timeout.TotalSeconds:0.#} s").AsTask(),
    };

    private static string Clip(string s) => s.Length <= 40 ? s : s[..40] + "…";

    private static readonly JsonSerializerOptions ErrorJson = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static ValueTask WriteError(HttpContext ctx, int status, string message, object? details = null)
    {
        if (ctx.Response.HasStarted) return ValueTask.CompletedTask;
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json; charset=utf-8";
        var body = new JsonObject { ["error"] = message };
        if (details is not null && JsonSerializer.SerializeToNode(details) is JsonObject extra)
            foreach (var (k, v) in extra.ToList()) { extra.Remove(k); body[k] = v; }
        return new ValueTask(ctx.Response.WriteAsync(body.ToJsonString(ErrorJson)));
    }
}

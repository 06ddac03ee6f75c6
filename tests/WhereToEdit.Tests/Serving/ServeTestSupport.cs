using Xunit;
using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.TestHost;
using WhereToEdit.Server;

namespace WhereToEdit.Tests.Serving;

/// <summary>The shipped Fashion-MNIST model, hypernetwork and benchmark images the serving tests use.</summary>
internal static class ServeAssets
{
    public static readonly string Root = FindRoot();
    public static string Model => Path.Combine(Root, "assets", "fashion_mnist", "vit.safetensors");
    public static string Hypernet => Path.Combine(Root, "assets", "fashion_mnist", "hypernet.safetensors");
    public static string Image(string relative) => Path.Combine(Root, "assets", "fashion_mnist", "benchmark", relative);

    /// <summary>A T-shirt the model calls a dress (label 0, predicted 3) and two more of the same confusion.</summary>
    public static readonly string Failure = Image("natural/0_3/00674.png");
    public static readonly string Failure2 = Image("natural/0_3/00859.png");
    public static readonly string Failure3 = Image("natural/0_3/01111.png");
    /// <summary>The learning rate the shipped model's evaluation uses (the paper's 2e-5 is too small for it).</summary>
    public const string Lr = "0.00024";

    private static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "WhereToEdit.sln"))) return d.FullName;
        throw new InvalidOperationException("cannot find the repository root (WhereToEdit.sln) above " + AppContext.BaseDirectory);
    }
}

/// <summary>A server over the in-memory TestServer with its own temporary journal folder.</summary>
internal sealed class TestServe : IAsyncDisposable
{
    private bool _ownsFolder;

    private TestServe(WebApplication app, ServeOptions options, string folder)
    {
        App = app;
        Options = options;
        Folder = folder;
        Client = app.GetTestClient();
    }

    public WebApplication App { get; }
    public ServeOptions Options { get; }
    public string Folder { get; }
    public string Journal => Path.Combine(Folder, "journal");
    public HttpClient Client { get; }

    public static async Task<TestServe> StartAsync(Func<ServeOptions, ServeOptions>? adjust = null, string? folder = null, bool hypernet = true)
    {
        bool owns = folder is null;
        folder ??= Directory.CreateTempSubdirectory("wte-serve-").FullName;
        var options = new ServeOptions
        {
            ModelPath = ServeAssets.Model, HypernetPath = hypernet ? ServeAssets.Hypernet : null,
            JournalPath = Path.Combine(folder, "journal"), Threads = 1,
        };
        if (adjust is not null) options = adjust(options);
        var app = WteServer.Build(options, b => b.WebHost.UseTestServer());
        await app.StartAsync();
        return new TestServe(app, options, folder) { _ownsFolder = owns };
    }

    public static MultipartFormDataContent Form(IEnumerable<string> images, params (string Name, string Value)[] fields)
    {
        var form = new MultipartFormDataContent();
        foreach (string path in images)
        {
            var file = new ByteArrayContent(File.ReadAllBytes(path));
            file.Headers.ContentType = new MediaTypeHeaderValue("image/png");
            form.Add(file, "image", Path.GetFileName(path));
        }
        foreach (var (name, value) in fields) form.Add(new StringContent(value), name);
        return form;
    }

    public static MultipartFormDataContent EditForm(string image, string label = "0", string method = "hprd", params (string, string)[] more) =>
        Form([image], [("label", label), ("method", method), ("lr", ServeAssets.Lr), .. more]);

    public static ByteArrayContent Png(string path)
    {
        var body = new ByteArrayContent(File.ReadAllBytes(path));
        body.Headers.ContentType = new MediaTypeHeaderValue("image/png");
        return body;
    }

    public async Task<JsonObject> GetJsonAsync(string path)
    {
        var r = await Client.GetAsync(path);
        return await Read(r, 200);
    }

    public async Task<JsonObject> PredictAsync(string image, int topK = 10)
    {
        var r = await Client.PostAsync($"/v1/predict?top_k={topK}", Png(image));
        return await Read(r, 200);
    }

    /// <summary>The body as a JSON object after checking the status (the body is in the failure message).</summary>
    public static async Task<JsonObject> Read(HttpResponseMessage r, int status)
    {
        string text = await r.Content.ReadAsStringAsync();
        Assert.True((int)r.StatusCode == status, $"expected HTTP {status}, got {(int)r.StatusCode}: {text}");
        Assert.StartsWith("application/json", r.Content.Headers.ContentType?.MediaType ?? "");
        return JsonNode.Parse(text)!.AsObject();
    }

    /// <summary>Asserts a 4xx JSON error whose message starts with the field it names.</summary>
    public static async Task<string> ErrorAsync(HttpResponseMessage r, int status, string field)
    {
        var body = await Read(r, status);
        string error = body["error"]!.GetValue<string>();
        Assert.StartsWith(field, error);
        Assert.DoesNotContain("   at ", error);   // never a stack trace
        return error;
    }

    public static float[] Probabilities(JsonObject prediction, int classes = 10)
    {
        var p = new float[classes];
        foreach (var t in prediction["top"]!.AsArray()) p[t!["index"]!.GetValue<int>()] = t["prob"]!.GetValue<float>();
        return p;
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
        if (_ownsFolder) try { Directory.Delete(Folder, recursive: true); } catch (IOException) { }
    }
}

using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

// TorchSharp (LibTorch CPU) timing peer for `wte bench`: the timm-equivalent ViT written with TorchSharp modules, wte's
// random weights loaded from safetensors (EditBench --write-weights), forward (no_grad) and forward + CE + backward.
// Usage: dotnet TorchSharpBench.dll --check 1                       (loads LibTorch, prints its version)
//        dotnet TorchSharpBench.dll --weights W.safetensors --model NAME [--batch 1] [--threads 2] [--seconds 5]
// One JSON line per batch: {"impl":"torchsharp-<ver>-libtorch-<ver>", "model", "batch", "threads", "forward_images_per_s",
// "forward_backward_images_per_s"}.
var opts = new Dictionary<string, string>();
for (int i = 0; i < args.Length; i += 2)
{
    if (!args[i].StartsWith("--") || i + 1 >= args.Length) { Console.Error.WriteLine($"TorchSharpBench: bad argument '{args[i]}'"); return 2; }
    opts[args[i][2..]] = args[i + 1];
}
int threads = int.Parse(opts.GetValueOrDefault("threads", "2"), CultureInfo.InvariantCulture);
torch.set_num_threads(threads);
torch.set_num_interop_threads(1);
string impl = $"torchsharp-0.107.0-libtorch-{torch.__version__}";
if (opts.ContainsKey("check"))
{
    using var t = torch.ones(4, 4).matmul(torch.ones(4, 4));
    Console.WriteLine($"{impl}: ok ({t.sum().item<float>()})");
    return 0;
}
if (!opts.TryGetValue("weights", out var weightsPath)) { Console.Error.WriteLine("TorchSharpBench: --weights FILE.safetensors is required"); return 2; }
string modelName = opts.GetValueOrDefault("model", Path.GetFileNameWithoutExtension(weightsPath));
double seconds = double.Parse(opts.GetValueOrDefault("seconds", "5"), CultureInfo.InvariantCulture);
int[] batches = opts.GetValueOrDefault("batch", "1").Split(',').Select(b => int.Parse(b, CultureInfo.InvariantCulture)).ToArray();

var (tensors, config) = SafeTensorsFile.Read(weightsPath);
var vit = new Vit(config);
using (torch.no_grad())
{
    var have = vit.named_parameters().ToDictionary(p => p.name, p => p.parameter);
    foreach (var (name, p) in have)
    {
        if (!tensors.TryGetValue(name, out var src)) throw new InvalidDataException($"{weightsPath}: no tensor '{name}'");
        p.copy_(torch.tensor(src.Data, src.Shape.Select(d => (long)d).ToArray()));
    }
    if (tensors.Keys.Except(have.Keys).FirstOrDefault() is { } extra) throw new InvalidDataException($"{weightsPath}: unexpected tensor '{extra}'");
}
int classes = config.GetProperty("num_classes").GetInt32(), chans = config.GetProperty("in_chans").GetInt32(), size = config.GetProperty("image_size").GetInt32();

foreach (int batch in batches)
{
    var x = torch.randn(batch, chans, size, size);
    var y = torch.randint(0, classes, batch, dtype: ScalarType.Int64);
    vit.eval();
    double fwd = Rate(batch, seconds, () => { using var d = torch.NewDisposeScope(); using var g = torch.no_grad(); vit.forward(x); });
    vit.train();
    double fb = Rate(batch, seconds, () =>
    {
        using var d = torch.NewDisposeScope();
        vit.zero_grad();
        var loss = torch.nn.functional.cross_entropy(vit.forward(x), y);
        loss.backward();
    });
    Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["impl"] = impl, ["model"] = modelName, ["batch"] = batch, ["threads"] = threads, ["device"] = "cpu", ["dtype"] = "fp32",
        ["forward_images_per_s"] = Math.Round(fwd, 3), ["forward_backward_images_per_s"] = Math.Round(fb, 3),
    }));
}
return 0;

static double Rate(int batch, double seconds, Action step)
{
    step(); step();   // two untimed calls, the rule every runner in perf/run-cpu-bench.sh follows
    var sw = Stopwatch.StartNew();
    int n = 0;
    do { step(); n++; } while (sw.Elapsed.TotalSeconds < seconds || n < 3);
    return n * batch / sw.Elapsed.TotalSeconds;
}

sealed class Attention : nn.Module<Tensor, Tensor>
{
    private readonly Linear qkv, proj;
    private readonly int heads;
    public Attention(int dim, int heads, bool qkvBias) : base("attn")
    {
        this.heads = heads;
        qkv = nn.Linear(dim, 3 * dim, hasBias: qkvBias);
        proj = nn.Linear(dim, dim);
        RegisterComponents();
    }
    public override Tensor forward(Tensor x)
    {
        long b = x.shape[0], n = x.shape[1], d = x.shape[2], hd = d / heads;
        var parts = qkv.forward(x).reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4).unbind(0);
        var a = (parts[0] * (1.0 / Math.Sqrt(hd))).matmul(parts[1].transpose(-2, -1)).softmax(-1);
        return proj.forward(a.matmul(parts[2]).transpose(1, 2).reshape(b, n, d));
    }
}

sealed class Mlp : nn.Module<Tensor, Tensor>
{
    private readonly Linear fc1, fc2;
    public Mlp(int dim, int hidden) : base("mlp") { fc1 = nn.Linear(dim, hidden); fc2 = nn.Linear(hidden, dim); RegisterComponents(); }
    public override Tensor forward(Tensor x) => fc2.forward(nn.functional.gelu(fc1.forward(x)));
}

sealed class Block : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm norm1, norm2;
    private readonly Attention attn;
    private readonly Mlp mlp;
    public Block(int dim, int heads, int hidden, bool qkvBias, double eps) : base("block")
    {
        norm1 = nn.LayerNorm(dim, eps); norm2 = nn.LayerNorm(dim, eps);
        attn = new Attention(dim, heads, qkvBias); mlp = new Mlp(dim, hidden);
        RegisterComponents();
    }
    public override Tensor forward(Tensor x)
    {
        x = x + attn.forward(norm1.forward(x));
        return x + mlp.forward(norm2.forward(x));
    }
}

sealed class PatchEmbed : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d proj;
    public PatchEmbed(int chans, int dim, int patch) : base("patch_embed") { proj = nn.Conv2d(chans, dim, patch, stride: patch); RegisterComponents(); }
    public override Tensor forward(Tensor x) => proj.forward(x).flatten(2).transpose(1, 2);
}

sealed class Vit : nn.Module<Tensor, Tensor>
{
    private readonly PatchEmbed patch_embed;
    private readonly Parameter cls_token, pos_embed;
    private readonly ModuleList<Block> blocks;
    private readonly LayerNorm norm;
    private readonly Linear head;
    public Vit(JsonElement c) : base("vit")
    {
        int d = c.GetProperty("embed_dim").GetInt32(), p = c.GetProperty("patch_size").GetInt32(), img = c.GetProperty("image_size").GetInt32();
        double eps = c.GetProperty("ln_eps").GetDouble();
        patch_embed = new PatchEmbed(c.GetProperty("in_chans").GetInt32(), d, p);
        cls_token = nn.Parameter(torch.zeros(1, 1, d));
        pos_embed = nn.Parameter(torch.zeros(1, (img / p) * (img / p) + 1, d));
        blocks = nn.ModuleList(Enumerable.Range(0, c.GetProperty("depth").GetInt32()).Select(_ =>
            new Block(d, c.GetProperty("num_heads").GetInt32(), c.GetProperty("mlp_hidden").GetInt32(), c.GetProperty("qkv_bias").GetBoolean(), eps)).ToArray());
        norm = nn.LayerNorm(d, eps);
        head = nn.Linear(d, c.GetProperty("num_classes").GetInt32());
        RegisterComponents();
    }
    public override Tensor forward(Tensor x)
    {
        x = patch_embed.forward(x);
        x = torch.cat([cls_token.expand(x.shape[0], -1, -1), x], 1) + pos_embed;
        foreach (var b in blocks) x = b.forward(x);
        return head.forward(norm.forward(x.select(1, 0)));
    }
}

static class SafeTensorsFile
{
    public sealed record Entry(int[] Shape, float[] Data);

    /// <summary>The F32 tensors of a wte safetensors file and its wte.config (JSON).</summary>
    public static (Dictionary<string, Entry> Tensors, JsonElement Config) Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        long n = BitConverter.ToInt64(bytes, 0);
        using var doc = JsonDocument.Parse(Encoding.UTF8.GetString(bytes, 8, (int)n));
        var result = new Dictionary<string, Entry>();
        JsonElement? config = null;
        foreach (var e in doc.RootElement.EnumerateObject())
        {
            if (e.Name == "__metadata__")
            {
                if (e.Value.TryGetProperty("wte.config", out var cfg)) config = JsonDocument.Parse(cfg.GetString()!).RootElement.Clone();
                continue;
            }
            if (e.Value.GetProperty("dtype").GetString() != "F32") throw new InvalidDataException($"{path}: '{e.Name}' is not F32");
            var shape = e.Value.GetProperty("shape").EnumerateArray().Select(v => v.GetInt32()).ToArray();
            var off = e.Value.GetProperty("data_offsets").EnumerateArray().Select(v => v.GetInt64()).ToArray();
            var data = new float[(off[1] - off[0]) / 4];
            Buffer.BlockCopy(bytes, (int)(8 + n + off[0]), data, 0, (int)(off[1] - off[0]));
            result[e.Name] = new Entry(shape, data);
        }
        return (result, config ?? throw new InvalidDataException($"{path}: no wte.config metadata"));
    }
}

using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

// End-to-end HPRD edits through ModelEditor, the way `wte edit` runs them once the model is loaded: the original
// model's forward for the [CLS] features, the hypernetwork, the global top-k mask, a new ModelEditor, then masked
// RMSprop steps until the stop rule (every image right and mean CE ≤ 0.01) or --max-steps.
// Usage: dotnet EditBench.dll --case vit_base|fashion [--threads 2] [--repeats 3] [--max-steps N] [--write-case DIR]
//                             [--path fast|full|both] [--reuse-editor true]
//        dotnet EditBench.dll --write-weights FILE.safetensors --preset vit_base_patch16_224   (the bench's random weights)
// --write-case saves the weights, hypernetwork, image and settings for perf/peers/pytorch_edit.py (run that on the same
// folder). Prints one JSON line per timed edit (wall and process CPU time) after an untimed one-step warm-up edit.
// --reuse-editor true keeps one editor per path across the edits, as `wte eval` and `wte serve` do (default: a new one
// per edit, as `wte edit`). --first-block-ab ROUNDS times EditPass steps (forward from the cache, CE, backward; no
// optimizer) with the first edited block from its cache against the full first block (the cache dropped by a re-Select),
// alternating 5 steps of each per round in this one process.
var opts = new Dictionary<string, string>();
for (int i = 0; i + 1 < args.Length; i += 2)
{
    if (!args[i].StartsWith("--")) { Console.Error.WriteLine($"EditBench: unexpected argument '{args[i]}'"); return 2; }
    opts[args[i][2..]] = args[i + 1];
}
if (opts.TryGetValue("write-weights", out var weightsPath))
{
    // The random weights `wte bench` times (InitializeRandom(0)) for a preset, as self-describing safetensors: what the
    // ONNX Runtime, TorchSharp and PyTorch peers load (perf/peers/export_onnx.py).
    string preset = opts.GetValueOrDefault("preset", "vit_base_patch16_224");
    using var host = new CpuBackend(new CpuBackendOptions { Threads = 1 });
    var pc = VitConfig.Preset(preset);
    using var m = new VitModel(host, pc);
    m.InitializeRandom(0);
    SafeTensors.Write(weightsPath, VitCheckpoint.ToTensorFile(m, WteMetadata.Build(pc, null, null)));
    // The logits of one all-zero image, for the peers' export checks (FILE.logits.f32, little-endian float32).
    using var ws = m.CreateWorkspace(1);
    using var zero = host.Allocate("zero", 1, pc.InChans, pc.ImageSize, pc.ImageSize);
    m.Forward(ws, zero, 1);
    var logits = ws.Logits.ToArray();
    var raw = new byte[logits.Length * 4];
    Buffer.BlockCopy(logits, 0, raw, 0, raw.Length);
    File.WriteAllBytes(weightsPath + ".logits.f32", raw);
    return 0;
}
string caseName = opts.GetValueOrDefault("case", "vit_base");
int threads = int.Parse(opts.GetValueOrDefault("threads", "2"), CultureInfo.InvariantCulture);
int repeats = int.Parse(opts.GetValueOrDefault("repeats", "3"), CultureInfo.InvariantCulture);
string path = opts.GetValueOrDefault("path", "fast");
if (path is not ("fast" or "full" or "both")) { Console.Error.WriteLine($"EditBench: --path '{path}': expected fast, full or both"); return 2; }
bool reuseEditor = opts.GetValueOrDefault("reuse-editor", "false") == "true";
string repo = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "../../../../.."));

using var be = new CpuBackend(new CpuBackendOptions { Threads = threads });
VitModel vit;
Hypernetwork net;
int[] editBlocks;
float[] pixels;
int label, maxSteps;
string fingerprint;
if (caseName == "vit_base")
{
    // Random weights (timm init), a random hypernetwork of the paper's shape, one random image. A random model's
    // logits are nearly uniform, so the stop rule is not reached: the edit runs --max-steps (default 20) steps.
    var config = VitConfig.Preset("vit_base_patch16_224");
    vit = new VitModel(be, config);
    vit.InitializeRandom(0);
    editBlocks = EditTarget.DefaultBlocks(config.Depth);
    net = new Hypernetwork(be, HypernetConfig.For(config, units: 2 * editBlocks.Length));
    net.InitializeRandom(1);
    var rng = new Rng(2);
    pixels = new float[config.InChans * config.ImageSize * config.ImageSize];
    for (int i = 0; i < pixels.Length; i++) pixels[i] = (float)rng.NextNormal();
    label = 1 + rng.NextInt(0, config.NumClasses - 1);
    maxSteps = int.Parse(opts.GetValueOrDefault("max-steps", "20"), CultureInfo.InvariantCulture);
    fingerprint = VitCheckpoint.Fingerprint(vit);
}
else if (caseName == "fashion")
{
    // The shipped Fashion-MNIST model and hypernetwork, one benchmark image the model gets wrong (T-shirt/top seen as Dress).
    var loaded = ModelFolder.Load(Path.Combine(repo, "assets/fashion_mnist/vit.safetensors"));
    vit = VitCheckpoint.Load(be, loaded);
    fingerprint = VitCheckpoint.Fingerprint(vit);
    var hn = HypernetFile.Load(be, Path.Combine(repo, "assets/fashion_mnist/hypernet.safetensors"), vit, fingerprint);
    net = hn.Network;
    editBlocks = hn.EditBlocks;
    pixels = new ImageLoader().Load(Path.Combine(repo, "assets/fashion_mnist/benchmark/natural/0_3/00674.png"), loaded.Preprocessing);
    label = 0;
    maxSteps = int.Parse(opts.GetValueOrDefault("max-steps", "100"), CultureInfo.InvariantCulture);
}
else { Console.Error.WriteLine($"EditBench: --case '{caseName}': expected vit_base or fashion"); return 2; }

var c = vit.Config;
var target = new EditTarget(c, editBlocks);
const double keep = 0.1;
var options = new EditOptions { Method = EditMethod.Hprd, LearningRate = (float)ScalingRules.EditLearningRate(c.EmbedDim), MaxSteps = maxSteps };

if (opts.TryGetValue("write-case", out var dir))
{
    Directory.CreateDirectory(dir);
    SafeTensors.Write(Path.Combine(dir, "vit.safetensors"), VitCheckpoint.ToTensorFile(vit, WteMetadata.Build(c, null, null)));
    HypernetFile.Save(Path.Combine(dir, "hypernet.safetensors"), net, editBlocks, fingerprint);
    var bytes = new byte[pixels.Length * 4];
    Buffer.BlockCopy(pixels, 0, bytes, 0, bytes.Length);
    File.WriteAllBytes(Path.Combine(dir, "images.f32"), bytes);
    File.WriteAllText(Path.Combine(dir, "case.json"), JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["case"] = caseName, ["vit"] = c, ["hypernet"] = net.Config, ["edit_blocks"] = editBlocks, ["images"] = 1,
        ["labels"] = new[] { label }, ["lr"] = options.LearningRate, ["max_steps"] = maxSteps, ["stop_loss"] = options.StopLoss, ["keep"] = keep,
    }));
}

if (opts.TryGetValue("first-block-ab", out var abText))
{
    int rounds = int.Parse(abText, CultureInfo.InvariantCulture);
    var abMask = EditMask.TopK(target, new MaskPredictor(vit, net, target).Scores(pixels, 1), keep);
    using var ws = vit.CreateWorkspace(1);
    using var pass = new EditPass(vit, target.FirstBlock, target.Units.Select(u => (u.Parameter, u.Axis)).ToArray(), 1);
    using var x = be.FromHost("x", pixels, 1, c.InChans, c.ImageSize, c.ImageSize);
    using var y = be.FromHost("y", new[] { (float)label }, 1);
    void SelectAll() { foreach (var u in target.Units) pass.Select(u.Index, abMask.Indices(u.Index)); }
    double Steps(int k)
    {
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < k; i++)
        {
            pass.ForwardFrom(ws, 1);
            be.CrossEntropy(ws.Logits, y, ws.Losses, ws.DLogits, 1, c.NumClasses, 1f);
            pass.Backward(ws, 1);
        }
        be.Synchronize();
        return sw.Elapsed.TotalMilliseconds / k;
    }
    SelectAll(); pass.Forward(ws, x, 1); Steps(2);   // warm-up of both
    SelectAll(); Steps(2);
    for (int r = 0; r < rounds; r++)
    {
        string load = File.ReadAllText("/proc/loadavg").Split(' ')[0];
        SelectAll(); pass.Forward(ws, x, 1);
        double cached = Steps(5);
        SelectAll();   // drops the first block's cache: the full block, as before it existed
        double full = Steps(5);
        Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["first_block_ab"] = true, ["case"] = caseName, ["round"] = r, ["cached_ms_per_step"] = Math.Round(cached, 2),
            ["full_ms_per_step"] = Math.Round(full, 2), ["load_before"] = load,
        }));
    }
    return 0;
}

var original = vit.Parameters.Select(p => p.Value.ToArray()).ToArray();
var process = Process.GetCurrentProcess();
var editors = new Dictionary<bool, ModelEditor>();
// --path both alternates the fast and the full path edit by edit in this one process (A B A B ...), each warmed up.
int runs = path == "both" ? 2 * (repeats + 1) : repeats + 1;
for (int i = 0; i < runs; i++)
{
    int run = path == "both" ? i / 2 : i;
    bool fast = path == "both" ? i % 2 == 0 : path == "fast";
    for (int p = 0; p < original.Length; p++) vit.Parameters[p].Value.CopyFrom(original[p]);
    be.Synchronize();
    process.Refresh();
    var cpu0 = process.TotalProcessorTime;
    var sw = Stopwatch.StartNew();
    // As `wte edit` (EditJob.Edit): the editor first, then the mask through it (its forward is the edit's first one).
    if (!editors.TryGetValue(fast, out var editor) || !reuseEditor)
    {
        editor?.Dispose();
        editors[fast] = editor = new ModelEditor(vit, target, fastPath: fast);
    }
    be.Synchronize();
    double ctorMs = sw.Elapsed.TotalMilliseconds;
    var scores = editor.MaskScores(new MaskPredictor(vit, net, target), pixels, 1);
    var mask = EditMask.TopK(target, scores, keep);
    double maskMs = sw.Elapsed.TotalMilliseconds - ctorMs;
    // Run 0 is an untimed one-step warm-up (JIT, first touch of the buffers). Edit = Begin, Step until false, Finish;
    // called one by one here for the breakdown of where the time goes.
    editor.Begin(pixels, [label], mask, run == 0 ? options with { MaxSteps = 1 } : options);
    be.Synchronize();
    double beginMs = sw.Elapsed.TotalMilliseconds;
    while (editor.Step()) { }
    be.Synchronize();
    double stepsMs = sw.Elapsed.TotalMilliseconds;
    var result = editor.Finish();
    be.Synchronize();
    double totalMs = sw.Elapsed.TotalMilliseconds;
    process.Refresh();
    double cpuMs = (process.TotalProcessorTime - cpu0).TotalMilliseconds;
    if (run == 0) continue;
    Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["impl"] = fast ? "wte" : "wte-fullpath", ["in_process_ab"] = path == "both", ["reuse_editor"] = reuseEditor, ["case"] = caseName, ["threads"] = threads, ["backend"] = be.Name,
        ["run"] = run, ["total_ms"] = Math.Round(totalMs, 2), ["cpu_ms"] = Math.Round(cpuMs, 1), ["mask_ms"] = Math.Round(maskMs, 2), ["steps"] = result.Steps,
        ["success"] = result.Success, ["initial_loss"] = result.InitialLoss, ["final_loss"] = result.FinalLoss,
        ["ms_per_step"] = Math.Round((totalMs - maskMs) / Math.Max(1, result.Steps), 2), ["kept_gates"] = result.KeptGates,
        // Breakdown: the editor's construction, Begin (forward, hashes), the steps, Finish (forward, hashes, count).
        ["ctor_ms"] = Math.Round(ctorMs, 2), ["begin_ms"] = Math.Round(beginMs - maskMs - ctorMs, 2),
        ["steps_ms"] = Math.Round(stepsMs - beginMs, 2), ["finish_ms"] = Math.Round(totalMs - stepsMs, 2),
    }));
}
foreach (var e in editors.Values) e.Dispose();
return 0;

using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

// Forward throughput of an exported ViT (perf/peers/export_onnx.py) on ONNX Runtime's CPU execution provider.
// Usage: dotnet OrtBench.dll --onnx MODEL.onnx --model NAME [--batch 1,8] [--threads 2] [--seconds 5] [--spin 0|1] [--profile PREFIX]
//        [--check-logits FILE.f32]   (compares batch-1 logits of a zero image against FILE, written by the same model in wte)
// One JSON line per batch: {"impl":"onnxruntime-1.31.1", "model", "batch", "threads", "forward_images_per_s", ...}.
var opts = new Dictionary<string, string>();
for (int i = 0; i + 1 < args.Length; i += 2)
{
    if (!args[i].StartsWith("--")) { Console.Error.WriteLine($"OrtBench: unexpected argument '{args[i]}'"); return 2; }
    opts[args[i][2..]] = args[i + 1];
}
if (!opts.TryGetValue("onnx", out var onnxPath)) { Console.Error.WriteLine("OrtBench: --onnx MODEL.onnx is required"); return 2; }
string modelName = opts.GetValueOrDefault("model", Path.GetFileNameWithoutExtension(onnxPath));
int threads = int.Parse(opts.GetValueOrDefault("threads", "2"), CultureInfo.InvariantCulture);
double seconds = double.Parse(opts.GetValueOrDefault("seconds", "5"), CultureInfo.InvariantCulture);
int[] batches = opts.GetValueOrDefault("batch", "1,8").Split(',').Select(b => int.Parse(b, CultureInfo.InvariantCulture)).ToArray();

using var so = new SessionOptions
{
    IntraOpNumThreads = threads, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
    GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
};
// Spinning intra-op threads (ORT's default) can only lose on a shared, oversubscribed machine: --spin 0 turns it off.
if (opts.GetValueOrDefault("spin", "1") == "0") so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
// The prefix first: EnableProfiling = true hands ORT the prefix set at that moment (set after, it was ignored and the
// profile landed in the working directory as onnxruntime_profile__TIME.json). ORT appends _TIME.json to it.
if (opts.TryGetValue("profile", out var profilePrefix)) { so.ProfileOutputPathPrefix = profilePrefix; so.EnableProfiling = true; }
using var session = new InferenceSession(onnxPath, so);
var input = session.InputMetadata.First();
int[] dims = input.Value.Dimensions;   // [-1, C, H, W]
string version = OrtEnv.Instance().GetVersionString();

foreach (int batch in batches)
{
    var shape = new[] { batch, dims[1], dims[2], dims[3] };
    var pixels = new float[shape.Aggregate(1, (a, b) => a * b)];
    var rng = new Random(1);
    for (int i = 0; i < pixels.Length; i++) pixels[i] = (float)(rng.NextDouble() * 2 - 1);
    using var value = OrtValue.CreateTensorValueFromMemory(pixels, shape.Select(d => (long)d).ToArray());
    var names = new[] { input.Key };
    var outNames = new[] { session.OutputMetadata.First().Key };
    using var runOptions = new RunOptions();
    void Step() { using var r = session.Run(runOptions, names, new[] { value }, outNames); }
    Step(); Step();   // two untimed calls, the rule every runner in perf/run-cpu-bench.sh follows
    var sw = Stopwatch.StartNew();
    int iterations = 0;
    do { Step(); iterations++; } while (sw.Elapsed.TotalSeconds < seconds || iterations < 3);
    double perSecond = iterations * batch / sw.Elapsed.TotalSeconds;
    Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["impl"] = "onnxruntime-" + version, ["model"] = modelName, ["batch"] = batch, ["threads"] = threads, ["device"] = "cpu",
        ["dtype"] = "fp32", ["forward_images_per_s"] = Math.Round(perSecond, 3), ["iterations"] = iterations,
        ["spin"] = opts.GetValueOrDefault("spin", "1"),
    }));
}

if (opts.TryGetValue("check-logits", out var logitsPath))
{
    // Batch 1, a zero image: the logits must match wte's on the same weights (export check).
    var zeros = new float[dims[1] * dims[2] * dims[3]];
    using var value = OrtValue.CreateTensorValueFromMemory(zeros, new long[] { 1, dims[1], dims[2], dims[3] });
    using var r = session.Run(new RunOptions(), new[] { input.Key }, new[] { value }, new[] { session.OutputMetadata.First().Key });
    var got = r[0].GetTensorDataAsSpan<float>().ToArray();
    var bytes = File.ReadAllBytes(logitsPath);
    var want = new float[bytes.Length / 4];
    Buffer.BlockCopy(bytes, 0, want, 0, bytes.Length);
    double err = got.Zip(want, (a, b) => Math.Abs(a - b)).Max(), scale = want.Max(Math.Abs);
    Console.Error.WriteLine($"logits vs wte: max |ORT − wte| = {err:E2} (max |wte| = {scale:E2})");
    if (got.Length != want.Length || err > 1e-3 * Math.Max(1, scale)) { Console.Error.WriteLine("OrtBench: the exported model's logits differ from wte's"); return 1; }
}
if (so.EnableProfiling) Console.Error.WriteLine($"profile: {session.EndProfiling()}");
return 0;

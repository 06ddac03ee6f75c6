using System.Diagnostics;
using System.Runtime.Intrinsics;
using WhereToEdit.Engine.Backends.Cpu;

// Manual timing harness: GFLOP/s of ManagedGemm.Sgemm for square and ViT-B shapes, threads 1 and 2.
// Usage: dotnet run -c Release --project perf/GemmBench -- [quick] [tA] [nB]
//   quick: fewer repetitions; tA: A transposed; nB: B not transposed (default: B transposed, like x·Wᵀ).
bool quick = args.Contains("quick");
bool transA = args.Contains("tA");
bool transB = !args.Contains("nB");
Console.WriteLine($"Vector512 accelerated: {Vector512.IsHardwareAccelerated}, Vector256: {Vector256.IsHardwareAccelerated}, " +
    $"cores: {Environment.ProcessorCount}, transA={transA}, transB={transB}");

(int M, int N, int K, string Name)[] shapes =
[
    (512, 512, 512, "512^3"),
    (1024, 1024, 1024, "1024^3"),
    (2048, 2048, 2048, "2048^3"),
    (1576, 3072, 768, "ViT fc1 1576x3072x768"),
    (1576, 768, 3072, "ViT fc2 1576x768x3072"),
    (197, 3072, 768, "ViT fc1 197x3072x768"),
    (197, 768, 768, "ViT proj 197x768x768"),
    (197, 197, 64, "attn QK^T 197x197x64"),
    (197, 64, 197, "attn PV 197x64x197"),
];

foreach (var (m, n, k, name) in shapes)
{
    var a = new float[(long)m * k];
    var b = new float[(long)k * n];
    var c = new float[(long)m * n];
    var rng = new Random(1);
    for (int i = 0; i < a.Length; i++) a[i] = (float)rng.NextDouble() - 0.5f;
    for (int i = 0; i < b.Length; i++) b[i] = (float)rng.NextDouble() - 0.5f;
    double flops = 2.0 * m * n * k;
    Console.Write($"{name,-24}");
    foreach (int threads in new[] { 1, 2 })
    {
        double best = double.MaxValue;
        double budget = quick ? 0.6 : 2.0;
        int minReps = quick ? 2 : 3;
        var total = Stopwatch.StartNew();
        int reps = 0;
        unsafe
        {
            fixed (float* pa = a, pb = b, pc = c)
            {
                int lda = transA ? m : k, ldb = transB ? k : n;
                ManagedGemm.Sgemm(transA, transB, m, n, k, 1f, pa, lda, pb, ldb, 0f, pc, n, threads); // warm-up
                while (reps < minReps || total.Elapsed.TotalSeconds < budget)
                {
                    var sw = Stopwatch.StartNew();
                    ManagedGemm.Sgemm(transA, transB, m, n, k, 1f, pa, lda, pb, ldb, 0f, pc, n, threads);
                    best = Math.Min(best, sw.Elapsed.TotalSeconds);
                    reps++;
                    if (reps >= 50) break;
                }
            }
        }
        Console.Write($"  t={threads}: {flops / best / 1e9,7:F1} GFLOP/s ({best * 1e3,7:F2} ms)");
    }
    Console.WriteLine();
}

using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Jobs;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Ops;

/// <summary>
/// The opt-in bf16 linear layers (<see cref="CpuPrecision.Bf16"/>, libwte_cpu.so): each output is the fp32 sum of the
/// products of bf16-rounded inputs and weights, independent of the thread count; a ViT forward stays close to fp32.
/// Skipped where the library is not built or the CPU lacks AVX512_BF16.
/// </summary>
public sealed class Bf16GemmTests(ITestOutputHelper output)
{
    private static void SkipUnlessAvailable() => Skip.If(Bf16Gemm.WhyUnavailable is not null, Bf16Gemm.WhyUnavailable);

    private static float[] Random(int length, int seed)
    {
        var rng = new Random(seed);
        var x = new float[length];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }

    /// <summary>fp32 → bf16 → fp32, round to nearest even (what VCVTNE2PS2BF16 does to normal numbers).</summary>
    private static float Bf16(float x)
    {
        uint u = BitConverter.SingleToUInt32Bits(x);
        u += 0x7fffu + ((u >> 16) & 1u);
        return BitConverter.UInt32BitsToSingle(u & 0xffff0000u);
    }

    private static float[] Run(int threads, float[] x, float[] w, int m, int n, int k, long budget = 1L << 30)
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = threads, Gemm = GemmKind.Managed, Precision = CpuPrecision.Bf16, PackedWeightBytes = budget });
        using var tx = be.FromHost("x", x, x.Length);
        using var tw = be.FromHost("w", w, w.Length);
        using var ty = be.Allocate("y", m * n);
        be.Gemm(false, true, m, n, k, 1f, tx, 0, k, tw, 0, k, 0f, ty, 0, n);
        var first = ty.ToArray();
        be.Gemm(false, true, m, n, k, 1f, tx, 0, k, tw, 0, k, 0f, ty, 0, n);   // from the cached pack (or scratch)
        Assert.Equal(first, ty.ToArray());
        return first;
    }

    [SkippableTheory]
    [InlineData(37, 300, 261)]   // edge tile, edge panel, odd k
    [InlineData(197, 768, 768)]  // one image's tokens through a ViT-B projection
    [InlineData(1, 64, 1024)]
    public void Each_output_is_the_fp32_sum_of_bf16_products(int m, int n, int k)
    {
        SkipUnlessAvailable();
        var x = Random(m * k, 1);
        var w = Random(n * k, 2);
        var y = Run(2, x, w, m, n, k);
        double worst = 0;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double exact = 0, scale = 0;
                for (int p = 0; p < k; p++)
                {
                    double t = (double)Bf16(x[i * k + p]) * Bf16(w[j * k + p]);
                    exact += t;
                    scale += Math.Abs(t);
                }
                // fp32 accumulation of k exact products: error ≤ k·2⁻²⁴·Σ|t| (loose; typical is far smaller).
                double err = Math.Abs(y[i * n + j] - exact) / Math.Max(scale, 1e-30);
                worst = Math.Max(worst, err);
                Assert.True(err <= k * 6e-8, $"y[{i},{j}] = {y[i * n + j]}, bf16 products sum to {exact} (relative error {err:E2})");
            }
        output.WriteLine($"{m}x{n}x{k}: worst error relative to sum |x·w| = {worst:E2}");
    }

    [SkippableFact]
    public void Results_do_not_depend_on_threads_or_on_the_pack_budget()
    {
        SkipUnlessAvailable();
        const int m = 50, n = 200, k = 333;
        var x = Random(m * k, 3);
        var w = Random(n * k, 4);
        var one = Run(1, x, w, m, n, k);
        Assert.Equal(one, Run(2, x, w, m, n, k));
        Assert.Equal(one, Run(2, x, w, m, n, k, budget: 1024));   // no room: packs into scratch every call
    }

    [SkippableFact]
    public void A_weight_written_after_packing_is_repacked()
    {
        SkipUnlessAvailable();
        const int m = 20, n = 128, k = 600;
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2, Gemm = GemmKind.Managed, Precision = CpuPrecision.Bf16 });
        using var tx = be.FromHost("x", Random(m * k, 5), m * k);
        using var tw = be.FromHost("w", Random(n * k, 6), n * k);
        using var ty = be.Allocate("y", m * n);
        be.Gemm(false, true, m, n, k, 1f, tx, 0, k, tw, 0, k, 0f, ty, 0, n);
        var w2 = Random(n * k, 7);
        tw.CopyFrom(w2);
        be.Gemm(false, true, m, n, k, 1f, tx, 0, k, tw, 0, k, 0f, ty, 0, n);
        Assert.Equal(Run(2, tx.ToArray(), w2, m, n, k), ty.ToArray());
    }

    [SkippableFact]
    public void A_vit_forward_in_bf16_stays_close_to_fp32()
    {
        SkipUnlessAvailable();
        var config = VitConfig.Presets["vit_tiny_patch16_224"];
        float[] Logits(CpuPrecision precision)
        {
            using var be = new CpuBackend(new CpuBackendOptions { Threads = 2, Gemm = GemmKind.Managed, Precision = precision });
            using var model = new VitModel(be, config);
            model.InitializeRandom(11);
            using var ws = model.CreateWorkspace(2);
            var rng = new Random(12);
            var pixels = new float[2 * 3 * 224 * 224];
            for (int i = 0; i < pixels.Length; i++) pixels[i] = (float)(rng.NextDouble() * 2 - 1);
            using var images = be.FromHost("images", pixels, 2, 3, 224, 224);
            model.Forward(ws, images, 2);
            return ws.Logits.ToArray();
        }
        var fp32 = Logits(CpuPrecision.Fp32);
        var bf16 = Logits(CpuPrecision.Bf16);
        double maxAbs = fp32.Max(v => Math.Abs(v));
        double maxErr = fp32.Zip(bf16, (a, b) => Math.Abs(a - b)).Max();
        output.WriteLine($"vit_tiny logits: max |fp32| {maxAbs:F4}, max |bf16 − fp32| {maxErr:E2}");
        Assert.NotEqual(fp32, bf16);                  // the bf16 path did run
        Assert.True(maxErr <= 0.02 * maxAbs + 1e-3, $"bf16 logits drift {maxErr:E2} from fp32 (max |logit| {maxAbs:F4})");
    }

    [Fact]
    public void Bad_precision_choices_name_the_flag()
    {
        var e = Assert.Throws<ArgumentException>(() => BackendChoice.ParsePrecision("fp16"));
        Assert.Contains("--precision 'fp16'", e.Message);
        Assert.Contains("fp32 or bf16", e.Message);
        var d = Assert.Throws<ArgumentException>(() => BackendFactory.Create("cuda", precision: CpuPrecision.Bf16));
        Assert.Contains("--precision bf16", d.Message);
        Assert.Contains("--device cpu", d.Message);
    }
}

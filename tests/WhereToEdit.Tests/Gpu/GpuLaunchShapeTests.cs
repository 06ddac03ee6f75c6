using ILGPU;
using ILGPU.Runtime.CPU;
using WhereToEdit.Engine.Backends.Gpu;
using WhereToEdit.Engine.Tensors;
using Xunit;
using Xunit.Abstractions;
using static WhereToEdit.Tests.Gpu.GpuTestData;

namespace WhereToEdit.Tests.Gpu;

/// <summary>
/// The row kernels (LayerNorm, softmax, attention softmax backward, losses) with a CUDA device's launch shape:
/// warps of 32 and 256-thread row groups, on the CPU emulator. The other GPU tests use the emulator's cheap shape
/// (warps of 4, 32-thread row groups); the kernels are the same, only the group reductions' widths differ.
/// </summary>
[Collection(GpuEmulatorCollection.Name)]
public sealed class GpuLaunchShapeTests(GpuEmulatorFixture f, ITestOutputHelper output)
{
    [Fact]
    public void Row_kernels_match_with_warps_of_32_and_256_thread_groups()
    {
        using var gpu = GpuBackend.CreateCpuEmulator(warpSize: 32, new GpuBackend.LaunchShape(RowThreads: 256, MaxRowGroups: 2, MaxGroups: 2));
        var cpu = f.Cpu;
        Assert.Equal(32, gpu.Accelerator.WarpSize);

        void Same(string name, Tensor a, Tensor e) => Compare.Check(output, name, a.ToArray(), e.ToArray(), 1e-5);
        (Tensor C, Tensor G) Both(string name, float[] data, params int[] shape) => (cpu.FromHost(name, data, shape), gpu.FromHost(name, data, shape));

        // LayerNorm over 300 columns (more than a group's threads) on 2 rows, forward and backward.
        const int rows = 2, cols = 300;
        var x = Both("x", Random(1, rows * cols, 2f), rows, cols);
        var g = Both("g", Random(2, cols), cols);
        var b = Both("b", Random(3, cols), cols);
        var y = Both("y", new float[rows * cols], rows, cols);
        var mean = Both("mean", new float[rows], rows);
        var rstd = Both("rstd", new float[rows], rows);
        cpu.LayerNormForward(x.C, g.C, b.C, y.C, mean.C, rstd.C, rows, cols, 1e-6f);
        gpu.LayerNormForward(x.G, g.G, b.G, y.G, mean.G, rstd.G, rows, cols, 1e-6f);
        Same("layernorm y", y.G, y.C);
        Same("layernorm rstd", rstd.G, rstd.C);
        var dy = Both("dy", Random(4, rows * cols), rows, cols);
        var dx = Both("dx", new float[rows * cols], rows, cols);
        var dg = Both("dg", new float[cols], cols);
        var db = Both("db", new float[cols], cols);
        cpu.LayerNormBackward(dy.C, x.C, g.C, mean.C, rstd.C, dx.C, dg.C, db.C, rows, cols, accumulateDx: false);
        gpu.LayerNormBackward(dy.G, x.G, g.G, mean.G, rstd.G, dx.G, dg.G, db.G, rows, cols, accumulateDx: false);
        Same("layernorm dx", dx.G, dx.C);
        Same("layernorm dgamma", dg.G, dg.C);

        // Softmax and the losses.
        cpu.Softmax(x.C, y.C, rows, cols, 1.5f);
        gpu.Softmax(x.G, y.G, rows, cols, 1.5f);
        Same("softmax", y.G, y.C);
        var labels = Both("labels", [17f, 299f], rows);
        var losses = Both("losses", new float[rows], rows);
        cpu.CrossEntropy(x.C, labels.C, losses.C, dx.C, rows, cols, 0.5f);
        gpu.CrossEntropy(x.G, labels.G, losses.G, dx.G, rows, cols, 0.5f);
        Same("ce losses", losses.G, losses.C);
        Same("ce dlogits", dx.G, dx.C);
        cpu.KlDivergence(x.C, y.C, losses.C, dx.C, rows, cols, 3f, 0.5f);
        gpu.KlDivergence(x.G, y.G, losses.G, dx.G, rows, cols, 3f, 0.5f);
        Same("kl dlogits", dx.G, dx.C);

        // Attention (its softmax and softmax backward are row kernels): 1 image, 3 tokens, 1 head of 4.
        var qkv = Both("qkv", Random(5, 3 * 12, 2f), 1, 3, 12);
        var o = Both("o", new float[12], 1, 3, 4);
        var probs = Both("probs", new float[9], 1, 1, 3, 3);
        var dqkv = Both("dqkv", new float[36], 1, 3, 12);
        cpu.AttentionForward(qkv.C, o.C, probs.C, 1, 3, 1, 4);
        gpu.AttentionForward(qkv.G, o.G, probs.G, 1, 3, 1, 4);
        Same("attention output", o.G, o.C);
        cpu.AttentionBackward(o.C, qkv.C, probs.C, dqkv.C, 1, 3, 1, 4);
        gpu.AttentionBackward(o.G, qkv.G, probs.G, dqkv.G, 1, 3, 1, 4);
        Same("attention dqkv", dqkv.G, dqkv.C);
    }

    [Fact]
    public void A_caller_owned_cpu_accelerator_runs_the_backend_and_too_small_groups_are_rejected()
    {
        using var context = Context.Create(builder => builder.CPU(new CPUDevice(4, 64, 1)).CPU(CPUDeviceKind.Default));
        using (var accelerator = context.CreateCPUAccelerator(0))
        {
            using var gpu = new GpuBackend(accelerator);
            using var a = gpu.FromHost("a", [1f, 2f, 3f], 3);
            gpu.Axpy(2f, a, a, 3);
            Assert.Equal(new[] { 3f, 6f, 9f }, a.ToArray());
        }
        using var small = context.CreateCPUAccelerator(1);   // groups of 16
        Assert.Throws<NotSupportedException>(() => new GpuBackend(small));
        output.WriteLine($"accelerator 0: {context.GetCPUDevice(0)}; accelerator 1: {context.GetCPUDevice(1)}");
    }
}

using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Backends.Gpu;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using Xunit;
using Xunit.Abstractions;
using static WhereToEdit.Tests.Gpu.GpuTestData;

namespace WhereToEdit.Tests.Gpu;

/// <summary>
/// CUDA discovery everywhere, and on a machine with an NVIDIA driver and device a small end-to-end check on the
/// real GPU. Without one, the device check reports itself as skipped, with the reason.
/// </summary>
public sealed class GpuCudaTests(ITestOutputHelper output)
{
    [Fact]
    public void TryCreateCuda_reports_a_reason_instead_of_throwing()
    {
        for (int attempt = 0; attempt < 2; attempt++)   // the driver probe and resolver install are idempotent
        {
            bool ok = GpuBackend.TryCreateCuda(out var backend, out string reason);
            output.WriteLine($"TryCreateCuda: {ok}: {reason}");
            Assert.False(string.IsNullOrWhiteSpace(reason));
            if (ok)
            {
                Assert.NotNull(backend);
                Assert.NotNull(backend!.CudaAccelerator);
                Assert.NotNull(backend.CudaStream);
                backend.Dispose();
            }
            else
            {
                Assert.Null(backend);
                Assert.StartsWith("no CUDA device", reason);
                bool driverPresent = File.Exists("/usr/lib/x86_64-linux-gnu/libcuda.so.1") || File.Exists("/usr/lib64/libcuda.so.1")
                                     || File.Exists("/usr/lib/aarch64-linux-gnu/libcuda.so.1");
                if (OperatingSystem.IsLinux() && !driverPresent) Assert.Contains("libcuda.so.1 not found", reason);
                Assert.Throws<InvalidOperationException>(() => GpuBackend.Create(new GpuBackendOptions()));
            }
        }
        Assert.False(GpuBackend.TryCreateCuda(new GpuBackendOptions { DeviceIndex = 1000 }, out _, out string why));
        output.WriteLine(why);
    }

    [SkippableFact]
    public void On_a_cuda_device_a_vit_step_and_a_large_gemm_match_the_cpu_backend()
    {
        bool found = GpuBackend.TryCreateCuda(out var gpu, out string reason);
        Skip.IfNot(found, reason);
        using var _ = gpu;
        using var cpu = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        output.WriteLine(gpu!.Name);

        // A GEMM of many tiles with ragged edges, linear-layer shaped: C[m×n] = A[m×k]·B[n×k]ᵀ.
        const int m = 1000, n = 3000, k = 770;
        var a = Random(1, m * k);
        var b = Random(2, n * k);
        using var ac = cpu.FromHost("a", a, m, k);
        using var bc = cpu.FromHost("b", b, n, k);
        using var cc = cpu.Allocate("c", m, n);
        using var ag = gpu.FromHost("a", a, m, k);
        using var bg = gpu.FromHost("b", b, n, k);
        using var cg = gpu.Allocate("c", m, n);
        cpu.Gemm(false, true, m, n, k, 1f, ac, 0, k, bc, 0, k, 0f, cc, 0, n);
        gpu.Gemm(false, true, m, n, k, 1f, ag, 0, k, bg, 0, k, 0f, cg, 0, n);
        Compare.Check(output, "gemm NT 1000×3000×770", cg.ToArray(), cc.ToArray(), 1e-5);

        // test_tiny ViT: forward, CE, full backward.
        var config = VitConfig.Preset("test_tiny");
        using var mc = new VitModel(cpu, config);
        using var mg = new VitModel(gpu, config);
        mc.InitializeRandom(5);
        foreach (var p in mc.Parameters) mg[p.Name].Value.CopyFrom(p.Value.ToArray());
        const int batch = 4;
        var images = Random(3, batch * config.InChans * config.ImageSize * config.ImageSize);
        float[] labels = [1, 5, 9, 0];
        foreach (var (be, model) in new (IBackend, VitModel)[] { (cpu, mc), (gpu, mg) })
        {
            using var ws = model.CreateWorkspace(batch);
            using var x = be.FromHost("images", images, batch, config.InChans, config.ImageSize, config.ImageSize);
            using var y = be.FromHost("labels", labels, batch);
            model.ZeroGrad();
            model.Forward(ws, x, batch);
            be.CrossEntropy(ws.Logits, y, ws.Losses, ws.DLogits, batch, config.NumClasses, 1f / batch);
            model.Backward(ws, batch, BackwardOptions.Full);
            be.Synchronize();
        }
        foreach (var p in mc.Parameters)
            Compare.Check(output, "grad/" + p.Name, mg[p.Name].Grad.ToArray(), p.Grad.ToArray(), 1e-4);
    }
}

using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Backends.Gpu;
using WhereToEdit.Engine.Tensors;
using Xunit;

namespace WhereToEdit.Tests.Gpu;

/// <summary>
/// One GPU backend on ILGPU's CPU accelerator (kernels compiled once) and the CPU reference backend, shared by
/// every GPU test. The collection runs its classes one after another: the emulator is slow and thread-hungry.
/// </summary>
public sealed class GpuEmulatorFixture : IDisposable
{
    public GpuEmulatorFixture()
    {
        Gpu = GpuBackend.CreateCpuEmulator();
        Cpu = new CpuBackend(new CpuBackendOptions { Threads = 2 });
    }

    public GpuBackend Gpu { get; }
    public CpuBackend Cpu { get; }

    public void Dispose()
    {
        Gpu.Dispose();
        Cpu.Dispose();
    }
}

[CollectionDefinition(Name)]
public sealed class GpuEmulatorCollection : ICollectionFixture<GpuEmulatorFixture>
{
    public const string Name = "GPU backend on the CPU emulator";
}

/// <summary>The same host data as a tensor on each backend.</summary>
public sealed class Pair : IDisposable
{
    public Pair(GpuEmulatorFixture f, string name, float[] data, params int[] shape)
    {
        Host = data;
        Cpu = f.Cpu.FromHost(name, data, shape);
        Gpu = f.Gpu.FromHost(name, data, shape);
    }

    public float[] Host { get; }
    public Tensor Cpu { get; }
    public Tensor Gpu { get; }

    public void Dispose()
    {
        Cpu.Dispose();
        Gpu.Dispose();
    }
}

public static class GpuTestData
{
    public static float[] Random(int seed, int length, float scale = 1f)
    {
        var rng = new Rng((ulong)seed);
        var x = new float[length];
        for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return x;
    }

    public static bool BitEqual(float a, float b) => BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);
}

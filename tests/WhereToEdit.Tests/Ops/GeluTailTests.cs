using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Tensors;
using Xunit;

namespace WhereToEdit.Tests.Ops;

/// <summary>
/// The CPU backend's GELU forward and backward give an element the same bits wherever it sits: at any offset, in a
/// buffer of any length, on any thread count (the SIMD loop's last elements once went through a scalar exp that
/// rounds differently, so a value's GELU depended on where a pool chunk ended — and a batch of 3 images differed from
/// the same images as 2 + 1 across MPI ranks).
/// </summary>
public sealed class GeluTailTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void An_elements_gelu_does_not_depend_on_where_it_sits(int threads)
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = threads });
        var rng = new Rng(4);
        var values = Enumerable.Range(0, 2000).Select(_ => (float)(rng.NextNormal() * 3)).ToArray();
        var grads = Enumerable.Range(0, 2000).Select(_ => (float)rng.NextNormal()).ToArray();
        (float[] Y, float[] Dx) Run(int offset, int count)
        {
            using var x = be.FromHost("x", values.AsSpan(offset, count), count);
            using var dy = be.FromHost("dy", grads.AsSpan(offset, count), count);
            using var y = be.Allocate("y", count);
            using var dx = be.Allocate("dx", count);
            be.GeluForward(x, y, count);
            be.GeluBackward(x, dy, dx, count);
            return (y.ToArray(), dx.ToArray());
        }
        var (whole, wholeDx) = Run(0, values.Length);
        foreach (var (offset, count) in new[] { (0, 7), (3, 13), (5, 1500), (17, 1983), (1000, 999), (1990, 10) })
        {
            var (y, dx) = Run(offset, count);
            for (int i = 0; i < count; i++)
            {
                Assert.True(BitConverter.SingleToInt32Bits(y[i]) == BitConverter.SingleToInt32Bits(whole[offset + i]),
                    $"GELU({values[offset + i]}) at {i} of {count}: {y[i]:R} vs {whole[offset + i]:R}");
                Assert.True(BitConverter.SingleToInt32Bits(dx[i]) == BitConverter.SingleToInt32Bits(wholeDx[offset + i]),
                    $"GELU'({values[offset + i]}) at {i} of {count}: {dx[i]:R} vs {wholeDx[offset + i]:R}");
            }
        }
    }
}

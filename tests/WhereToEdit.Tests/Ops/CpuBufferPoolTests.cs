using WhereToEdit.Engine.Backends.Cpu;
using Xunit;

namespace WhereToEdit.Tests.Ops;

/// <summary>
/// The CPU backend keeps disposed tensors' arrays for the next tensor of the same length (<see cref="CpuBufferPool"/>):
/// a reused array reads zeros, a disposed tensor can no longer be read or written, a double dispose gives its array
/// back once, and the budget bounds what is kept.
/// </summary>
public sealed class CpuBufferPoolTests
{
    private const int Big = CpuBufferPool.MinFloats * 2;

    private static CpuBackend Backend(long budget = 1L << 30) =>
        new(new CpuBackendOptions { Threads = 2, Gemm = GemmKind.Managed, PooledBufferBytes = budget });

    [Fact]
    public void A_disposed_tensors_array_is_reused_cleared()
    {
        using var be = Backend();
        var first = (CpuTensor)be.Allocate("first", Big);
        be.Fill(first, 3f);
        var array = first.Data;
        first.Dispose();
        Assert.Equal(4L * Big, be.PooledBufferBytes);
        var second = (CpuTensor)be.Allocate("second", Big);
        Assert.Same(array, second.Data);
        Assert.Equal(0, be.PooledBufferBytes);
        Assert.All(second.ToArray(), v => Assert.Equal(0f, v));
        var other = (CpuTensor)be.Allocate("other length", Big + 1);   // a different length gets a new array
        Assert.NotSame(array, other.Data);
    }

    [Fact]
    public void A_disposed_tensor_cannot_be_used()
    {
        using var be = Backend();
        var t = be.Allocate("activations", Big);
        t.Dispose();
        var e = Assert.Throws<ObjectDisposedException>(() => be.Fill(t, 1f));
        Assert.Contains("activations", e.Message);
        Assert.Throws<ObjectDisposedException>(() => t.ToArray());
        Assert.Throws<ObjectDisposedException>(() => t.CopyFrom(new float[Big]));
    }

    [Fact]
    public void A_double_dispose_gives_the_array_back_once()
    {
        using var be = Backend();
        var t = be.Allocate("t", Big);
        t.Dispose();
        t.Dispose();
        Assert.Equal(4L * Big, be.PooledBufferBytes);
        var a = (CpuTensor)be.Allocate("a", Big);
        var b = (CpuTensor)be.Allocate("b", Big);
        Assert.NotSame(a.Data, b.Data);
        be.Fill(a, 1f);
        Assert.All(b.ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void The_budget_bounds_what_is_kept_and_small_arrays_are_left_to_the_GC()
    {
        using (var be = Backend(budget: 4L * Big))
        {
            var x = be.Allocate("x", Big);
            var y = be.Allocate("y", Big);
            x.Dispose();
            y.Dispose();   // over the budget: left to the GC
            Assert.Equal(4L * Big, be.PooledBufferBytes);
            be.Allocate("small", CpuBufferPool.MinFloats - 1).Dispose();
            Assert.Equal(4L * Big, be.PooledBufferBytes);
        }
        using (var off = Backend(budget: 0))
        {
            off.Allocate("z", Big).Dispose();
            Assert.Equal(0, off.PooledBufferBytes);
        }
    }
}

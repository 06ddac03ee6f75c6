using WhereToEdit.Engine.Tensors;
using Xunit;

namespace WhereToEdit.Tests.Ops;

public class RngTests
{
    [Fact]
    public void StableHash_IsFnv1a64()
    {
        // Published FNV-1a 64-bit vectors (an ASCII string's UTF-16 code units equal its bytes).
        Assert.Equal(0xcbf29ce484222325UL, Rng.StableHash(""));
        Assert.Equal(0xaf63dc4c8601ec8cUL, Rng.StableHash("a"));
        Assert.Equal(0x85944171f73967e8UL, Rng.StableHash("foobar"));
    }

    [Fact]
    public void SameSeed_SameSequence_DifferentSeed_Differs()
    {
        var a = new Rng(42); var b = new Rng(42); var c = new Rng(43);
        var sa = Enumerable.Range(0, 8).Select(_ => a.NextUInt64()).ToArray();
        Assert.Equal(sa, Enumerable.Range(0, 8).Select(_ => b.NextUInt64()).ToArray());
        Assert.NotEqual(sa, Enumerable.Range(0, 8).Select(_ => c.NextUInt64()).ToArray());
    }
}

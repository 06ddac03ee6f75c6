using WhereToEdit.Engine.Backends.Cpu;
using Xunit;

namespace WhereToEdit.Tests.Ops;

public sealed unsafe class WorkerPoolTests
{
    private struct Args { public int* Hits; public int Throw; }

    private static void Body(void* p, int start, int end)
    {
        ref var a = ref *(Args*)p;
        for (int i = start; i < end; i++)
        {
            if (i == a.Throw) throw new InvalidOperationException($"item {i}");
            Interlocked.Increment(ref a.Hits[i]);
        }
    }

    [Fact]
    public void Every_item_runs_once_and_a_body_that_throws_on_a_worker_reaches_the_caller()
    {
        using var pool = new WorkerPool(3);
        var hits = new int[1000];
        fixed (int* h = hits)
        {
            var args = new Args { Hits = h, Throw = -1 };
            pool.For(hits.Length, 1, &args, &Body);
            Assert.All(hits, v => Assert.Equal(1, v));

            // Item 999 is the last item of the last chunk, which a worker or the caller may claim: either way the
            // caller sees the error, after every other chunk has run.
            args.Throw = 999;
            string? message = null;
            try { pool.For(hits.Length, 1, &args, &Body); }
            catch (InvalidOperationException e) { message = e.Message; }
            Assert.Equal("item 999", message);

            args.Throw = -1;
            pool.For(hits.Length, 1, &args, &Body);   // still usable
            Assert.All(hits.AsSpan(0, 999).ToArray(), v => Assert.Equal(3, v));
            Assert.Equal(2, hits[999]);
        }
    }
}

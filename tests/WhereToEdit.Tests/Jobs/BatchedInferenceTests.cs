using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using Xunit;

namespace WhereToEdit.Tests.Jobs;

public sealed class BatchedInferenceTests
{
    [Fact]
    public void Batches_cover_every_image_in_order_and_give_the_logits_of_one_image_at_a_time()
    {
        using var be = Backends.Cpu(GemmKind.Managed, threads: 2);
        var config = VitConfig.Preset("test_tiny");
        using var model = new VitModel(be, config);
        model.InitializeRandom(11);
        int per = config.InChans * config.ImageSize * config.ImageSize, classes = config.NumClasses;
        var images = Enumerable.Range(0, 7).Select(i => TestMath.Normal(new Rng((ulong)i + 1), per)).ToArray();
        BatchedInference.ImageWriter write = (i, pixels) => images[i].CopyTo(pixels);

        var batches = new List<(int Start, int Count)>();
        using var inference = new BatchedInference(model, 3);
        var all = new float[7 * classes];
        inference.Run(7, write, (start, n, logits) =>
        {
            batches.Add((start, n));
            logits.CopyTo(all.AsSpan(start * classes));
        });
        Assert.Equal([(0, 3), (3, 3), (6, 1)], batches);

        // The same image alone through a plain forward: the same logits (the managed GEMM's results do not depend on the batch).
        using var ws = model.CreateWorkspace(1);
        for (int i = 0; i < 7; i++)
        {
            using var x = be.FromHost("x", images[i], 1, config.InChans, config.ImageSize, config.ImageSize);
            model.Forward(ws, x, 1);
            Assert.Equal(ws.Logits.ToArray(), all.AsSpan(i * classes, classes).ToArray());
        }
        Assert.Equal(all, BatchedInference.Logits(model, 7, 64, write));   // batch capped at the count
        Assert.Empty(BatchedInference.Logits(model, 0, 8, write));
        Assert.Equal(1, BatchedInference.BatchFor(8, 0));
    }
}

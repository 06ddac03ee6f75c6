using Xunit;
using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Server;

namespace WhereToEdit.Tests.Serving;

/// <summary>The prediction batcher (<see cref="ModelHost"/>) on its own, without HTTP.</summary>
public sealed class ServeBatchingTests
{
    [Fact]
    public async Task A_prediction_given_up_before_its_batch_is_dropped_and_the_next_one_is_answered()
    {
        var loaded = ModelFolder.Load(ServeAssets.Model);
        using var backend = BackendFactory.Create("cpu", 1);
        using var vit = VitCheckpoint.Load(backend, loaded);
        var pixels = new ImageLoader().Load(ServeAssets.Failure, loaded.Preprocessing);
        var metrics = new ServerMetrics();
        using var host = new ModelHost(vit, loaded.Labels, new WeightsVersion(0, VitCheckpoint.Fingerprint(vit), []),
            new ServeOptions { ModelPath = ServeAssets.Model }, metrics);

        using var gone = new CancellationTokenSource();
        gone.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => host.PredictAsync(pixels, 3, gone.Token));
        var answer = await host.PredictAsync(pixels, 3, CancellationToken.None);   // queued after the dropped one

        Assert.Equal(1, metrics.PredictDropped.Value);
        Assert.Equal(1, metrics.PredictBatchSize.Count);   // one forward pass, for the live request only
        Assert.Equal(1, metrics.PredictBatchSize.Sum);
        var expected = Predictor.Run(vit, new ImageLoader(), loaded.Preprocessing, [ServeAssets.Failure], 1, 3, loaded.Labels)[0].Top;
        Assert.Equal(expected.Select(t => (t.Index, t.Probability)), answer.Top.Select(t => (t.Index, t.Probability)));
    }
}

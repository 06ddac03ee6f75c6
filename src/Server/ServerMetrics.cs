using Prometheus;

namespace WhereToEdit.Server;

/// <summary>The server's own Prometheus metrics, in a registry per server (HTTP request metrics join it too).</summary>
public sealed class ServerMetrics
{
    public ServerMetrics()
    {
        Registry = Metrics.NewCustomRegistry();
        Factory = Metrics.WithCustomRegistry(Registry);
        PredictBatchSize = Factory.CreateHistogram("wte_predict_batch_size", "Images per forward pass of the prediction batcher.",
            new HistogramConfiguration { Buckets = [1, 2, 4, 8, 16, 32, 64, 128] });
        var stage = new HistogramConfiguration { Buckets = Histogram.ExponentialBuckets(0.0000625, 2, 16) };   // 62.5 µs .. 2 s
        PredictDecode = Factory.CreateHistogram("wte_predict_decode_seconds", "Per prediction: decoding and preprocessing the uploaded image.", stage);
        PredictQueueWait = Factory.CreateHistogram("wte_predict_queue_seconds", "Per prediction: time in the queue until its batch starts.", stage);
        PredictForward = Factory.CreateHistogram("wte_predict_forward_seconds", "Per batch: copy in, forward pass, top-k (the prediction thread's busy time).", stage);
        PredictDropped = Factory.CreateCounter("wte_predict_dropped_total", "Predictions dropped before their forward pass because the request was given up (timeout or client gone).");
        EditDuration = Factory.CreateHistogram("wte_edit_duration_seconds", "Wall time of an edit (mask, optimisation, journal, swap).",
            new HistogramConfiguration { LabelNames = ["method", "outcome"], Buckets = Histogram.ExponentialBuckets(0.01, 2, 14) });
        RevertDuration = Factory.CreateHistogram("wte_revert_duration_seconds", "Wall time of a revert (journal and swap included).",
            new HistogramConfiguration { Buckets = Histogram.ExponentialBuckets(0.001, 2, 14) });
        ModelVersion = Factory.CreateGauge("wte_model_version", "The weights version predictions are answered with.");
        ActiveEdits = Factory.CreateGauge("wte_active_edits", "Edits applied to the base model now.");
        EditRunning = Factory.CreateGauge("wte_edit_running", "1 while an edit or revert holds the edit lock (others queue behind it), else 0.");
    }

    public CollectorRegistry Registry { get; }
    public IMetricFactory Factory { get; }
    public Histogram PredictBatchSize { get; }
    public Histogram PredictDecode { get; }
    public Histogram PredictQueueWait { get; }
    public Histogram PredictForward { get; }
    public Counter PredictDropped { get; }
    public Histogram EditDuration { get; }
    public Histogram RevertDuration { get; }
    public Gauge ModelVersion { get; }
    public Gauge ActiveEdits { get; }
    public Gauge EditRunning { get; }
}

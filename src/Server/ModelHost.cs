using System.Collections.Concurrent;
using System.Diagnostics;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Server;

/// <summary>One set of weights the server answers with: immutable while it serves.</summary>
public sealed record WeightsVersion(int Number, string Fingerprint, IReadOnlyList<string> EditIds);

public sealed record PredictAnswer(int Version, IReadOnlyList<ClassScore> Top);

/// <summary>
/// Owns the serving copy of the model and the one thread that runs it. Predictions queue in a bounded queue; the
/// thread takes what is queued and runs one forward pass for it (up to <see cref="ServeOptions.MaxBatch"/> images).
/// The batching is adaptive: a worker that finds the queue empty runs a request the moment it arrives, and the requests
/// that arrive while a batch runs form the next batch, so batches grow with the load without a timer. Only when
/// <see cref="ServeOptions.MaxBatchDelay"/> is above zero does the thread also wait that long for more. A new
/// version's weights are swapped in by the same thread between two batches, so every batch — and every answer — sees
/// exactly one version.
/// </summary>
public sealed class ModelHost : IDisposable
{
    private abstract class Work;

    private sealed class PredictWork(float[] pixels, int topK, CancellationToken cancel) : Work
    {
        public readonly float[] Pixels = pixels;
        public readonly int TopK = topK;
        /// <summary>The request's: a request that timed out or whose client left is dropped before its forward pass.</summary>
        public readonly CancellationToken Cancel = cancel;
        public readonly long Queued = Stopwatch.GetTimestamp();
        public readonly TaskCompletionSource<PredictAnswer> Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private sealed class SwapWork(WeightsVersion version, IReadOnlyList<(string Name, float[] Values)> weights) : Work
    {
        public readonly WeightsVersion Version = version;
        public readonly IReadOnlyList<(string Name, float[] Values)> Weights = weights;
        public readonly TaskCompletionSource Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private readonly VitModel _model;
    private readonly IReadOnlyList<string>? _labels;
    private readonly ServeOptions _options;
    private readonly BlockingCollection<Work> _queue;
    private readonly Thread _thread;
    private readonly ServerMetrics _metrics;
    private readonly CancellationTokenSource _stop = new();
    private WeightsVersion _version;

    public ModelHost(VitModel servingModel, IReadOnlyList<string>? labels, WeightsVersion version, ServeOptions options, ServerMetrics metrics)
    {
        _model = servingModel;
        _labels = labels;
        _options = options;
        _metrics = metrics;
        _version = version;
        _queue = new BlockingCollection<Work>(new ConcurrentQueue<Work>(), options.QueueCapacity);
        _thread = new Thread(Run) { IsBackground = true, Name = "wte-predict" };
        _thread.Start();
    }

    /// <summary>The version the next batch will run (swaps are applied in queue order).</summary>
    public WeightsVersion Current => Volatile.Read(ref _version);

    public int Classes => _model.Config.NumClasses;

    /// <summary>Queues one preprocessed image; 503 when the queue is full.</summary>
    public Task<PredictAnswer> PredictAsync(float[] pixels, int topK, CancellationToken cancel)
    {
        var work = new PredictWork(pixels, topK, cancel);
        if (!_queue.TryAdd(work)) throw new ApiError(503, "predict: the server is at capacity (queue full); retry later");
        return work.Done.Task.WaitAsync(cancel);
    }

    /// <summary>Swaps in a new version (full values of every changed matrix) between batches; completes once it serves.</summary>
    public Task SwapAsync(WeightsVersion version, IReadOnlyList<(string Name, float[] Values)> weights)
    {
        var work = new SwapWork(version, weights);
        _queue.Add(work);   // waits for room: a swap is never refused
        return work.Done.Task;
    }

    private void Run()
    {
        int max = _options.MaxBatch;
        using var inference = new BatchedInference(_model, max);
        var batch = new List<PredictWork>(max);
        // Made once: the one batched-inference loop reads the queued images and hands back their logits.
        BatchedInference.ImageWriter write = (i, pixels) => batch[i].Pixels.AsSpan().CopyTo(pixels);
        BatchedInference.BatchReader read = (_, n, logits) => Answer(batch, n, logits);
        SwapWork? swap = null;
        try
        {
            while (!_queue.IsCompleted)
            {
                if (!_queue.TryTake(out var first, Timeout.Infinite, _stop.Token)) continue;
                batch.Clear();
                swap = first as SwapWork;
                if (first is PredictWork p0)
                {
                    Join(batch, p0);
                    // What is queued now joins the batch at once; a delay (off by default) waits for more.
                    long delay = (long)(_options.MaxBatchDelay.TotalSeconds * Stopwatch.Frequency);
                    long deadline = Stopwatch.GetTimestamp() + delay;
                    while (batch.Count < max)
                    {
                        Work? next;
                        if (!_queue.TryTake(out next))
                        {
                            long left = delay == 0 ? 0 : deadline - Stopwatch.GetTimestamp();
                            if (left <= 0 || !_queue.TryTake(out next, (int)Math.Ceiling(left * 1000.0 / Stopwatch.Frequency))) break;
                        }
                        if (next is SwapWork s) { swap = s; break; }   // the batch so far runs on the old version
                        Join(batch, (PredictWork)next);
                    }
                }
                if (batch.Count > 0) RunBatch(batch, inference, write, read);
                if (swap is not null) ApplySwap(swap);
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested) { }
        finally
        {
            foreach (var w in _queue.GetConsumingEnumerable(CancellationToken.None).Concat(batch))
                if (w is PredictWork p) p.Done.TrySetException(new ApiError(503, "predict: the server is shutting down"));
                else if (w is SwapWork s) s.Done.TrySetException(new ObjectDisposedException(nameof(ModelHost)));
        }
    }

    /// <summary>Adds a prediction to the batch unless its request was given up (timeout, client gone): no forward pass for it.</summary>
    private void Join(List<PredictWork> batch, PredictWork work)
    {
        if (work.Cancel.IsCancellationRequested)
        {
            work.Done.TrySetCanceled(work.Cancel);
            _metrics.PredictDropped.Inc();
        }
        else batch.Add(work);
    }

    private void RunBatch(List<PredictWork> batch, BatchedInference inference, BatchedInference.ImageWriter write, BatchedInference.BatchReader read)
    {
        long start = Stopwatch.GetTimestamp();
        try
        {
            foreach (var w in batch) _metrics.PredictQueueWait.Observe(Stopwatch.GetElapsedTime(w.Queued, start).TotalSeconds);
            inference.Run(batch.Count, write, read);   // batch.Count ≤ MaxBatch: one forward pass
            _metrics.PredictForward.Observe(Stopwatch.GetElapsedTime(start).TotalSeconds);
        }
        catch (Exception e)
        {
            foreach (var w in batch) w.Done.TrySetException(e);
        }
        batch.Clear();
    }

    /// <summary>Answers the batch's predictions from its logits [n, classes], with the version that ran them.</summary>
    private void Answer(List<PredictWork> batch, int n, ReadOnlySpan<float> logits)
    {
        int classes = _model.Config.NumClasses;
        var version = _version;   // written only by this thread (ApplySwap), between batches
        _metrics.PredictBatchSize.Observe(n);
        for (int i = 0; i < n; i++)
        {
            var row = logits.Slice(i * classes, classes).ToArray();
            TensorChecks.EnsureFinite(row, "logits");
            batch[i].Done.TrySetResult(new PredictAnswer(version.Number, Predictor.TopK(row, batch[i].TopK, _labels)));
        }
    }

    private void ApplySwap(SwapWork swap)
    {
        try
        {
            foreach (var (name, values) in swap.Weights) _model[name].Value.CopyFrom(values);
            Volatile.Write(ref _version, swap.Version);
            _metrics.ModelVersion.Set(swap.Version.Number);
            swap.Done.TrySetResult();
        }
        catch (Exception e)
        {
            swap.Done.TrySetException(e);
        }
    }

    public void Dispose()
    {
        _queue.CompleteAdding();
        _stop.Cancel();
        _thread.Join();
        _queue.Dispose();
        _stop.Dispose();
    }
}

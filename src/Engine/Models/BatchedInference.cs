using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Models;

/// <summary>
/// The one batched-inference loop: images go to the model's backend a batch at a time (the caller writes each image's
/// pixels into a host buffer), a full forward runs, and the caller reads each batch's logits. Used by `wte predict`,
/// the evaluation's predictions and locality cache, the benchmark builder, the pretrainer's test pass and `wte serve`'s
/// micro-batches. The workspace, input tensor and host buffers are sized once, so a run allocates nothing per batch.
/// </summary>
public sealed class BatchedInference : IDisposable
{
    /// <summary>Writes image <paramref name="index"/> ([C, H, W], preprocessed) into <paramref name="pixels"/>.</summary>
    public delegate void ImageWriter(int index, Span<float> pixels);

    /// <summary>Sees the logits [count, classes] of images start .. start + count − 1.</summary>
    public delegate void BatchReader(int start, int count, ReadOnlySpan<float> logits);

    private readonly VitModel _model;
    private readonly Tensor _input;
    private readonly float[] _host, _logits;

    /// <param name="batch">Images per forward pass (at least 1).</param>
    public BatchedInference(VitModel model, int batch)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        if (batch < 1) throw new ArgumentOutOfRangeException(nameof(batch), batch, "--batch must be positive");
        var c = model.Config;
        Capacity = batch;
        Workspace = model.CreateWorkspace(batch);
        _input = model.Backend.Allocate("inference.images", batch, c.InChans, c.ImageSize, c.ImageSize);
        _host = new float[batch * PixelsPerImage];
        _logits = new float[batch * c.NumClasses];
    }

    public int Capacity { get; }

    public int PixelsPerImage => _model.Config.InChans * _model.Config.ImageSize * _model.Config.ImageSize;

    /// <summary>The activations of the last batch (e.g. the input of a block, to cache it).</summary>
    public VitWorkspace Workspace { get; }

    /// <summary>A batch size for <paramref name="count"/> images: the requested one, capped at the count, at least 1.</summary>
    public static int BatchFor(int requested, int count) => Math.Max(1, Math.Min(requested, count));

    /// <summary>Runs the forward over <paramref name="count"/> images in order.</summary>
    public void Run(int count, ImageWriter write, BatchReader read)
    {
        int per = PixelsPerImage, classes = _model.Config.NumClasses;
        for (int start = 0; start < count; start += Capacity)
        {
            int n = Math.Min(Capacity, count - start);
            for (int i = 0; i < n; i++) write(start + i, _host.AsSpan(i * per, per));
            _input.CopyFrom(_host.AsSpan(0, n * per));
            _model.Forward(Workspace, _input, n);
            Workspace.Logits.CopyTo(_logits.AsSpan(0, n * classes));
            read(start, n, _logits.AsSpan(0, n * classes));
        }
    }

    /// <summary>The logits [count, classes] of every image.</summary>
    public float[] Logits(int count, ImageWriter write)
    {
        int classes = _model.Config.NumClasses;
        var all = new float[(long)count * classes];
        Run(count, write, (start, n, logits) => logits.CopyTo(all.AsSpan(start * classes, n * classes)));
        return all;
    }

    /// <summary>The logits of <paramref name="count"/> images, batching as asked.</summary>
    public static float[] Logits(VitModel model, int count, int batch, ImageWriter write)
    {
        if (count == 0) return [];
        using var inference = new BatchedInference(model, BatchFor(batch, count));
        return inference.Logits(count, write);
    }

    public void Dispose()
    {
        Workspace.Dispose();
        _input.Dispose();
    }
}

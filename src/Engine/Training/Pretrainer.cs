using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Training;

public sealed record PretrainOptions
{
    [JsonPropertyName("epochs")] public int Epochs { get; init; } = 15;
    [JsonPropertyName("batch")] public int Batch { get; init; } = 128;
    [JsonPropertyName("lr")] public float LearningRate { get; init; } = 1e-3f;
    [JsonPropertyName("min_lr")] public float MinLearningRate { get; init; } = 1e-5f;
    [JsonPropertyName("warmup_epochs")] public double WarmupEpochs { get; init; } = 1;
    [JsonPropertyName("weight_decay")] public float WeightDecay { get; init; } = 0.05f;
    /// <summary>Random shifts of up to this many pixels (zero padding) and random horizontal flips.</summary>
    [JsonPropertyName("shift")] public int Shift { get; init; } = 2;
    [JsonPropertyName("flip")] public bool Flip { get; init; } = true;
    [JsonPropertyName("seed")] public ulong Seed { get; init; }
    /// <summary>Write a resumable checkpoint every this many steps (and at every epoch end); 0 = epoch ends only.</summary>
    [JsonPropertyName("checkpoint_every")] public int CheckpointEvery { get; init; }
    /// <summary>Normalisation applied after scaling pixels to [0, 1] (also saved as the model's preprocessing).</summary>
    [JsonPropertyName("mean")] public float Mean { get; init; } = 0.5f;
    [JsonPropertyName("std")] public float Std { get; init; } = 0.5f;

    public void Validate()
    {
        if (Epochs <= 0) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "--epochs must be positive");
        if (Batch <= 0) throw new ArgumentOutOfRangeException(nameof(Batch), Batch, "--batch must be positive");
        if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "--lr must be positive");
        if (!(WarmupEpochs >= 0)) throw new ArgumentOutOfRangeException(nameof(WarmupEpochs), WarmupEpochs, "--warmup-epochs must be ≥ 0");
        if (Shift < 0) throw new ArgumentOutOfRangeException(nameof(Shift), Shift, "shift (pretraining option) must be ≥ 0");
        if (!(Std > 0)) throw new ArgumentOutOfRangeException(nameof(Std), Std, "std must be positive");
    }
}

/// <summary>One line of the training log.</summary>
internal sealed record PretrainProgress(int Epoch, int Step, int TotalSteps, float Loss, float LearningRate, double StepsPerSecond, TimeSpan Eta, double? TestAccuracy);

/// <summary>
/// Trains a ViT classifier from scratch on in-memory 8-bit images: AdamW (decoupled weight decay on matrices
/// only, as timm), linear warm-up then cosine decay, random shifts and flips. Every random choice is drawn
/// from an Rng seeded by (seed, epoch) for the shuffle and (seed, step) for the augmentation, so a run resumed
/// from a checkpoint continues exactly as the uninterrupted run.
/// </summary>
internal sealed class Pretrainer : IDisposable
{
    private readonly VitModel _model;
    private readonly IBackend _be;
    private readonly PretrainOptions _o;
    private readonly Tensor[] _m, _v;
    private readonly bool[] _decay;
    private readonly VitWorkspace _ws;
    private readonly Tensor _images, _labels;
    private readonly float[] _hostImages, _hostLabels, _hostLosses;

    public Pretrainer(VitModel model, PretrainOptions options)
    {
        options.Validate();
        _model = model;
        _be = model.Backend;
        _o = options;
        var c = model.Config;
        if (c.InChans != 1) throw new ArgumentException($"pretraining takes single-channel images; the model has {c.InChans} channels");
        _m = model.Parameters.Select(p => _be.Allocate(p.Name + ".adam_m", p.Shape)).ToArray();
        _v = model.Parameters.Select(p => _be.Allocate(p.Name + ".adam_v", p.Shape)).ToArray();
        // timm's default: no weight decay on biases, LayerNorm weights, position embedding and [CLS] token.
        _decay = model.Parameters.Select(p => p.Shape.Length >= 2 && p.Name is not ("pos_embed" or "cls_token")).ToArray();
        _ws = model.CreateWorkspace(options.Batch);
        _images = _be.Allocate("train.images", options.Batch, 1, c.ImageSize, c.ImageSize);
        _labels = _be.Allocate("train.labels", options.Batch);
        _hostImages = new float[options.Batch * c.ImageSize * c.ImageSize];
        _hostLabels = new float[options.Batch];
        _hostLosses = new float[options.Batch];
    }

    /// <summary>Completed optimizer steps (restored by <see cref="LoadCheckpoint"/>).</summary>
    public int Step { get; private set; }

    public int StepsPerEpoch(int trainCount) => (trainCount + _o.Batch - 1) / _o.Batch;

    public float LearningRateAt(int step, int totalSteps, int stepsPerEpoch)
    {
        double warmup = _o.WarmupEpochs * stepsPerEpoch;
        if (step < warmup) return (float)(_o.LearningRate * (step + 1) / warmup);
        double progress = (step - warmup) / Math.Max(1, totalSteps - warmup);
        return (float)(_o.MinLearningRate + 0.5 * (_o.LearningRate - _o.MinLearningRate) * (1 + Math.Cos(Math.PI * Math.Min(1, progress))));
    }

    private static ulong Mix(ulong seed, ulong a, ulong b) => new Rng(seed ^ (a * 0x9E3779B97F4A7C15UL) ^ (b * 0xC2B2AE3D27D4EB4FUL)).NextUInt64();

    /// <summary>The training order of one epoch (a seeded shuffle).</summary>
    public int[] EpochOrder(int epoch, int count)
    {
        var order = Enumerable.Range(0, count).ToArray();
        var rng = new Rng(Mix(_o.Seed, 1, (ulong)epoch));
        for (int i = count - 1; i > 0; i--)
        {
            int j = rng.NextInt(0, i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    /// <summary>
    /// Trains until the configured number of epochs (continuing from <see cref="Step"/>). Calls
    /// <paramref name="progress"/> after every step and <paramref name="checkpoint"/> when a checkpoint is due.
    /// </summary>
    public void Train(LabeledImages train, LabeledImages? test, Action<PretrainProgress>? progress, Action<int>? checkpoint)
    {
        var c = _model.Config;
        if (train.Height != c.ImageSize || train.Width != c.ImageSize)
            throw new ArgumentException($"{train.Source}: images are {train.Height}×{train.Width}, the model takes {c.ImageSize}×{c.ImageSize}");
        foreach (byte y in train.Labels)
            if (y >= c.NumClasses) throw new ArgumentException($"{train.Source}: label {y} but the model has {c.NumClasses} classes");
        int perEpoch = StepsPerEpoch(train.Count), total = perEpoch * _o.Epochs;
        var clock = Stopwatch.StartNew();
        int firstStep = Step;
        var parameters = _model.Parameters;
        while (Step < total)
        {
            int epoch = Step / perEpoch, inEpoch = Step % perEpoch;
            var order = EpochOrder(epoch, train.Count);
            for (int s = inEpoch; s < perEpoch && Step < total; s++)
            {
                int start = s * _o.Batch, n = Math.Min(_o.Batch, train.Count - start);
                FillBatch(train, order, start, n, new Rng(Mix(_o.Seed, 2, (ulong)Step)));
                _images.CopyFrom(_hostImages.AsSpan(0, n * c.ImageSize * c.ImageSize));
                _labels.CopyFrom(_hostLabels.AsSpan(0, n));
                _model.Forward(_ws, _images, n);
                _be.CrossEntropy(_ws.Logits, _labels, _ws.Losses, _ws.DLogits, n, c.NumClasses, 1f / n);
                _model.ZeroGrad();
                _model.Backward(_ws, n, BackwardOptions.Full);
                float lr = LearningRateAt(Step, total, perEpoch);
                for (int i = 0; i < parameters.Count; i++)
                    _be.AdamStep(parameters[i].Value, parameters[i].Grad, _m[i], _v[i], lr, 0.9f, 0.999f, 1e-8f,
                        _decay[i] ? _o.WeightDecay : 0f, decoupled: true, Step + 1, UpdateMask.None(parameters[i].Length));
                _ws.Losses.CopyTo(_hostLosses.AsSpan(0, n));
                float loss = 0;
                for (int i = 0; i < n; i++) loss += _hostLosses[i];
                loss /= n;
                TensorChecks.EnsureFinite(loss, $"training loss at step {Step}");
                Step++;
                bool epochEnd = Step % perEpoch == 0 || Step == total;
                double? accuracy = epochEnd && test is not null ? Evaluate(test) : null;
                double rate = (Step - firstStep) / Math.Max(1e-9, clock.Elapsed.TotalSeconds);
                progress?.Invoke(new PretrainProgress(Step / perEpoch + (epochEnd ? 0 : 1), Step, total, loss, lr, rate,
                    TimeSpan.FromSeconds((total - Step) / Math.Max(rate, 1e-9)), accuracy));
                if (epochEnd || (_o.CheckpointEvery > 0 && Step % _o.CheckpointEvery == 0)) checkpoint?.Invoke(Step);
            }
        }
    }

    private void FillBatch(LabeledImages data, int[] order, int start, int n, Rng rng)
    {
        int h = data.Height, w = data.Width, shift = _o.Shift;
        float scale = 1f / (255f * _o.Std), offset = _o.Mean / _o.Std;
        for (int b = 0; b < n; b++)
        {
            int index = order[start + b];
            var src = data.Image(index);
            var dst = _hostImages.AsSpan(b * h * w, h * w);
            int dy = shift > 0 ? rng.NextInt(-shift, shift + 1) : 0, dx = shift > 0 ? rng.NextInt(-shift, shift + 1) : 0;
            bool flip = _o.Flip && rng.NextDouble() < 0.5;
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                {
                    int sy = y - dy, sx0 = x - dx, sx = flip ? w - 1 - sx0 : sx0;
                    float pixel = sy >= 0 && sy < h && sx >= 0 && sx < w ? src[sy * w + sx] : 0;
                    dst[y * w + x] = pixel * scale - offset;
                }
            _hostLabels[b] = data.Labels[index];
        }
    }

    /// <summary>Top-1 accuracy on a labelled set (no augmentation).</summary>
    public double Evaluate(LabeledImages data) => Accuracy(_model, data, _o.Mean, _o.Std, _o.Batch);

    public static double Accuracy(VitModel model, LabeledImages data, float mean, float std, int batch = 256)
    {
        var predictions = Predict(model, data, mean, std, batch, out _);
        int correct = 0;
        for (int i = 0; i < data.Count; i++) if (predictions[i] == data.Labels[i]) correct++;
        return (double)correct / data.Count;
    }

    /// <summary>Argmax predictions and the logits of every image.</summary>
    public static int[] Predict(VitModel model, LabeledImages data, float mean, float std, int batch, out float[] logits)
    {
        var c = model.Config;
        int per = data.PixelsPerImage;
        if (per != c.InChans * c.ImageSize * c.ImageSize)
            throw new ArgumentException($"{data.Source}: images are {data.Height}×{data.Width}, the model takes {c.InChans}×{c.ImageSize}×{c.ImageSize}");
        var predictions = new int[data.Count];
        float scale = 1f / (255f * std), offset = mean / std;
        logits = BatchedInference.Logits(model, data.Count, batch, (i, pixels) =>
        {
            var src = data.Pixels.AsSpan(i * per, per);
            for (int k = 0; k < per; k++) pixels[k] = src[k] * scale - offset;
        });
        for (int i = 0; i < data.Count; i++) predictions[i] = HostMath.ArgMax(logits.AsSpan(i * c.NumClasses, c.NumClasses));
        return predictions;
    }

    // ---- checkpoints ----------------------------------------------------------------------------------

    private static readonly JsonSerializerOptions Json = new();

    /// <summary>Model weights, AdamW moments, step and options in one safetensors file, written atomically.</summary>
    /// <summary>Names `wte pretrain` writes in a checkpoint folder (pretrain-NNNNNN.safetensors).</summary>
    public static bool IsCheckpointName(string relative) => System.Text.RegularExpressions.Regex.IsMatch(relative, @"^pretrain-[0-9]{6,}\.safetensors$");

    public void SaveCheckpoint(string path)
    {
        var tensors = new List<NamedTensor>();
        var ps = _model.Parameters;
        for (int i = 0; i < ps.Count; i++)
        {
            tensors.Add(new NamedTensor("model/" + ps[i].Name, ps[i].Shape, ps[i].Value.ToArray()));
            tensors.Add(new NamedTensor("adam_m/" + ps[i].Name, ps[i].Shape, _m[i].ToArray()));
            tensors.Add(new NamedTensor("adam_v/" + ps[i].Name, ps[i].Shape, _v[i].ToArray()));
        }
        SafeTensors.Write(path, tensors, new Dictionary<string, string>
        {
            ["wte.pretrain.step"] = Step.ToString(CultureInfo.InvariantCulture),
            ["wte.pretrain.options"] = JsonSerializer.Serialize(_o, Json),
            ["wte.config"] = _model.Config.ToJson(),
        });
    }

    /// <summary>Restores weights, moments and step; refuses a checkpoint of another architecture or other options.</summary>
    public void LoadCheckpoint(string path)
    {
        var file = SafeTensors.Read(path);
        if (!file.Metadata.TryGetValue("wte.pretrain.step", out var stepText) || !file.Metadata.TryGetValue("wte.pretrain.options", out var optionsJson))
            throw new CheckpointFormatException(path, "not a wte pretrain checkpoint (metadata wte.pretrain.step / options missing)");
        PretrainOptions? saved;
        try { saved = JsonSerializer.Deserialize<PretrainOptions>(optionsJson, Json); }
        catch (JsonException e) { throw new CheckpointFormatException(path, $"metadata wte.pretrain.options is malformed: {e.Message}", e); }
        if (saved != _o) throw new CheckpointFormatException(path, $"checkpoint options {optionsJson} differ from this run's {JsonSerializer.Serialize(_o, Json)}; resume with the same options");
        var ps = _model.Parameters;
        _model.LoadWeights(file.Tensors.Where(t => t.Name.StartsWith("model/", StringComparison.Ordinal))
            .ToDictionary(t => t.Name["model/".Length..], t => (t.Shape, t.Data)), path);
        for (int i = 0; i < ps.Count; i++)
        {
            file.TryGet("adam_m/" + ps[i].Name, out var m);
            file.TryGet("adam_v/" + ps[i].Name, out var v);
            _m[i].CopyFrom(OptimizerState.Validated(path, "adam_m/" + ps[i].Name, m, ps[i].Shape, nonNegative: false));
            _v[i].CopyFrom(OptimizerState.Validated(path, "adam_v/" + ps[i].Name, v, ps[i].Shape, nonNegative: true));
        }
        Step = int.TryParse(stepText, NumberStyles.None, CultureInfo.InvariantCulture, out int step)
            ? step : throw new CheckpointFormatException(path, $"metadata wte.pretrain.step '{stepText}' is not a non-negative integer");
    }

    public void Dispose()
    {
        foreach (var t in _m.Concat(_v)) t.Dispose();
        _ws.Dispose(); _images.Dispose(); _labels.Dispose();
    }
}

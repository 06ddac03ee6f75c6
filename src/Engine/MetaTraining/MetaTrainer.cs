using System.Diagnostics;
using System.Globalization;
using WhereToEdit.Engine.Distributed;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.MetaTraining;

/// <summary>One iteration's numbers (what the progress bar and the CSV log show).</summary>
public sealed record IterationStats
{
    /// <summary>1-based: iterations completed after this one.</summary>
    public required int Iteration { get; init; }
    /// <summary>Σ_i ℓ_i / B at the last outer step (the reference's logged label_out_kl).</summary>
    public required float OuterKl { get; init; }
    /// <summary>1 − mean(m), m = sigmoid(10·z), at the last outer step.</summary>
    public required float MaskSparsity { get; init; }
    /// <summary>1 − mean(y), y = sigmoid(3·z_final): the stage-B labels (the reference's label_sparsity).</summary>
    public required float LabelSparsity { get; init; }
    /// <summary>1 − mean of the hypernetwork's scores before stage B (the reference's sparsity).</summary>
    public required float HypernetSparsity { get; init; }
    public required float BceFirst { get; init; }
    public required float BceLast { get; init; }
    public required double LearningRate { get; init; }
    public required double Seconds { get; init; }
    public required double DataSeconds { get; init; }
    public required double StageASeconds { get; init; }
    public required double StageBSeconds { get; init; }
    /// <summary>Mean over outer steps of 1 − KL(after the inner loop)/KL(before): see <see cref="StageAResult.KlReduction"/>.</summary>
    public float KlReduction { get; init; }
    /// <summary>
    /// Label stability (only on diagnostic iterations): IoU of the open stage-A labels (y &gt; 0.5) of the same image under
    /// two z0 draws, and of two different images under one draw. Same ≫ across: the labels follow the image.
    /// </summary>
    public double? LabelIoUSame { get; init; }
    public double? LabelIoUAcross { get; init; }
    /// <summary>Input dependence (diagnostic iterations): mean IoU of the hypernetwork's top-10 % masks across the probe images.</summary>
    public double? ProbeIoUAcross { get; init; }

    public const string CsvHeader = "iteration,seconds,data_s,stage_a_s,stage_b_s,outer_kl,mask_sparsity,label_sparsity,hypernet_sparsity,bce_first,bce_last,lr," +
                                    "kl_reduction,label_iou_same,label_iou_across,probe_iou_across";

    public string ToCsv() => string.Join(",",
        Iteration.ToString(CultureInfo.InvariantCulture), F(Seconds), F(DataSeconds), F(StageASeconds), F(StageBSeconds),
        F(OuterKl), F(MaskSparsity), F(LabelSparsity), F(HypernetSparsity), F(BceFirst), F(BceLast), LearningRate.ToString("R", CultureInfo.InvariantCulture),
        F(KlReduction), F(LabelIoUSame), F(LabelIoUAcross), F(ProbeIoUAcross));

    private static string F(double v) => v.ToString("G7", CultureInfo.InvariantCulture);
    private static string F(double? v) => v is { } x ? F(x) : "";
}

/// <summary>
/// Meta-training (method.md §4): draws 2B images per iteration, applies the training transform and CutMix, runs
/// <see cref="MetaTrainingStep"/> (stage A + stage B) and keeps everything a resume needs.
/// <para>Randomness: one <see cref="Rng"/> seeded with <see cref="MetaTrainOptions.Seed"/> draws, per iteration and in
/// this order, the 2B crop windows, the B CutMix boxes and z0 ~ U(−1, 1). The image order is a shuffled permutation
/// per epoch (drop-last, like the reference's DataLoader(shuffle=True, drop_last=True)), drawn from a generator
/// seeded by (seed, epoch). The hypernetwork starts from <see cref="Hypernetwork.InitializeRandom"/> with a seed
/// derived from the same seed.</para>
/// <para>Checkpoints (safetensors, written atomically) hold the hypernetwork weights, its RMSprop state, the RNG
/// state, the data position, the iteration count, the options and the base model's fingerprint: a run resumed from
/// one continues bit for bit like an uninterrupted run.</para>
/// <para>Under MPI every rank draws the same images and random numbers, prepares only its slice of the batch and
/// runs the step on it (<see cref="MetaTrainingStep"/>); rank 0 alone writes checkpoints.</para>
/// </summary>
internal sealed class MetaTrainer : IDisposable
{
    public const string KindKey = "wte.meta.kind", KindValue = "meta-train-checkpoint";
    public const string IterationKey = "wte.meta.iteration", RngKey = "wte.meta.rng", OptionsKey = "wte.meta.options";
    public const string DataEpochKey = "wte.meta.data_epoch", DataCursorKey = "wte.meta.data_cursor";
    public const string DataCountKey = "wte.meta.data_count", DataDescriptionKey = "wte.meta.data";
    private const string HypernetPrefix = HypernetFile.CheckpointPrefix, StatePrefix = "rmsprop/";

    private readonly VitModel _model;
    private readonly IImageSource _data;
    private readonly float[] _mean, _std;
    private readonly MetaTrainingStep _step;
    private readonly RandomResizedCrop _crop;
    private readonly Rng _rng;
    private readonly float[] _images, _mixed, _z0;
    private readonly DecodedImage[] _decoded;
    private readonly CropBox[] _crops;
    private int[] _order = [];
    private int _epoch, _cursor;
    private readonly ICommunicator _comm;

    /// <summary>
    /// A fresh run. <paramref name="mean"/>/<paramref name="std"/> are the model's normalisation (one per channel);
    /// <paramref name="baseFingerprint"/> is computed from the model when not given.
    /// </summary>
    public MetaTrainer(VitModel model, ReadOnlySpan<float> mean, ReadOnlySpan<float> std, IImageSource data, MetaTrainOptions options, string? baseFingerprint = null,
                       ICommunicator? communicator = null)
    {
        _comm = communicator ?? SingleProcess.Instance;
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _data = data ?? throw new ArgumentNullException(nameof(data));
        Options = (options ?? throw new ArgumentNullException(nameof(options))).Validate();
        var c = model.Config;
        if (mean.Length != c.InChans || std.Length != c.InChans)
            throw new ArgumentException($"normalisation has {mean.Length} means and {std.Length} stds for a {c.InChans}-channel model");
        _mean = mean.ToArray();
        _std = std.ToArray();
        if (c.ImageSize % c.PatchSize != 0) throw new ArgumentException($"image size {c.ImageSize} is not a multiple of the patch size {c.PatchSize}");
        if (data.Count < 2 * options.Batch)
            throw new ArgumentException($"{data.Description}: an iteration needs {2 * options.Batch} images (2 × batch {options.Batch}), the data has {data.Count}");
        Target = options.EditBlocks is null ? EditTarget.Default(c) : new EditTarget(c, options.EditBlocks);
        BaseFingerprint = baseFingerprint ?? VitCheckpoint.Fingerprint(model);
        var hypernet = new Hypernetwork(model.Backend, HypernetConfig.For(c, Target.Units.Count, options.HypernetDepth));
        try
        {
            hypernet.InitializeRandom(unchecked(options.Seed ^ 0x6879_7065_726E_6574UL));
            _step = new MetaTrainingStep(model, Target, hypernet, options, _comm);
        }
        catch
        {
            hypernet.Dispose();
            throw;
        }
        _crop = new RandomResizedCrop(c.ImageSize, options.CropScaleMin, options.CropScaleMax).Validate();
        _rng = new Rng(options.Seed);
        int pixels = c.InChans * c.ImageSize * c.ImageSize;
        _images = new float[2 * options.Batch * pixels];
        _mixed = new float[options.Batch * pixels];
        _z0 = new float[_step.GateCount];
        _decoded = new DecodedImage[2 * options.Batch];
        _crops = new CropBox[2 * options.Batch];
        if (options.DiagnosticsEvery > 0) SetProbe();
        StartEpoch(0);
    }

    public MetaTrainOptions Options { get; }
    public EditTarget Target { get; }
    public Hypernetwork Hypernet => _step.Hypernet;
    public MetaTrainingStep Step => _step;
    public string BaseFingerprint { get; }
    public IImageSource Data => _data;
    public ICommunicator Communicator => _comm;

    /// <summary>Iterations completed.</summary>
    public int Iteration { get; private set; }

    public bool Done => Iteration >= Options.Iterations;

    /// <summary>The path of the checkpoint written after <paramref name="iteration"/> iterations in <paramref name="folder"/>.</summary>
    /// <summary>Names this trainer writes in a checkpoint folder (meta-NNNNNN.safetensors).</summary>
    public static bool IsCheckpointName(string relative) => System.Text.RegularExpressions.Regex.IsMatch(relative, @"^meta-[0-9]{6,}\.safetensors$");

    public static string CheckpointPath(string folder, int iteration) => Path.Combine(folder, $"meta-{iteration:D6}.safetensors");

    private void StartEpoch(int epoch)
    {
        _epoch = epoch;
        _cursor = 0;
        var rng = new Rng(unchecked(Options.Seed * 0x9E37_79B9_7F4A_7C15UL + 0x5851_F42D_4C95_7F2DUL * (ulong)(epoch + 1)));
        if (_order.Length != _data.Count) _order = new int[_data.Count];
        for (int i = 0; i < _order.Length; i++) _order[i] = i;
        for (int i = _order.Length - 1; i > 0; i--)
        {
            int j = rng.NextInt(0, i + 1);
            (_order[i], _order[j]) = (_order[j], _order[i]);
        }
    }

    /// <summary>Runs one iteration (data, stage A, stage B) and returns its numbers.</summary>
    public IterationStats RunIteration()
    {
        var clock = Stopwatch.StartNew();
        var c = _model.Config;
        int b = Options.Batch, pixels = c.InChans * c.ImageSize * c.ImageSize;

        // Data: 2B images in permutation order (a new epoch when fewer than 2B are left), transform, CutMix.
        if (_cursor + 2 * b > _order.Length) StartEpoch(_epoch + 1);
        int from = _cursor;
        _cursor += 2 * b;
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, _model.Backend.Threads) };
        Parallel.For(0, 2 * b, parallel, k => _decoded[k] = _data.Load(_order[from + k], c.InChans));
        for (int k = 0; k < 2 * b; k++) _crops[k] = _crop.Sample(_rng, _decoded[k].Width, _decoded[k].Height);
        int first = _step.SliceStart, count = _step.SliceCount;   // the samples this rank runs (all of them on one process)
        bool Mine(int k) => k % b >= first && k % b < first + count;
        Parallel.For(0, 2 * b, parallel, k => { if (Mine(k)) _crop.Apply(_decoded[k], _crops[k], _mean, _std, _images.AsSpan(k * pixels, pixels)); });
        Array.Clear(_decoded);
        int grid = c.ImageSize / c.PatchSize;
        for (int i = 0; i < b; i++)
        {
            var box = CutMix.Sample(_rng, grid, Options.CutMixReferenceBounds);
            if (Mine(i)) CutMix.Apply(_images.AsSpan(i * pixels, pixels), _images.AsSpan((i + b) * pixels, pixels), _mixed.AsSpan(i * pixels, pixels),
                c.InChans, c.ImageSize, c.PatchSize, box);
        }
        for (int j = 0; j < _z0.Length; j++) _z0[j] = (float)(2 * _rng.NextDouble() - 1);
        double dataSeconds = clock.Elapsed.TotalSeconds;

        _step.SetBatch(_images.AsSpan(0, b * pixels), _mixed);
        var a = _step.RunStageA(_z0);
        _model.Backend.Synchronize();
        bool diagnose = Options.DiagnosticsEvery > 0 && (Iteration + 1) % Options.DiagnosticsEvery == 0;
        double? labelSame = null, labelAcross = null, probeAcross = null;
        // Label stability compares whole-batch labels, which one rank of an MPI world does not hold: single-process only.
        if (diagnose && _comm.Size == 1) (labelSame, labelAcross) = LabelStability();
        double stageASeconds = clock.Elapsed.TotalSeconds - dataSeconds;
        double lr = Options.HypernetLrAt(Iteration);
        var stageB = _step.RunStageB(lr);
        if (diagnose) probeAcross = ProbeInputDependence();
        _model.Backend.Synchronize();
        double total = clock.Elapsed.TotalSeconds;
        Iteration++;
        return new IterationStats
        {
            KlReduction = a.KlReduction, LabelIoUSame = labelSame, LabelIoUAcross = labelAcross, ProbeIoUAcross = probeAcross,
            Iteration = Iteration, OuterKl = a.OuterKl[^1] / b, MaskSparsity = 1 - a.MaskMean[^1],
            LabelSparsity = 1 - stageB.LabelMean, HypernetSparsity = 1 - stageB.HypernetMean,
            BceFirst = stageB.Losses[0], BceLast = stageB.Losses[^1], LearningRate = lr,
            Seconds = total, DataSeconds = dataSeconds, StageASeconds = stageASeconds, StageBSeconds = total - dataSeconds - stageASeconds,
        };
    }

    /// <summary>
    /// Label stability: reruns stage A on the same batch from a second z0 (drawn from a generator of its own, so the
    /// main random stream, and with it every result and resume, is unchanged), compares the two label sets, then puts
    /// the first run's z back for stage B. Costs one extra stage A.
    /// </summary>
    private (double Same, double Across) LabelStability()
    {
        int b = Options.Batch;
        var first = new float[_step.GateCount];
        _step.Z.CopyTo(first);
        var rng = new Rng(unchecked(Options.Seed ^ 0x6C61_6265_6C73_0000UL ^ (ulong)Iteration * 0x9E37_79B9_7F4A_7C15UL));
        var z0 = new float[_step.GateCount];
        for (int j = 0; j < z0.Length; j++) z0[j] = (float)(2 * rng.NextDouble() - 1);
        _step.RunStageA(z0);
        var second = new float[_step.GateCount];
        _step.Z.CopyTo(second);
        _step.Z.CopyFrom(first);
        // The labels stage B learns as 1: y = sigmoid(3z) > 0.5.
        var a = MetaDiagnostics.PositiveSets(first, b);
        var c = MetaDiagnostics.PositiveSets(second, b);
        return (MetaDiagnostics.MeanIoUSame(a, c), MetaDiagnostics.MeanIoUAcross(a));
    }

    /// <summary>Mean IoU across the probe images of the hypernetwork's top-10 % masks (near 1: one mask for every input).</summary>
    public double ProbeInputDependence()
    {
        var scores = new float[_step.GateCount];
        _step.ProbeScores(scores);
        return MetaDiagnostics.MeanIoUAcross(MetaDiagnostics.TopKSets(scores, Options.Batch));
    }

    /// <summary>The probe batch: the data's first B images, whole (no crop), in the model's normalisation.</summary>
    private void SetProbe()
    {
        var c = _model.Config;
        int b = Options.Batch, pixels = c.InChans * c.ImageSize * c.ImageSize;
        var probe = new float[b * pixels];
        for (int k = 0; k < b; k++)
        {
            var image = _data.Load(k, c.InChans);
            _crop.Apply(image, new CropBox(0, 0, image.Height, image.Width), _mean, _std, probe.AsSpan(k * pixels, pixels));
        }
        _step.SetProbe(probe);
    }

    /// <summary>
    /// Runs until <see cref="MetaTrainOptions.Iterations"/> are done, calling <paramref name="onIteration"/> after each
    /// and writing a checkpoint to <paramref name="checkpointFolder"/> every <see cref="MetaTrainOptions.CheckpointEvery"/>.
    /// </summary>
    public void Run(string? checkpointFolder, Action<IterationStats>? onIteration = null, CancellationToken cancel = default)
    {
        if (checkpointFolder is not null) Directory.CreateDirectory(checkpointFolder);
        while (!Done)
        {
            cancel.ThrowIfCancellationRequested();
            var stats = RunIteration();
            onIteration?.Invoke(stats);
            if (checkpointFolder is not null && Options.CheckpointEvery > 0 && Iteration % Options.CheckpointEvery == 0)
            {
                CheckRanksAgree();
                if (_comm.IsRoot()) SaveCheckpoint(CheckpointPath(checkpointFolder, Iteration));
            }
        }
        CheckRanksAgree();
    }

    /// <summary>
    /// Every rank runs stage B on the same inputs and so holds the same hypernetwork; ranks on different CPUs or
    /// thread counts could round differently and drift apart silently. A hash of the weights catches that.
    /// </summary>
    public void CheckRanksAgree()
    {
        if (_comm.Size == 1) return;
        ulong h = 14695981039346656037UL;
        foreach (var p in Hypernet.Parameters)
            foreach (float v in p.Value.ToArray()) h = (h ^ BitConverter.SingleToUInt32Bits(v)) * 1099511628211UL;
        if (!_comm.AllEqual(unchecked((long)h)))
            throw new InvalidOperationException($"after iteration {Iteration} the ranks' hypernetworks differ: every rank must run the same wte build on the same kind of CPU with the same --threads");
    }

    /// <summary>The trained hypernetwork as a <see cref="HypernetFile"/>.</summary>
    public void SaveHypernet(string path) =>
        HypernetFile.Save(path, Hypernet, Target.Blocks, BaseFingerprint, new Dictionary<string, string>
        {
            [IterationKey] = Iteration.ToString(CultureInfo.InvariantCulture),
            [OptionsKey] = Options.ToJson(),
        });

    // ---- checkpoints ----------------------------------------------------------------------------------

    public void SaveCheckpoint(string path)
    {
        var metadata = HypernetFile.Metadata(Hypernet.Config, Target.Blocks, BaseFingerprint);
        metadata[KindKey] = KindValue;
        metadata[IterationKey] = Iteration.ToString(CultureInfo.InvariantCulture);
        metadata[RngKey] = string.Join(",", _rng.SaveState().Select(w => w.ToString("x16", CultureInfo.InvariantCulture)));
        metadata[OptionsKey] = Options.ToJson();
        metadata[DataEpochKey] = _epoch.ToString(CultureInfo.InvariantCulture);
        metadata[DataCursorKey] = _cursor.ToString(CultureInfo.InvariantCulture);
        metadata[DataCountKey] = _data.Count.ToString(CultureInfo.InvariantCulture);
        metadata[DataDescriptionKey] = _data.Description;
        var parameters = Hypernet.Parameters;
        var state = _step.HypernetSquareAvg;
        var tensors = HypernetFile.Tensors(Hypernet, HypernetPrefix)
            .Concat(parameters.Select((p, i) => new NamedTensor(StatePrefix + p.Name, p.Shape, state[i].ToArray())));
        SafeTensors.Write(path, tensors, metadata);
    }

    /// <summary>
    /// Continues a run from a checkpoint with the options stored in it; <paramref name="adjust"/> may change what does
    /// not alter the arithmetic (iterations, checkpoint interval). The model must be the checkpoint's base model and
    /// the data must hold as many images as it did.
    /// </summary>
    public static MetaTrainer Resume(VitModel model, ReadOnlySpan<float> mean, ReadOnlySpan<float> std, IImageSource data, string checkpoint,
                                     Func<MetaTrainOptions, MetaTrainOptions>? adjust = null, string? baseFingerprint = null, ICommunicator? communicator = null)
    {
        var file = SafeTensors.Read(checkpoint);
        var md = file.Metadata;
        string Get(string key) => md.TryGetValue(key, out var v) ? v : throw new CheckpointFormatException(checkpoint, $"not a meta-training checkpoint: metadata '{key}' is missing");
        if (Get(KindKey) != KindValue) throw new CheckpointFormatException(checkpoint, $"metadata '{KindKey}' is '{md[KindKey]}', not '{KindValue}'");
        int ParseInt(string key) => int.TryParse(Get(key), NumberStyles.None, CultureInfo.InvariantCulture, out int v)
            ? v : throw new CheckpointFormatException(checkpoint, $"metadata '{key}' = '{md[key]}' is not a non-negative integer");
        MetaTrainOptions stored;
        try { stored = MetaTrainOptions.FromJson(Get(OptionsKey)); }
        catch (Exception e) when (e is System.Text.Json.JsonException or ArgumentException)
        {
            throw new CheckpointFormatException(checkpoint, $"bad metadata '{OptionsKey}': {e.Message}", e);
        }
        var options = adjust is null ? stored : adjust(stored);
        if ((options with { Iterations = stored.Iterations, CheckpointEvery = stored.CheckpointEvery }).ToJson() != stored.ToJson())
            throw new ArgumentException($"{checkpoint}: only --iterations and --checkpoint-every may differ from the checkpoint's options when resuming");
        var (_, blocks, fingerprint) = HypernetFile.Describe(md, checkpoint);
        string actual = baseFingerprint ?? VitCheckpoint.Fingerprint(model);
        if (!string.Equals(actual, fingerprint, StringComparison.OrdinalIgnoreCase))
            throw new CheckpointFormatException(checkpoint, $"checkpoint was trained on base model {fingerprint}, this model's fingerprint is {actual}");
        int count = ParseInt(DataCountKey);
        if (count != data.Count)
            throw new CheckpointFormatException(checkpoint, $"checkpoint was trained on {count} images ({md.GetValueOrDefault(DataDescriptionKey)}), the data now holds {data.Count} ({data.Description})");
        var rngWords = Get(RngKey).Split(',');
        var words = new ulong[rngWords.Length];
        for (int i = 0; i < words.Length; i++)
            if (!ulong.TryParse(rngWords[i], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out words[i]))
                throw new CheckpointFormatException(checkpoint, $"metadata '{RngKey}' is not 4 hex words");
        if (words.Length != 4) throw new CheckpointFormatException(checkpoint, $"metadata '{RngKey}' is not 4 hex words");

        var trainer = new MetaTrainer(model, mean, std, data, options, actual, communicator);
        try
        {
            if (!trainer.Target.Blocks.SequenceEqual(blocks))
                throw new CheckpointFormatException(checkpoint, $"edit blocks [{string.Join(",", blocks)}] differ from the options' [{string.Join(",", trainer.Target.Blocks)}]");
            var parameters = trainer.Hypernet.Parameters;
            var weights = new Dictionary<string, (int[], float[])>();
            foreach (var t in file.Tensors)
                if (t.Name.StartsWith(HypernetPrefix, StringComparison.Ordinal)) weights[t.Name[HypernetPrefix.Length..]] = (t.Shape, t.Data);
            trainer.Hypernet.LoadWeights(weights, checkpoint);
            for (int i = 0; i < parameters.Count; i++)
            {
                file.TryGet(StatePrefix + parameters[i].Name, out var s);
                trainer._step.HypernetSquareAvg[i].CopyFrom(OptimizerState.Validated(checkpoint, StatePrefix + parameters[i].Name, s, parameters[i].Shape, nonNegative: true));
            }
            trainer._rng.RestoreState(words);
            trainer.Iteration = ParseInt(IterationKey);
            int epoch = ParseInt(DataEpochKey), cursor = ParseInt(DataCursorKey);
            if (cursor > data.Count) throw new CheckpointFormatException(checkpoint, $"data cursor {cursor} is beyond the {data.Count} images");
            trainer.StartEpoch(epoch);
            trainer._cursor = cursor;
            return trainer;
        }
        catch
        {
            trainer.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        var hypernet = _step.Hypernet;
        _step.Dispose();
        hypernet.Dispose();
    }
}

using WhereToEdit.Engine.Distributed;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.MetaTraining;

/// <summary>What stage A did, per outer step.</summary>
/// <param name="OuterKl">Σ_i ℓ_i(W + m_i⊙Δ_i) after the inner loops of step s (not divided by B).</param>
/// <param name="MaskMean">mean(m) over all B·R·H gates at step s.</param>
/// <param name="KlBefore">Σ_i ℓ_i(W) at step s before the inner loop (Δ = 0); equals <paramref name="OuterKl"/> with no inner steps.</param>
internal sealed record StageAResult(float[] OuterKl, float[] MaskMean, float[] KlBefore)
{
    /// <summary>
    /// Mean over outer steps of 1 − ℓ(after the inner loop)/ℓ(before): how much of the edit task the inner loop solves
    /// (the reference's elr at ViT-B width; near 0 means the labels learn from noise).
    /// </summary>
    public float KlReduction
    {
        get
        {
            double sum = 0;
            int n = 0;
            for (int s = 0; s < OuterKl.Length; s++)
                if (KlBefore[s] > 0) { sum += 1 - OuterKl[s] / (double)KlBefore[s]; n++; }
            return n == 0 ? 0f : (float)(sum / n);
        }
    }
}

/// <summary>What stage B did.</summary>
/// <param name="Losses">BceWeight·BCE before each hypernetwork step.</param>
/// <param name="LabelMean">mean(y), y = sigmoid(LabelScale·z).</param>
/// <param name="HypernetMean">mean of the hypernetwork's scores before its first step.</param>
internal sealed record StageBResult(float[] Losses, float LabelMean, float HypernetMean);

/// <summary>
/// The arithmetic of one meta-training iteration (method.md §4, the reference's decoupled scheme) on a backend, for a
/// given batch, initial mask logits and stage-B learning rate; data, randomness and checkpoints live in
/// <see cref="MetaTrainer"/>.
/// <para>Stage A runs the B samples' inner loops together: each edited fc1/fc2 matrix gets per-sample weights
/// W'_i = W + m_i⊙Δ_i ([B, out, in], built by <see cref="IBackend.GatedCombine"/>), the blocks from the first edited
/// block on run as one batch on the cached input of the mixed images, the edited Linear layers as batched GEMMs over
/// the per-sample weights, and the backward stops at the first edited block with per-sample gradients ∇_{W'_i}ℓ_i.
/// Each ℓ_i = T²·KL(p_i ‖ softmax(f_{W'_i}(x̃_i)/T)) gets gradient scale 1 (the reference's per-sample 'batchmean'),
/// so the batch is exactly B independent single-image problems. Inner step: Δ_i ← Δ_i − elr·∇_{W'_i}ℓ_i (the
/// reference's Δ − elr·∇_Δℓ/m). Outer gradient, Δ held constant: dL/dm_i[j] = Σ_k ∇W'_i[j,k]·Δ_i[j,k] over row j of
/// fc1 / column j of fc2 (<see cref="IBackend.GateGradient"/>) + λ/numel; dz = dm·scale·m(1 − m); RMSprop on z.</para>
/// <para>Stage B: y = sigmoid(3·z) (constant), then RMSprop steps on BceWeight·BCE(g_φ(cls(x̃)), y) with the
/// hypernetwork optimizer state kept across iterations.</para>
/// <para>Data-parallel (docs/DISTRIBUTED.md): with a communicator of N ranks each rank runs stage A for its slice
/// of the B samples (the samples are independent; only the sparsity penalty's 1/numel uses the global B). Stage B
/// then gathers every rank's final z and [CLS] features, so each rank runs stage B on the whole batch exactly like a
/// single process and applies the same update: B·(R·H + dim) floats move per iteration instead of 4 gradient
/// Allreduces of the hypernetwork.</para>
/// Everything is allocated once; the loops allocate nothing on the backend.
/// </summary>
internal sealed class MetaTrainingStep : IDisposable
{
    private readonly VitModel _model;
    private readonly IBackend _be;
    private readonly VitWorkspace _ws;
    private readonly HypernetWorkspace _hws;
    private readonly Tensor _images, _teacher, _cls, _probeCls;
    private readonly Tensor _z, _zSquareAvg, _m, _dm, _dz, _labels, _bceLoss;
    private readonly Tensor _zAll, _clsAll;   // the whole batch's final z and [CLS] features (= _z, _cls on one rank)
    private readonly Parameter[] _shared;
    private readonly PerSampleWeights[] _perSample;
    private readonly Tensor[] _delta;
    private readonly Tensor[] _hyperSquareAvg;
    private readonly BackwardOptions _backward;
    private readonly float[] _gatesHost, _lossHost = [0f];
    private readonly int _b, _r, _h;
    private readonly ICommunicator _comm;
    private readonly int _first, _local;          // this rank's samples [_first, _first + _local) of the B
    private readonly int[] _gateCounts, _clsCounts;
    private readonly float[] _zHost = [], _zAllHost = [], _clsHost = [], _clsAllHost = [];
    private readonly double[] _statSums, _statScratch;

    public MetaTrainingStep(VitModel model, EditTarget target, Hypernetwork hypernet, MetaTrainOptions options, ICommunicator? communicator = null)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        Target = target ?? throw new ArgumentNullException(nameof(target));
        Hypernet = hypernet ?? throw new ArgumentNullException(nameof(hypernet));
        Options = (options ?? throw new ArgumentNullException(nameof(options))).Validate();
        var c = model.Config;
        if (target.Model != c) throw new ArgumentException("the edit target was made for a different ViT config");
        var hc = hypernet.Config;
        if (hc.Units != target.Units.Count || hc.UnitSize != target.UnitSize || hc.EmbedDim != c.EmbedDim)
            throw new ArgumentException($"hypernetwork ({hc.Units} units of {hc.UnitSize}, width {hc.EmbedDim}) does not fit the edit target ({target.Units.Count} units of {target.UnitSize}, width {c.EmbedDim})");
        if (!ReferenceEquals(hypernet.Backend, model.Backend)) throw new ArgumentException("the hypernetwork and the ViT must share one backend");
        _be = model.Backend;
        _b = options.Batch; _r = target.Units.Count; _h = target.UnitSize;
        _comm = communicator ?? SingleProcess.Instance;
        if (_b < _comm.Size)
            throw new ArgumentException($"--batch {_b} is smaller than the {_comm.Size} MPI ranks: every rank needs at least one sample (use ≤ {_b} ranks or a larger batch)");
        (_first, _local) = CommunicatorExtensions.Slice(_b, _comm.Size, _comm.Rank);
        int gatesPerSample = _r * _h;
        _gateCounts = new int[_comm.Size];
        _clsCounts = new int[_comm.Size];
        for (int rank = 0; rank < _comm.Size; rank++)
        {
            int count = CommunicatorExtensions.Slice(_b, _comm.Size, rank).Count;
            _gateCounts[rank] = count * gatesPerSample;
            _clsCounts[rank] = count * c.EmbedDim;
        }
        _statSums = new double[3 * options.OuterSteps];   // Σ outer KL, Σ mask, Σ KL before the inner loop, per outer step
        _statScratch = new double[_comm.Size * _statSums.Length];

        _ws = model.CreateWorkspace(_local);
        _hws = hypernet.CreateWorkspace(_b);
        _images = _be.Allocate("meta.images", _local, c.InChans, c.ImageSize, c.ImageSize);
        _teacher = _be.Allocate("meta.teacher_probs", _local, c.NumClasses);
        _cls = _be.Allocate("meta.cls_mixed", _local, c.EmbedDim);
        _z = _be.Allocate("meta.z", _local, _r, _h);
        _zSquareAvg = _be.Allocate("meta.z.square_avg", _local, _r, _h);
        _m = _be.Allocate("meta.m", _local, _r, _h);
        _dm = _be.Allocate("meta.m.grad", _local, _r, _h);
        _dz = _be.Allocate("meta.z.grad", _local, _r, _h);
        _probeCls = _be.Allocate("meta.cls_probe", _b, c.EmbedDim);
        _labels = _be.Allocate("meta.labels", _b, _r, _h);
        _bceLoss = _be.Allocate("meta.bce", 1);
        if (_comm.Size > 1)
        {
            _zAll = _be.Allocate("meta.z.all_ranks", _b, _r, _h);
            _clsAll = _be.Allocate("meta.cls_mixed.all_ranks", _b, c.EmbedDim);
            _zHost = new float[LocalGateCount];
            _zAllHost = new float[GateCount];
            _clsHost = new float[_local * c.EmbedDim];
            _clsAllHost = new float[_b * c.EmbedDim];
        }
        else
        {
            _zAll = _z;
            _clsAll = _cls;
        }
        _shared = target.Units.Select(u => model[u.Parameter]).ToArray();
        _perSample = _shared.Select(p => new PerSampleWeights(
            _be.Allocate(p.Name + ".per_sample", _local, p.Shape[0], p.Shape[1]),
            _be.Allocate(p.Name + ".per_sample.grad", _local, p.Shape[0], p.Shape[1]))).ToArray();
        _delta = _shared.Select(p => _be.Allocate(p.Name + ".delta", _local, p.Shape[0], p.Shape[1])).ToArray();
        _hyperSquareAvg = hypernet.Parameters.Select(p => _be.Allocate(p.Name + ".square_avg", p.Shape)).ToArray();
        _backward = BackwardOptions.Truncated(target.FirstBlock, []);
        _gatesHost = new float[GateCount];
    }

    public EditTarget Target { get; }
    public Hypernetwork Hypernet { get; }
    public MetaTrainOptions Options { get; }

    /// <summary>B·R·H: free mask logits per iteration.</summary>
    public int GateCount => _b * _r * _h;

    /// <summary>This rank's share of the B samples: [SliceStart, SliceStart + SliceCount) (all of them on one process).</summary>
    public int SliceStart => _first;
    public int SliceCount => _local;

    /// <summary>SliceCount·R·H: the mask logits this rank optimises in stage A.</summary>
    public int LocalGateCount => _local * _r * _h;

    /// <summary>Current mask logits z [SliceCount, R, H] of this rank's samples (after <see cref="RunStageA"/>: the final z).</summary>
    public Tensor Z => _z;

    /// <summary>Softmax(f(x_i)/T) of this rank's clean bases [SliceCount, classes], set by <see cref="SetBatch"/>.</summary>
    public Tensor TeacherProbs => _teacher;

    /// <summary>The frozen model's final [CLS] features of this rank's mixed images [SliceCount, dim] (the hypernetwork's input).</summary>
    public Tensor ClsMixed => _cls;

    /// <summary>Δ of edited matrix <paramref name="unit"/> [B, out, in] as the last outer step left it.</summary>
    public Tensor Delta(int unit) => _delta[unit];

    /// <summary>RMSprop square averages of the hypernetwork parameters, in <see cref="Hypernetwork.Parameters"/> order (persist across iterations).</summary>
    public IReadOnlyList<Tensor> HypernetSquareAvg => _hyperSquareAvg;

    /// <summary>
    /// Computes the targets p_i = softmax(f(x_i)/T) on the clean bases, then runs the mixed images once through the
    /// frozen model: caches the input of the first edited block and keeps the final [CLS] features.
    /// Both arrays are the whole batch [B, C, H, W]; only this rank's slice is read (the rest may be left unfilled).
    /// </summary>
    public void SetBatch(ReadOnlySpan<float> clean, ReadOnlySpan<float> mixed)
    {
        long whole = _images.Length / _local * _b;
        if (clean.Length != whole || mixed.Length != whole)
            throw new ArgumentException($"meta-training batch: {clean.Length} clean and {mixed.Length} mixed values, {whole} expected ([{_b}, {string.Join(", ", _images.Shape.Skip(1))}])");
        var c = _model.Config;
        int offset = (int)(_images.Length / _local * _first), length = (int)_images.Length;
        _ws.ClearPerSampleWeights();
        _images.CopyFrom(clean.Slice(offset, length));
        _model.Forward(_ws, _images, _local);
        _be.Softmax(_ws.Logits, _teacher, _local, c.NumClasses, Options.Temperature);
        _images.CopyFrom(mixed.Slice(offset, length));
        _model.Forward(_ws, _images, _local);
        _be.Copy(_ws.ClsFeature, 0, _cls, 0, (long)_local * c.EmbedDim);
    }

    /// <summary>
    /// Sets the probe batch (B clean images [B, C, H, W]) whose [CLS] features <see cref="ProbeScores"/> feeds the
    /// hypernetwork, in chunks of this rank's slice size. Call before <see cref="SetBatch"/> (it reuses the model workspace).
    /// </summary>
    public void SetProbe(ReadOnlySpan<float> images)
    {
        var c = _model.Config;
        int per = c.InChans * c.ImageSize * c.ImageSize;
        if (images.Length != (long)_b * per)
            throw new ArgumentException($"probe batch: {images.Length} values, {(long)_b * per} expected ([{_b}, {c.InChans}, {c.ImageSize}, {c.ImageSize}])");
        _ws.ClearPerSampleWeights();
        for (int start = 0; start < _b; start += _local)
        {
            int n = Math.Min(_local, _b - start);
            _images.CopyFrom(images.Slice(start * per, n * per));
            _model.Forward(_ws, _images, n);
            _be.Copy(_ws.ClsFeature, 0, _probeCls, (long)start * c.EmbedDim, (long)n * c.EmbedDim);
        }
    }

    /// <summary>The hypernetwork's soft scores [B, R, H] for the probe batch (into <paramref name="destination"/>).</summary>
    public void ProbeScores(Span<float> destination)
    {
        if (destination.Length != GateCount) throw new ArgumentException($"destination holds {destination.Length} values, {GateCount} expected");
        Hypernet.Forward(_hws, _probeCls, _b);
        _hws.Scores.CopyTo(destination);
    }

    /// <summary>
    /// Stage A from initial logits z0 [B, R, H] of the whole batch (fresh RMSprop state) on this rank's slice. Leaves
    /// the final z in <see cref="Z"/>; the returned numbers are over the whole batch (summed over the ranks).
    /// </summary>
    public StageAResult RunStageA(ReadOnlySpan<float> z0)
    {
        if (z0.Length != GateCount) throw new ArgumentException($"z0 holds {z0.Length} values, {GateCount} expected ([{_b}, {_r}, {_h}])");
        var o = Options;
        var outerKl = new float[o.OuterSteps];
        var maskMean = new float[o.OuterSteps];
        int localGates = LocalGateCount;
        _z.CopyFrom(z0.Slice(_first * _r * _h, localGates));
        _be.Fill(_zSquareAvg, 0f);
        float penaltyGrad = o.PenaltyGradPerGate(GateCount, _h);   // GateCount is the global numel: the penalty is λ·mean over all B·R·H gates
        for (int k = 0; k < Target.Blocks.Count; k++)
            _ws.SetPerSampleWeights(Target.Blocks[k], _perSample[2 * k], _perSample[2 * k + 1]);
        try
        {
            for (int s = 0; s < o.OuterSteps; s++)
            {
                _be.SigmoidForward(_z, _m, localGates, o.MaskScale, 0f, 1f);
                _statSums[o.OuterSteps + s] = Sum(_m, localGates);
                foreach (var d in _delta) _be.Fill(d, 0f);
                for (int t = 0; t < o.InnerSteps; t++)
                {
                    double kl = EditedPass();
                    if (t == 0) _statSums[2 * o.OuterSteps + s] = kl;
                    for (int u = 0; u < _r; u++) _be.Axpy(-o.InnerLr, _perSample[u].Grads, _delta[u], _delta[u].Length);
                }
                _statSums[s] = EditedPass();
                if (o.InnerSteps == 0) _statSums[2 * o.OuterSteps + s] = _statSums[s];
                for (int u = 0; u < _r; u++)
                {
                    var unit = Target.Units[u];
                    var shape = _shared[u].Shape;
                    _be.GateGradient(_perSample[u].Grads, _delta[u], _dm, (long)u * _h, (long)_r * _h, _local, shape[0], shape[1], unit.Axis, penaltyGrad);
                }
                _be.SigmoidBackward(_m, _dm, _dz, localGates, o.MaskScale, 0f, 1f);
                _be.RmsPropStep(_z, _dz, _zSquareAvg, o.MaskLr, 0.99f, 1e-8f, 0f, UpdateMask.None(localGates));
            }
        }
        finally
        {
            _ws.ClearPerSampleWeights();
        }
        _comm.SumInRankOrder(_statSums, _statScratch);
        var klBefore = new float[o.OuterSteps];
        for (int s = 0; s < o.OuterSteps; s++)
        {
            outerKl[s] = (float)_statSums[s];
            maskMean[s] = (float)(_statSums[o.OuterSteps + s] / GateCount);
            klBefore[s] = (float)_statSums[2 * o.OuterSteps + s];
        }
        return new StageAResult(outerKl, maskMean, klBefore);
    }

    /// <summary>W'_i = W + m_i⊙Δ_i, forward from the first edited block, per-sample KL, backward to ∇_{W'_i}ℓ_i. Returns Σ_i ℓ_i over this rank's samples.</summary>
    private double EditedPass()
    {
        var c = _model.Config;
        for (int u = 0; u < _r; u++)
        {
            var shape = _shared[u].Shape;
            _be.GatedCombine(_shared[u].Value, _m, (long)u * _h, (long)_r * _h, _delta[u], _perSample[u].Values, _local, shape[0], shape[1], Target.Units[u].Axis);
        }
        _model.ForwardFrom(_ws, Target.FirstBlock, _local);
        _be.KlDivergence(_ws.Logits, _teacher, _ws.Losses, _ws.DLogits, _local, c.NumClasses, Options.Temperature, 1f);
        _model.Backward(_ws, _local, _backward);
        _ws.Losses.CopyTo(_gatesHost.AsSpan(0, _local));
        double sum = 0;
        for (int i = 0; i < _local; i++) sum += _gatesHost[i];
        return sum;
    }

    /// <summary>Gathers every rank's final z and [CLS] features into the whole-batch tensors (nothing to do on one process).</summary>
    private void GatherBatch()
    {
        if (_comm.Size == 1) return;
        _z.CopyTo(_zHost);
        _comm.AllGather<float>(_zHost, _zAllHost, _gateCounts);
        _zAll.CopyFrom(_zAllHost);
        _cls.CopyTo(_clsHost);
        _comm.AllGather<float>(_clsHost, _clsAllHost, _clsCounts);
        _clsAll.CopyFrom(_clsAllHost);
    }

    /// <summary>Stage B with learning rate <paramref name="lr"/> (the cosine schedule's value for this iteration).</summary>
    public StageBResult RunStageB(double lr)
    {
        var o = Options;
        var losses = new float[o.StageBSteps];
        GatherBatch();
        _be.SigmoidForward(_zAll, _labels, GateCount, o.LabelScale, 0f, 1f);
        float labelMean = Mean(_labels), hyperMean = 0;
        var parameters = Hypernet.Parameters;
        for (int k = 0; k < o.StageBSteps; k++)
        {
            Hypernet.Forward(_hws, _clsAll, _b);
            if (k == 0) hyperMean = Mean(_hws.Scores);
            _be.BinaryCrossEntropy(_hws.Scores, _labels, _bceLoss, _hws.DScores, GateCount, o.BceWeight);
            _bceLoss.CopyTo(_lossHost);
            losses[k] = _lossHost[0];
            Hypernet.ZeroGrad();
            Hypernet.Backward(_hws, _b);
            for (int i = 0; i < parameters.Count; i++)
                _be.RmsPropStep(parameters[i].Value, parameters[i].Grad, _hyperSquareAvg[i], (float)lr, 0.99f, 1e-8f, 0f, UpdateMask.None(parameters[i].Length));
        }
        return new StageBResult(losses, labelMean, hyperMean);
    }

    private float Mean(Tensor t) => (float)(Sum(t, GateCount) / GateCount);

    private double Sum(Tensor t, int count)
    {
        t.CopyTo(_gatesHost.AsSpan(0, count));
        double sum = 0;
        for (int i = 0; i < count; i++) sum += _gatesHost[i];
        return sum;
    }

    public void Dispose()
    {
        _ws.Dispose();
        _hws.Dispose();
        foreach (var t in new[] { _images, _teacher, _cls, _probeCls, _z, _zSquareAvg, _m, _dm, _dz, _labels, _bceLoss }) t.Dispose();
        if (_comm.Size > 1) { _zAll.Dispose(); _clsAll.Dispose(); }
        foreach (var p in _perSample) { p.Values.Dispose(); p.Grads.Dispose(); }
        foreach (var t in _delta.Concat(_hyperSquareAvg)) t.Dispose();
    }
}

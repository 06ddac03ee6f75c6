using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json.Serialization;
using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Editing;

public enum EditMethod
{
    /// <summary>The paper's method: hypernetwork mask, masked RMSprop.</summary>
    Hprd,
    /// <summary>Fine-tune the edited matrices with CE + c·Σ‖W − W0‖₁.</summary>
    FtL1,
    /// <summary>Fine-tune the edited matrices with CE + c·Σ ½‖W − W0‖₂².</summary>
    FtL2,
    /// <summary>Masked RMSprop with a random mask of the same keep fraction (ablation).</summary>
    Random,
}

public static class EditMethods
{
    public static EditMethod Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "hprd" => EditMethod.Hprd,
        "ft-l1" or "ftl1" => EditMethod.FtL1,
        "ft-l2" or "ftl2" => EditMethod.FtL2,
        "random" => EditMethod.Random,
        _ => throw new ArgumentException($"--method '{text}': expected hprd, ft-l1, ft-l2 or random"),
    };

    public static string Name(this EditMethod m) => m switch
    {
        EditMethod.Hprd => "hprd", EditMethod.FtL1 => "ft-l1", EditMethod.FtL2 => "ft-l2", _ => "random",
    };

    public static bool IsFineTuning(this EditMethod m) => m is EditMethod.FtL1 or EditMethod.FtL2;
}

public sealed record EditOptions
{
    public EditMethod Method { get; init; } = EditMethod.Hprd;
    /// <summary>RMSprop learning rate (the paper: 2e-5).</summary>
    public float LearningRate { get; init; } = 2e-5f;
    public int MaxSteps { get; init; } = 100;
    /// <summary>FT-L1/L2 penalty coefficient c.</summary>
    public float Coefficient { get; init; }
    /// <summary>Stop once every image is classified as its label and the mean CE is at most this.</summary>
    public float StopLoss { get; init; } = 0.01f;

    public void Validate()
    {
        if (!(LearningRate > 0) || !float.IsFinite(LearningRate)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "--lr must be positive");
        if (MaxSteps < 0) throw new ArgumentOutOfRangeException(nameof(MaxSteps), MaxSteps, "--max-steps must be ≥ 0");
        if (!(Coefficient >= 0) || !float.IsFinite(Coefficient)) throw new ArgumentOutOfRangeException(nameof(Coefficient), Coefficient, "the FT coefficient must be ≥ 0");
    }
}

/// <summary>Everything about one edit, so that an edit that silently did nothing cannot be missed.</summary>
public sealed record EditResult
{
    [JsonPropertyName("method")] public required string Method { get; init; }
    [JsonPropertyName("success")] public required bool Success { get; init; }
    [JsonPropertyName("steps")] public required int Steps { get; init; }
    [JsonPropertyName("initial_loss")] public required float InitialLoss { get; init; }
    [JsonPropertyName("final_loss")] public required float FinalLoss { get; init; }
    /// <summary>Mean CE before each update step (the penalty of FT methods not included).</summary>
    [JsonPropertyName("loss_history")] public required float[] LossHistory { get; init; }
    [JsonPropertyName("labels")] public required int[] Labels { get; init; }
    [JsonPropertyName("predictions_before")] public required int[] PredictionsBefore { get; init; }
    [JsonPropertyName("predictions_after")] public required int[] PredictionsAfter { get; init; }
    [JsonPropertyName("target_prob_before")] public required float[] TargetProbBefore { get; init; }
    [JsonPropertyName("target_prob_after")] public required float[] TargetProbAfter { get; init; }
    [JsonPropertyName("kept_gates")] public required int KeptGates { get; init; }
    [JsonPropertyName("total_gates")] public required int TotalGates { get; init; }
    [JsonPropertyName("weights_changed")] public required long WeightsChanged { get; init; }
    [JsonPropertyName("weights_editable")] public required long WeightsEditable { get; init; }
    [JsonPropertyName("wall_ms")] public required double WallMs { get; init; }
    [JsonPropertyName("peak_memory_bytes")] public required long PeakMemoryBytes { get; init; }
    [JsonPropertyName("hashes_before")] public required Dictionary<string, string> HashesBefore { get; init; }
    [JsonPropertyName("hashes_after")] public required Dictionary<string, string> HashesAfter { get; init; }
    [JsonPropertyName("learning_rate")] public float LearningRate { get; init; }
    [JsonPropertyName("coefficient")] public float Coefficient { get; init; }
}

/// <summary>
/// Edits a ViT in place on its backend (HPRD / FT-L1 / FT-L2 / random mask, method.md §5–6): the blocks before
/// the first edited block run once and are cached; each step runs the rest forward and backward with weight
/// gradients for the edited matrices only. On a backend with <see cref="IEditKernels"/> the steps run an
/// <see cref="EditPass"/>: the last block for the [CLS] row only, weight gradients for the masked hidden units
/// only (HPRD, random), and the first edited block from its cache (only the masked units recomputed).
/// <see cref="Revert"/> restores the weights the editor started from. An editor is meant to be reused across edits
/// (eval, serve): its snapshot, optimizer state, workspace and the snapshot's hashes are kept, and HPRD's mask forward
/// (<see cref="MaskScores"/>) is the edit's first forward.
/// </summary>
public sealed class ModelEditor : IDisposable
{
    private readonly VitModel _model;
    private readonly IBackend _be;
    private readonly Parameter[] _params;
    private readonly Tensor[] _original, _state, _gates;
    // The masked steps' RMSprop state on the fast path, compact like the EditPass's gradients (grown to the selection).
    private readonly Tensor?[] _compactState;
    private readonly BackwardOptions _backward;
    private readonly bool _fast;
    private VitWorkspace? _ws;
    private EditPass? _pass;
    private Tensor? _images, _labels;
    // The RMSprop state is all zero (fresh, or filled and not stepped since): Begin need not fill it again. A new
    // editor's first edit then never touches the state outside the masked rows/columns (90 % of it at keep 0.1).
    private bool _stateZero;

    public ModelEditor(VitModel model, EditTarget target) : this(model, target, fastPath: true) { }

    /// <param name="fastPath">Use the <see cref="EditPass"/> where the backend has <see cref="IEditKernels"/> (false: the
    /// model's full forward and truncated backward; the tests compare the two).</param>
    public ModelEditor(VitModel model, EditTarget target, bool fastPath)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        Target = target ?? throw new ArgumentNullException(nameof(target));
        if (target.Model != model.Config) throw new ArgumentException("the edit target was made for a different ViT config");
        _be = model.Backend;
        _params = target.Units.Select(u => model[u.Parameter]).ToArray();
        _original = _params.Select(p => _be.Allocate(p.Name + ".original", p.Shape)).ToArray();
        _state = _params.Select(p => _be.Allocate(p.Name + ".square_avg", p.Shape)).ToArray();
        _compactState = new Tensor?[_params.Length];
        _gates = target.Units.Select(u => _be.Allocate($"mask.{u.Index}", target.UnitSize)).ToArray();
        _backward = BackwardOptions.Truncated(target.FirstBlock, target.ParameterNames);
        _fast = fastPath && _be is IEditKernels;
        _stateZero = _be is CpuBackend;   // its arrays are allocated zeroed
        SnapshotOriginal();
    }

    public EditTarget Target { get; }

    /// <summary>Whether the steps run the <see cref="EditPass"/> ([CLS]-only last block, gather-GEMM weight gradients).</summary>
    public bool FastPath => _fast;

    /// <summary>
    /// On the fast path, a masked step's RMSprop reads the pass's compact gradients and keeps a compact state
    /// (<see cref="IEditKernels.CompactRmsPropStep"/>; the same weights bit for bit). False: the gradients are scattered
    /// into the matrices' and the masked step runs on the full-size state (the tests compare the two). Set before an edit.
    /// </summary>
    internal bool CompactOptimizer { get; set; } = true;

    /// <summary>Takes the model's current edited matrices as the weights <see cref="Revert"/> returns to (and FT's W0).</summary>
    public void SnapshotOriginal()
    {
        for (int i = 0; i < _params.Length; i++) _be.Copy(_params[i].Value, 0, _original[i], 0, _params[i].Length);
        _snapshotHashes = null;
    }

    /// <summary>Restores the edited matrices to the snapshot, bit for bit.</summary>
    public void Revert()
    {
        for (int i = 0; i < _params.Length; i++) _be.Copy(_original[i], 0, _params[i].Value, 0, _params[i].Length);
        _primedBatch = 0;
    }

    /// <summary>
    /// HPRD's mask scores for the edit images (<see cref="MaskPredictor.Scores(float[], int)"/>). When the predictor's model
    /// is the model this editor edits, its forward runs in the editor's workspace, and the next <see cref="Begin"/> on the
    /// same images starts from it instead of running the same forward again (the weights must not change in between;
    /// the editor's own <see cref="Step"/> and <see cref="Revert"/> drop it). A separate original model (<c>--base</c>,
    /// serve's base model) runs in the editor's workspace too when it has the same architecture and backend, and the edit
    /// runs its own forward.
    /// </summary>
    public float[] MaskScores(MaskPredictor predictor, float[] images, int n)
    {
        ArgumentNullException.ThrowIfNull(predictor);
        ArgumentNullException.ThrowIfNull(images);
        // Its forward would overwrite the activations the edit in progress steps from.
        if (_options is not null) throw new InvalidOperationException("MaskScores during an edit (between Begin and Finish)");
        _primedBatch = 0;
        bool same = ReferenceEquals(predictor.Model, _model);
        if (!same && (predictor.Model.Config != _model.Config || !ReferenceEquals(predictor.Model.Backend, _be))) return predictor.Scores(images, n);
        var c = _model.Config;
        if (n <= 0 || images.Length != (long)n * c.InChans * c.ImageSize * c.ImageSize)
            throw new ArgumentException($"mask images: {images.Length} values for {n} images of {c.InChans}×{c.ImageSize}×{c.ImageSize}");
        EnsureBuffers(n);
        _images!.CopyFrom(images);
        // Another model of the same architecture (serve's base model) still runs in this workspace: no workspace per edit.
        var scores = predictor.Scores(_ws!, _images, n);
        if (!same) return scores;
        if (_primedImages.Length != images.Length) _primedImages = new float[images.Length];
        images.CopyTo(_primedImages, 0);
        _primedBatch = n;
        return scores;
    }

    // The images whose full forward (current weights) the workspace holds from MaskScores; _primedBatch 0: none.
    private float[] _primedImages = [];
    private int _primedBatch;

    /// <summary>The snapshot values of edited matrix i (unit order), on the host.</summary>
    public float[] OriginalValues(int unit) => _original[unit].ToArray();

    /// <summary>
    /// Edits the model so that <paramref name="images"/> ([n, C, H, W] on the host) are classified as
    /// <paramref name="labels"/>. The mask is used by HPRD and random; FT methods update whole matrices.
    /// </summary>
    public EditResult Edit(float[] images, int[] labels, EditMask mask, EditOptions options)
    {
        Begin(images, labels, mask, options);
        while (Step()) { }
        return Finish();
    }

    // The edit in progress (between Begin and Finish).
    private EditOptions? _options;
    private EditMask? _mask;
    private UpdateMask[] _updateMasks = [];
    private Stopwatch? _clock;
    private Dictionary<string, string>? _hashesBefore;
    // The edited matrices at Begin when they differ from the snapshot (host copies); null: they equal the snapshot,
    // which Finish then compares against (eval and serve start every edit from the snapshot: no copy).
    private float[][]? _before;
    // SHA-256 prefixes of the snapshot's matrices, computed at the first edit that starts from it.
    private string[]? _snapshotHashes;
    private float _lossBefore, _loss;
    private int[] _predBefore = [];
    private float[] _probBefore = [];
    private readonly List<float> _history = [];
    private int _n, _steps;
    // The workspace's logits are of the current weights (Begin's or a step's forward, no update since).
    private bool _forwardCurrent;

    /// <summary>
    /// Starts an edit (<see cref="Edit"/> is Begin, <see cref="Step"/> until it returns false, <see cref="Finish"/>):
    /// checks the inputs, resets the optimizer state, sets the gates and runs the full forward that caches the input of
    /// the first edited block.
    /// </summary>
    public void Begin(float[] images, int[] labels, EditMask mask, EditOptions options)
    {
        options.Validate();
        var c = _model.Config;
        int n = labels.Length;
        if (n == 0) throw new ArgumentException("an edit needs at least one image");
        long pixels = (long)c.InChans * c.ImageSize * c.ImageSize;
        if (images.Length != n * pixels)
            throw new ArgumentException($"edit images: {images.Length} values for {n} images of {c.InChans}×{c.ImageSize}×{c.ImageSize}");
        foreach (int y in labels)
            if (y < 0 || y >= c.NumClasses) throw new ArgumentOutOfRangeException(nameof(labels), y, $"--label {y} is outside the model's {c.NumClasses} classes");
        TensorChecks.EnsureFinite(images, "edit images");
        if (mask.Target.TotalGates != Target.TotalGates) throw new ArgumentException("the mask was made for a different edit target");

        _clock = Stopwatch.StartNew();
        // The workspace already holds this forward when MaskScores ran it on the same images (and nothing changed since).
        bool primed = _primedBatch == n && BitwiseEqual(images, _primedImages);
        _primedBatch = 0;
        EnsureBuffers(n);
        if (!primed) _images!.CopyFrom(images);
        _labels!.CopyFrom(labels.Select(l => (float)l).ToArray());
        labels.CopyTo(_labelHost, 0);
        _hashesBefore = HashesBefore();
        if (!_stateZero)
            for (int i = 0; i < _state.Length; i++) _be.Fill(_state[i], 0f);
        _stateZero = true;
        bool useMask = !options.Method.IsFineTuning();
        for (int r = 0; r < _gates.Length; r++) _gates[r].CopyFrom(useMask ? mask.UnitAsFloats(r) : Enumerable.Repeat(1f, Target.UnitSize).ToArray());
        _updateMasks = Target.Units.Select(u => useMask ? Target.UpdateMaskFor(u, _gates[u.Index]) : UpdateMask.None(_params[u.Index].Length)).ToArray();
        if (_pass is not null)
        {
            _pass.CompactGradients = CompactOptimizer && useMask;
            for (int r = 0; r < _gates.Length; r++)
            {
                var selected = useMask ? SelectedUnits(mask.UnitAsFloats(r)) : null;
                _pass.Select(r, selected);
                if (_pass.CompactGradients)
                {
                    // Zero, as the full state is at Begin: a few hundred kB per matrix, not 9.4 MB.
                    long length = (long)selected!.Length * Target.Model.EmbedDim;
                    if (_compactState[r] is null || _compactState[r]!.Length < Math.Max(1, length))
                    {
                        _compactState[r]?.Dispose();
                        _compactState[r] = _be.Allocate(_params[r].Name + ".square_avg.compact", checked((int)Math.Max(1, length)));
                    }
                    else _be.Fill(_compactState[r]!, 0f);
                }
            }
        }
        _options = options;
        _mask = mask;
        _n = n;
        _steps = 0;
        _history.Clear();
        _history.EnsureCapacity(Math.Min(options.MaxSteps, 4096));   // no growth inside the step loop

        if (_pass is not null)
        {
            if (primed) _pass.ForwardFromFullForward(_ws!, n);
            else _pass.Forward(_ws!, _images!, n);   // caches the input of the first edited block
        }
        else if (!primed) _model.Forward(_ws!, _images!, n);
        (_lossBefore, _predBefore, _probBefore) = Evaluate(n);
        _loss = _lossBefore;
        _forwardCurrent = true;
    }

    /// <summary>
    /// One update step: (after the first) the forward from the first edited block and the stop check — every image
    /// right and the mean CE ≤ <see cref="EditOptions.StopLoss"/> — then the truncated backward and the masked
    /// RMSprop (FT: penalty gradient, SGD first). Returns false, without updating, once the edit is done or has used
    /// <see cref="EditOptions.MaxSteps"/>.
    /// </summary>
    public bool Step()
    {
        var options = _options ?? throw new InvalidOperationException("Step before Begin");
        if (_steps >= options.MaxSteps) return false;
        _primedBatch = 0;
        if (_steps > 0)
        {
            ForwardFrom(_n);
            _forwardCurrent = true;
            _loss = Evaluate(_n, out bool done);
            if (done && _loss <= options.StopLoss) return false;
        }
        else if (Done(_predBefore, _labelHost) && _loss <= options.StopLoss) return false;
        TensorChecks.EnsureFinite(_loss, "edit loss");
        _history.Add(_loss);
        bool compact = _pass is not null && _pass.CompactGradients;
        if (!compact) _stateZero = false;
        if (_pass is not null)
        {
            // Masked units: the pass overwrites the selected rows/columns, the only ones the masked step reads.
            if (options.Method.IsFineTuning()) foreach (var p in _params) _be.Fill(p.Grad, 0f);
            _pass.Backward(_ws!, _n);
        }
        else
        {
            foreach (var p in _params) _be.Fill(p.Grad, 0f);
            _model.Backward(_ws!, _n, _backward);
        }
        for (int i = 0; i < _params.Length; i++)
        {
            var p = _params[i];
            if (options.Method == EditMethod.FtL1)
                _be.L1PenaltyGradient(p.Grad, p.Value, _original[i], options.Coefficient, p.Length);
            else if (options.Method == EditMethod.FtL2 && options.Coefficient != 0)
            {
                _be.Axpy(options.Coefficient, p.Value, p.Grad, p.Length);
                _be.Axpy(-options.Coefficient, _original[i], p.Grad, p.Length);
            }
            // The reference takes FT's first step with SGD, then RMSprop (whose state starts at the second step).
            if (compact)
            {
                // fc1 [hidden, dim] by rows, fc2 [dim, hidden] by columns (as UpdateMaskFor).
                var axis = Target.Units[i].Axis;
                int h = Target.Model.MlpHidden, d = Target.Model.EmbedDim;
                ((IEditKernels)_be).CompactRmsPropStep(p.Value, _pass!.CompactGradient(i), _compactState[i]!, _pass.Selected(i), axis,
                    axis == MaskAxis.Rows ? h : d, axis == MaskAxis.Rows ? d : h, options.LearningRate, 0.99f, 1e-8f);
            }
            else if (options.Method.IsFineTuning() && _steps == 0)
                _be.SgdStep(p.Value, p.Grad, options.LearningRate, 0f, _updateMasks[i]);
            else
                _be.RmsPropStep(p.Value, p.Grad, _state[i], options.LearningRate, 0.99f, 1e-8f, 0f, _updateMasks[i]);
        }
        _steps++;
        _forwardCurrent = false;
        return true;
    }

    /// <summary>Ends the edit: the forward of the edited weights, and the record of what changed.</summary>
    public EditResult Finish()
    {
        var options = _options ?? throw new InvalidOperationException("Finish before Begin");
        int n = _n;
        var labels = _labelHost.AsSpan(0, n).ToArray();
        // An edit the stop rule ended has just run this forward (on the final weights): not again.
        if (!_forwardCurrent) ForwardFrom(n);
        var (lossAfter, predAfter, probAfter) = Evaluate(n);
        _be.Synchronize();
        var hashesAfter = HashesAfter(out long changed);
        bool useMask = !options.Method.IsFineTuning();
        var result = new EditResult
        {
            Method = options.Method.Name(), Success = Done(predAfter, labels), Steps = _steps,
            InitialLoss = _lossBefore, FinalLoss = lossAfter, LossHistory = _history.ToArray(), Labels = labels,
            PredictionsBefore = _predBefore, PredictionsAfter = predAfter, TargetProbBefore = _probBefore, TargetProbAfter = probAfter,
            KeptGates = useMask ? _mask!.Kept : Target.TotalGates, TotalGates = Target.TotalGates,
            WeightsChanged = changed, WeightsEditable = _params.Sum(p => p.Length),
            WallMs = _clock!.Elapsed.TotalMilliseconds, PeakMemoryBytes = Environment.WorkingSet > 0 ? Process.GetCurrentProcess().PeakWorkingSet64 : 0,
            HashesBefore = _hashesBefore!, HashesAfter = hashesAfter, LearningRate = options.LearningRate, Coefficient = options.Coefficient,
        };
        _options = null;
        _mask = null;
        _before = null;
        return result;
    }

    private void ForwardFrom(int n)
    {
        if (_pass is not null) _pass.ForwardFrom(_ws!, n);
        else _model.ForwardFrom(_ws!, Target.FirstBlock, n);
    }

    private static int[] SelectedUnits(float[] gates)
    {
        int count = 0;
        foreach (float g in gates) if (g != 0) count++;
        var units = new int[count];
        count = 0;
        for (int j = 0; j < gates.Length; j++) if (gates[j] != 0) units[count++] = j;
        return units;
    }

    private static bool Done(int[] predictions, int[] labels) => predictions.AsSpan().SequenceEqual(labels);

    private float[] _logitsHost = [], _lossHost = [];
    private int[] _predHost = [], _labelHost = [];

    /// <summary>Mean CE (and the logit gradient for the backward) of the last forward; done = all predictions right.</summary>
    private float Evaluate(int n, out bool done)
    {
        var c = _model.Config;
        _be.CrossEntropy(_ws!.Logits, _labels!, _ws.Losses, _ws.DLogits, n, c.NumClasses, 1f / n);
        _ws.Losses.CopyTo(_lossHost.AsSpan(0, n));
        _ws.Logits.CopyTo(_logitsHost.AsSpan(0, n * c.NumClasses));
        done = true;
        float sum = 0;
        for (int i = 0; i < n; i++)
        {
            sum += _lossHost[i];
            int arg = HostMath.ArgMax(_logitsHost.AsSpan(i * c.NumClasses, c.NumClasses));
            _predHost[i] = arg;
            if (arg != _labelHost[i]) done = false;
        }
        return sum / n;
    }

    private (float Loss, int[] Predictions, float[] TargetProb) Evaluate(int n)
    {
        float loss = Evaluate(n, out _);
        var c = _model.Config;
        var probs = new float[n];
        for (int i = 0; i < n; i++)
        {
            var row = _logitsHost.AsSpan(i * c.NumClasses, c.NumClasses);
            float max = float.NegativeInfinity;
            foreach (float v in row) max = Math.Max(max, v);
            double sum = 0;
            foreach (float v in row) sum += Math.Exp(v - max);
            probs[i] = (float)(Math.Exp(row[_labelHost[i]] - max) / sum);
        }
        return (loss, _predHost.AsSpan(0, n).ToArray(), probs);
    }

    private void EnsureBuffers(int n)
    {
        var c = _model.Config;
        if (_ws is null || _ws.Capacity < n)
        {
            _ws?.Dispose(); _pass?.Dispose(); _images?.Dispose(); _labels?.Dispose();
            _ws = _model.CreateWorkspace(n);
            _pass = _fast ? new EditPass(_model, Target.FirstBlock, Target.Units.Select(u => (u.Parameter, u.Axis)).ToArray(), n) : null;
            _images = _be.Allocate("edit.images", n, c.InChans, c.ImageSize, c.ImageSize);
            _labels = _be.Allocate("edit.labels", n);
            _logitsHost = new float[n * c.NumClasses];
            _lossHost = new float[n];
            _predHost = new int[n];
        }
        if (_images!.Shape[0] != n)
        {
            _images.Dispose(); _labels!.Dispose();
            _images = _be.Allocate("edit.images", n, c.InChans, c.ImageSize, c.ImageSize);
            _labels = _be.Allocate("edit.labels", n);
        }
        if (_labelHost.Length != n) _labelHost = new int[n];
    }

    // The record's hashes: SHA-256 of each whole edited matrix's fp32 bytes, first 16 hex digits. The matrices are
    // hashed in parallel (independent, ~9 MB each on ViT-B) on the backend's thread count.

    /// <summary>Hashes of the matrices at Begin: the snapshot's (cached) when they equal it, else of a copy kept for Finish.</summary>
    private Dictionary<string, string> HashesBefore()
    {
        var equal = new bool[_params.Length];
        ForEachMatrix(i => equal[i] = BitwiseEqual(Host(_params[i].Value), Host(_original[i])));
        if (equal.All(e => e))
        {
            _before = null;
            if (_snapshotHashes is null)
            {
                var hashes = new string[_params.Length];
                ForEachMatrix(i => hashes[i] = Hash(Host(_original[i])));
                _snapshotHashes = hashes;
            }
            return Named(_snapshotHashes);
        }
        var before = new float[_params.Length][];
        var result = new string[_params.Length];
        ForEachMatrix(i => result[i] = Hash(before[i] = _params[i].Value.ToArray()));
        _before = before;
        return Named(result);
    }

    /// <summary>Hashes of the matrices now, and how many weights differ (bitwise) from Begin's; an unchanged matrix keeps its hash.</summary>
    private Dictionary<string, string> HashesAfter(out long changed)
    {
        var result = new string[_params.Length];
        var counts = new long[_params.Length];
        var before = _hashesBefore!;
        ForEachMatrix(i =>
        {
            var now = Host(_params[i].Value);
            counts[i] = CountDifferent(_before is null ? Host(_original[i]) : _before[i], now);
            result[i] = counts[i] == 0 ? before[_params[i].Name] : Hash(now);
        });
        changed = counts.Sum();
        return Named(result);
    }

    private Dictionary<string, string> Named(string[] hashes)
    {
        var result = new Dictionary<string, string>();
        for (int i = 0; i < _params.Length; i++) result[_params[i].Name] = hashes[i];
        return result;
    }

    private void ForEachMatrix(Action<int> body)
    {
        int threads = Math.Min(_params.Length, _be is CpuBackend cpu ? cpu.Threads : 1);
        if (threads <= 1) { for (int i = 0; i < _params.Length; i++) body(i); return; }
        Parallel.For(0, _params.Length, new ParallelOptions { MaxDegreeOfParallelism = threads }, body);
    }

    /// <summary>A tensor's values on the host: the CPU backend's own array (no copy), else a download.</summary>
    private static ReadOnlySpan<float> Host(Tensor t) => t is CpuTensor cpu ? cpu.Data.AsSpan(0, checked((int)t.Length)) : t.ToArray();

    private static string Hash(ReadOnlySpan<float> values) =>
        Convert.ToHexString(SHA256.HashData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values)))[..16].ToLowerInvariant();

    /// <summary>Same bits (float equality would take −0 for +0): a vectorised memory compare.</summary>
    private static bool BitwiseEqual(ReadOnlySpan<float> a, ReadOnlySpan<float> b) =>
        System.Runtime.InteropServices.MemoryMarshal.Cast<float, int>(a).SequenceEqual(System.Runtime.InteropServices.MemoryMarshal.Cast<float, int>(b));

    /// <summary>Number of positions whose bit patterns differ (vectorised: equal lanes are −1, summed).</summary>
    private static long CountDifferent(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        var x = System.Runtime.InteropServices.MemoryMarshal.Cast<float, int>(a);
        var y = System.Runtime.InteropServices.MemoryMarshal.Cast<float, int>(b);
        int n = x.Length, i = 0;
        long equal = 0;
        var xs = System.Runtime.InteropServices.MemoryMarshal.Cast<int, System.Numerics.Vector<int>>(x);
        var ys = System.Runtime.InteropServices.MemoryMarshal.Cast<int, System.Numerics.Vector<int>>(y);
        for (int block = 0; block < xs.Length; block += 1 << 16)   // per block, so the int lanes cannot overflow
        {
            var acc = System.Numerics.Vector<int>.Zero;
            int end = Math.Min(xs.Length, block + (1 << 16));
            for (int v = block; v < end; v++) acc -= System.Numerics.Vector.Equals(xs[v], ys[v]);
            equal += System.Numerics.Vector.Sum(acc);
        }
        i = xs.Length * System.Numerics.Vector<int>.Count;
        for (; i < n; i++) if (x[i] == y[i]) equal++;
        return n - equal;
    }

    public void Dispose()
    {
        foreach (var t in _original.Concat(_state).Concat(_gates)) t.Dispose();
        foreach (var t in _compactState) t?.Dispose();
        _ws?.Dispose(); _pass?.Dispose(); _images?.Dispose(); _labels?.Dispose();
    }
}

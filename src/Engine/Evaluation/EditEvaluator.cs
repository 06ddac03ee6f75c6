using System.Diagnostics;
using System.Text.Json.Serialization;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Evaluation;

/// <summary>A group of failures to edit: images of one true class the original model gets wrong.</summary>
public sealed record EvalGroup(string Subset, string Name, int Label, IReadOnlyList<string> ImageIds, IReadOnlyList<float[]> Images);

/// <summary>One point of a sweep: a method with its keep fraction (HPRD, random) or coefficient (FT).</summary>
public sealed record EvalSetting(EditMethod Method, double Keep, float Coefficient)
{
    public string Key => Method.IsFineTuning() ? $"{Method.Name()} c={Coefficient:G4}" : $"{Method.Name()} keep={Keep:G4}";

    /// <summary>The paper's sweeps: keep ∈ {0.75, 0.5, 0.25, 0.1, 0.05} (HPRD, random), c ∈ {0.1, …, 0} (FT-L1/L2).</summary>
    public static IEnumerable<EvalSetting> PaperSweep(IEnumerable<EditMethod> methods)
    {
        double[] keeps = [0.75, 0.5, 0.25, 0.1, 0.05];
        float[] coefficients = [0.1f, 0.05f, 0.025f, 0.01f, 0.005f, 0.001f, 0f];
        foreach (var m in methods)
        {
            if (m.IsFineTuning()) foreach (float c in coefficients) yield return new EvalSetting(m, 1, c);
            else foreach (double k in keeps) yield return new EvalSetting(m, k, 0);
        }
    }
}

public enum GrFormula
{
    /// <summary>GR = accuracy on the group's other failures F_g \ edit images.</summary>
    Corrected,
    /// <summary>The reference code's (Σ_{F_g} correct − 1) / |F_g| (counts the edit image itself, minus one).</summary>
    Reference,
}

public sealed record EvalOptions
{
    public int ImagesPerEdit { get; init; } = 1;
    public float LearningRate { get; init; } = 2e-5f;
    public int MaxSteps { get; init; } = 100;
    public GrFormula GrFormula { get; init; } = GrFormula.Corrected;
    /// <summary>At most this many edits per group (0 = one per failure).</summary>
    public int MaxEditsPerGroup { get; init; }
    public ulong Seed { get; init; }
}

/// <summary>The paper's metrics as plain functions of predictions (method.md §7).</summary>
public static class EditMetrics
{
    /// <summary>Reliability: 1 when every edit image is classified as the label.</summary>
    public static double Sr(IReadOnlyList<int> editPredictions, int label) => editPredictions.All(p => p == label) ? 1 : 0;

    /// <summary>Generalisation: accuracy on the group's other failures F_g \ E (NaN when there are none).</summary>
    public static double Gr(IReadOnlyList<int> otherPredictions, int label) =>
        otherPredictions.Count == 0 ? double.NaN : otherPredictions.Count(p => p == label) / (double)otherPredictions.Count;

    /// <summary>The reference code's GR: (number of F_g now correct − 1) / |F_g|, F_g including the edit image.</summary>
    public static double GrReference(IReadOnlyList<int> allFailurePredictions, int label) =>
        (allFailurePredictions.Count(p => p == label) - 1.0) / allFailurePredictions.Count;

    /// <summary>Locality: share of the locality set whose prediction equals the ORIGINAL model's.</summary>
    public static double Lr(IReadOnlyList<int> original, IReadOnlyList<int> now)
    {
        if (original.Count != now.Count) throw new ArgumentException($"{now.Count} predictions for {original.Count} locality images");
        return original.Count == 0 ? double.NaN : original.Where((p, i) => p == now[i]).Count() / (double)original.Count;
    }
}

/// <summary>The result of one edit in the protocol (one line of the per-edit JSON lines).</summary>
public sealed record EditRecord
{
    [JsonPropertyName("subset")] public required string Subset { get; init; }
    [JsonPropertyName("group")] public required string Group { get; init; }
    [JsonPropertyName("label")] public required int Label { get; init; }
    [JsonPropertyName("method")] public required string Method { get; init; }
    [JsonPropertyName("setting")] public required string Setting { get; init; }
    [JsonPropertyName("keep")] public double Keep { get; init; }
    [JsonPropertyName("coefficient")] public float Coefficient { get; init; }
    [JsonPropertyName("edit_images")] public required string[] EditImages { get; init; }
    [JsonPropertyName("sr")] public required double Sr { get; init; }
    /// <summary>NaN when the group has no other failure to generalise to.</summary>
    [JsonPropertyName("gr")] public required double Gr { get; init; }
    [JsonPropertyName("lr")] public required double Lr { get; init; }
    /// <summary>LR on the broad locality set (<see cref="BroadLocality"/>); NaN when the run has none.</summary>
    [JsonPropertyName("lr_broad")] public double LrBroad { get; init; } = double.NaN;
    [JsonPropertyName("steps")] public required int Steps { get; init; }
    [JsonPropertyName("final_loss")] public required float FinalLoss { get; init; }
    [JsonPropertyName("kept_gates")] public required int KeptGates { get; init; }
    [JsonPropertyName("weights_changed")] public required long WeightsChanged { get; init; }
    [JsonPropertyName("wall_ms")] public required double WallMs { get; init; }
    /// <summary>Hashes of the edited matrices before the edit: identical for every edit of a run (each starts from the original weights).</summary>
    [JsonPropertyName("weights_before")] public required string WeightsBefore { get; init; }
    /// <summary>Indices of the kept gates (HPRD only), for the mask IoU analysis; not serialised.</summary>
    [JsonIgnore] public int[]? MaskGates { get; init; }
}

/// <summary>
/// The paper's single-edit protocol (method.md §7): every edit starts from the ORIGINAL weights; SR on the edit
/// images, GR on the group's other failures, LR = share of the sensitive locality set whose prediction is
/// unchanged from the original model's cached predictions. Locality is re-evaluated from the first edited block
/// on cached block inputs (blocks before it never change).
/// </summary>
public sealed class EditEvaluator : IDisposable
{
    private const int Chunk = 64;
    private readonly VitModel _model;
    private readonly Hypernetwork? _hypernet;
    private readonly EditTarget _target;
    private readonly ModelEditor _editor;
    private readonly VitWorkspace _ws;
    private readonly Tensor _chunkImages;
    private readonly LocalityCache _locality;
    private readonly LocalityCache? _broad;
    private readonly float[] _logits;

    /// <summary>
    /// <paramref name="locality"/> is the near-boundary set LR is measured on; <paramref name="broadLocality"/>, when
    /// given, a second (broad) set reported as <see cref="EditRecord.LrBroad"/>. Both are cached once as the input of
    /// the first edited block, so each edit re-runs only the blocks it can change.
    /// </summary>
    public EditEvaluator(VitModel model, Hypernetwork? hypernet, EditTarget target, IReadOnlyList<float[]> locality, IReadOnlyList<float[]>? broadLocality = null)
    {
        _model = model;
        _hypernet = hypernet;
        _target = target;
        _editor = new ModelEditor(model, target);
        var c = model.Config;
        _ws = model.CreateWorkspace(Chunk);
        _chunkImages = model.Backend.Allocate("eval.images", Chunk, c.InChans, c.ImageSize, c.ImageSize);
        _logits = new float[Chunk * c.NumClasses];
        _locality = Cache("eval.locality.cache", locality);
        _broad = broadLocality is null ? null : Cache("eval.broad_locality.cache", broadLocality);
    }

    /// <summary>A locality set's first-edited-block inputs [L, tokens, dim] and its original predictions.</summary>
    private sealed record LocalityCache(Tensor Inputs, int Count, int[] Original);

    private LocalityCache Cache(string name, IReadOnlyList<float[]> images)
    {
        var c = _model.Config;
        long perImage = (long)c.Tokens * c.EmbedDim;
        var inputs = _model.Backend.Allocate(name, Math.Max(1, images.Count), c.Tokens, c.EmbedDim);
        var original = new int[images.Count];
        for (int start = 0; start < images.Count; start += Chunk)
        {
            int n = Math.Min(Chunk, images.Count - start);
            var preds = Predict(images.Skip(start).Take(n).ToList());
            Array.Copy(preds, 0, original, start, n);
            _model.Backend.Copy(_ws.BlockInput[_target.FirstBlock], 0, inputs, start * perImage, n * perImage);
        }
        return new LocalityCache(inputs, images.Count, original);
    }

    /// <summary>The original model's predictions on the locality set (cached once).</summary>
    public IReadOnlyList<int> LocalityOriginalPredictions => _locality.Original;

    /// <summary>Images in the broad locality set (0 without one).</summary>
    public int BroadLocalityCount => _broad?.Count ?? 0;

    /// <summary>Argmax predictions of the current weights (full forward).</summary>
    public int[] Predict(IReadOnlyList<float[]> images)
    {
        var c = _model.Config;
        var result = new int[images.Count];
        for (int start = 0; start < images.Count; start += Chunk)
        {
            int n = Math.Min(Chunk, images.Count - start);
            int per = c.InChans * c.ImageSize * c.ImageSize;
            for (int i = 0; i < n; i++) _chunkImages.CopyFrom(images[start + i], (long)i * per);
            _model.Forward(_ws, _chunkImages, n);
            ArgMax(n, result, start);
        }
        return result;
    }

    private void ArgMax(int n, int[] into, int offset)
    {
        int k = _model.Config.NumClasses;
        _ws.Logits.CopyTo(_logits.AsSpan(0, n * k));
        for (int i = 0; i < n; i++) into[offset + i] = HostMath.ArgMax(_logits.AsSpan(i * k, k));
    }

    /// <summary>Share of the locality set whose prediction under the current weights equals the original's.</summary>
    public double LocalityRate() => LocalityRate(_locality);

    /// <summary>The same on the broad locality set (NaN without one).</summary>
    public double BroadLocalityRate() => _broad is null ? double.NaN : LocalityRate(_broad);

    private double LocalityRate(LocalityCache set)
    {
        if (set.Count == 0) return double.NaN;
        var c = _model.Config;
        long perImage = (long)c.Tokens * c.EmbedDim;
        var now = new int[set.Count];
        for (int start = 0; start < set.Count; start += Chunk)
        {
            int n = Math.Min(Chunk, set.Count - start);
            _model.Backend.Copy(set.Inputs, start * perImage, _ws.BlockInput[_target.FirstBlock], 0, n * perImage);
            _ws.CachedBatch = n;
            _model.ForwardFrom(_ws, _target.FirstBlock, n);
            ArgMax(n, now, start);
        }
        return EditMetrics.Lr(set.Original, now);
    }

    /// <summary>
    /// Runs every setting on every edit of every group; <paramref name="onRecord"/> sees each record as it is
    /// produced (progress, JSON lines). Groups keep only images the original model gets wrong.
    /// </summary>
    public List<EditRecord> Run(IReadOnlyList<EvalGroup> groups, IReadOnlyList<EvalSetting> settings, EvalOptions options, Action<EditRecord>? onRecord = null)
    {
        if (options.ImagesPerEdit < 1) throw new ArgumentOutOfRangeException(nameof(options), options.ImagesPerEdit, "images per edit must be ≥ 1");
        if (settings.Any(s => s.Method == EditMethod.Hprd) && _hypernet is null)
            throw new ArgumentException("HPRD settings need a hypernetwork");
        var records = new List<EditRecord>();
        foreach (var group in groups)
        {
            var failures = FailuresOf(group);
            foreach (var editSet in EditSets(failures.Count, options))
            {
                var editImages = editSet.Select(i => failures[i].Image).ToList();
                var pixels = editImages.SelectMany(x => x).ToArray();
                float[]? scores = settings.Any(s => s.Method == EditMethod.Hprd)
                    ? new MaskPredictor(_model, _hypernet!, _target).Scores(pixels, editImages.Count) : null;
                var others = failures.Where((_, i) => !editSet.Contains(i)).ToList();
                foreach (var setting in settings)
                {
                    var record = EditOnce(group, failures, editSet, pixels, scores, others, setting, options);
                    records.Add(record);
                    onRecord?.Invoke(record);
                }
            }
        }
        return records;
    }

    /// <summary>How many edits (and so records per setting) a run will make.</summary>
    public int CountEdits(IReadOnlyList<EvalGroup> groups, EvalOptions options) => groups.Sum(g => EditSets(FailuresOf(g).Count, options).Count());

    private List<(string Id, float[] Image)> FailuresOf(EvalGroup group)
    {
        var predictions = Predict(group.Images);
        return group.Images.Select((img, i) => (Id: group.ImageIds[i], Image: img, Pred: predictions[i]))
            .Where(t => t.Pred != group.Label).Select(t => (t.Id, t.Image)).ToList();
    }

    /// <summary>Edit j uses failures j, j+1, …, j+k−1 (cyclically), for j over the failures (capped).</summary>
    private static IEnumerable<int[]> EditSets(int failures, EvalOptions options)
    {
        if (failures < options.ImagesPerEdit) yield break;
        int edits = options.MaxEditsPerGroup > 0 ? Math.Min(options.MaxEditsPerGroup, failures) : failures;
        for (int j = 0; j < edits; j++)
            yield return Enumerable.Range(0, options.ImagesPerEdit).Select(k => (j + k) % failures).ToArray();
    }

    private EditRecord EditOnce(EvalGroup group, List<(string Id, float[] Image)> failures, int[] editSet, float[] pixels, float[]? scores,
                                List<(string Id, float[] Image)> others, EvalSetting setting, EvalOptions options)
    {
        var clock = Stopwatch.StartNew();
        EditMask mask = setting.Method switch
        {
            EditMethod.Hprd => EditMask.TopK(_target, scores!, setting.Keep),
            EditMethod.Random => EditMask.Random(_target, setting.Keep, options.Seed ^ StableHash($"{group.Subset}/{group.Name}/{editSet[0]}")),
            _ => EditMask.Full(_target),
        };
        var labels = Enumerable.Repeat(group.Label, editSet.Length).ToArray();
        var result = _editor.Edit(pixels, labels, mask, new EditOptions
        {
            Method = setting.Method, LearningRate = options.LearningRate, MaxSteps = options.MaxSteps, Coefficient = setting.Coefficient,
        });
        double gr = options.GrFormula == GrFormula.Reference
            ? EditMetrics.GrReference(Predict(failures.Select(f => f.Image).ToList()), group.Label)
            : EditMetrics.Gr(Predict(others.Select(o => o.Image).ToList()), group.Label);
        double lr = LocalityRate(), lrBroad = BroadLocalityRate();
        _editor.Revert();
        return new EditRecord
        {
            Subset = group.Subset, Group = group.Name, Label = group.Label, Method = setting.Method.Name(), Setting = setting.Key,
            Keep = setting.Keep, Coefficient = setting.Coefficient, EditImages = editSet.Select(i => failures[i].Id).ToArray(),
            Sr = result.Success ? 1 : 0, Gr = gr, Lr = lr, LrBroad = lrBroad, Steps = result.Steps, FinalLoss = result.FinalLoss, KeptGates = result.KeptGates,
            WeightsChanged = result.WeightsChanged, WallMs = clock.Elapsed.TotalMilliseconds,
            WeightsBefore = string.Join(",", result.HashesBefore.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Value)),
            MaskGates = setting.Method == EditMethod.Hprd ? Enumerable.Range(0, mask.Gates.Length).Where(i => mask.Gates[i]).ToArray() : null,
        };
    }

    /// <summary>FNV-1a over the UTF-16 code units: the same in every process (string.GetHashCode is randomised per process).</summary>
    private static ulong StableHash(string text)
    {
        ulong h = 14695981039346656037UL;
        foreach (char ch in text) h = (h ^ ch) * 1099511628211UL;
        return h;
    }

    public void Dispose()
    {
        _editor.Dispose();
        _ws.Dispose();
        _chunkImages.Dispose();
        _locality.Inputs.Dispose();
        _broad?.Inputs.Dispose();
    }
}

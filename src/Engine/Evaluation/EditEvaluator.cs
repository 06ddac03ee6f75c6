using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using WhereToEdit.Engine.Distributed;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Evaluation;

/// <summary>A group of failures to edit: images of one true class the original model gets wrong.</summary>
internal sealed record EvalGroup(string Subset, string Name, int Label, IReadOnlyList<string> ImageIds, IReadOnlyList<float[]> Images);

/// <summary>
/// One point of a sweep: a method with its keep fraction (HPRD, random) or coefficient (FT), and, when the edit
/// learning rate is swept too, its own learning rate (null: the run's <see cref="EvalOptions.LearningRate"/>).
/// </summary>
public sealed record EvalSetting(EditMethod Method, double Keep, float Coefficient, float? LearningRate = null)
{
    public string Key => (Method.IsFineTuning() ? $"{Method.Name()} c={Coefficient:G4}" : $"{Method.Name()} keep={Keep:G4}")
        + (LearningRate is float lr ? RateSuffix(lr) : "");

    /// <summary>What a setting's name carries when the learning rate is swept: " lr=0.00024".</summary>
    public static string RateSuffix(float lr) => $" lr={lr.ToString("G3", System.Globalization.CultureInfo.InvariantCulture)}";

    /// <summary>A setting's name without its rate ("hprd keep=0.1 lr=0.00024" → "hprd keep=0.1").</summary>
    public static string WithoutRate(string key) => key.Split(" lr=")[0];
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
    /// <summary>RMSprop learning rate of every edit; NaN: the width rule (<see cref="WhereToEdit.Engine.Editing.ScalingRules.EditLearningRate"/>), resolved by <c>EvaluateJob</c>.</summary>
    public float LearningRate { get; init; } = 2e-5f;
    public int MaxSteps { get; init; } = 100;
    public GrFormula GrFormula { get; init; } = GrFormula.Corrected;
    /// <summary>At most this many edits per group (0 = one per failure).</summary>
    public int MaxEditsPerGroup { get; init; }
    public ulong Seed { get; init; }
}

/// <summary>The paper's metrics as plain functions of predictions (method.md §7).</summary>
internal static class EditMetrics
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
    /// <summary>The edit's RMSprop learning rate (the setting's, else the run's).</summary>
    [JsonPropertyName("learning_rate")] public float LearningRate { get; init; }
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
internal sealed class EditEvaluator : IDisposable
{
    private const int Chunk = 64;
    private readonly VitModel _model;
    private readonly Hypernetwork? _hypernet;
    private readonly EditTarget _target;
    private readonly ModelEditor _editor;
    private readonly BatchedInference _inference;
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
        _inference = new BatchedInference(model, Chunk);
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
        _inference.Run(images.Count, (i, pixels) => images[i].CopyTo(pixels), (start, n, logits) =>
        {
            for (int i = 0; i < n; i++) original[start + i] = HostMath.ArgMax(logits.Slice(i * c.NumClasses, c.NumClasses));
            _model.Backend.Copy(_inference.Workspace.BlockInput[_target.FirstBlock], 0, inputs, start * perImage, n * perImage);
        });
        return new LocalityCache(inputs, images.Count, original);
    }

    /// <summary>The original model's predictions on the locality set (cached once).</summary>
    public IReadOnlyList<int> LocalityOriginalPredictions => _locality.Original;

    /// <summary>Images in the broad locality set (0 without one).</summary>
    public int BroadLocalityCount => _broad?.Count ?? 0;

    /// <summary>Argmax predictions of the current weights (full forward).</summary>
    public int[] Predict(IReadOnlyList<float[]> images)
    {
        int k = _model.Config.NumClasses;
        var result = new int[images.Count];
        _inference.Run(images.Count, (i, pixels) => images[i].CopyTo(pixels), (start, n, logits) =>
        {
            for (int i = 0; i < n; i++) result[start + i] = HostMath.ArgMax(logits.Slice(i * k, k));
        });
        return result;
    }

    private void ArgMax(VitWorkspace ws, int n, int[] into, int offset)
    {
        int k = _model.Config.NumClasses;
        ws.Logits.CopyTo(_logits.AsSpan(0, n * k));
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
            var ws = _inference.Workspace;
            _model.Backend.Copy(set.Inputs, start * perImage, ws.BlockInput[_target.FirstBlock], 0, n * perImage);
            ws.CachedBatch = n;
            _model.ForwardFrom(ws, _target.FirstBlock, n);
            ArgMax(ws, n, now, start);
        }
        return EditMetrics.Lr(set.Original, now);
    }

    /// <summary>
    /// Runs every setting on every edit of every group; <paramref name="onRecord"/> sees each record as it is
    /// produced (progress, JSON lines). Groups keep only images the original model gets wrong.
    /// </summary>
    public List<EditRecord> Run(IReadOnlyList<EvalGroup> groups, IReadOnlyList<EvalSetting> settings, EvalOptions options, Action<EditRecord>? onRecord = null)
        => Run(groups, settings, options, SingleProcess.Instance, onRecord);

    /// <summary>One setting on one edit set of one group: the unit the ranks share out.</summary>
    private readonly record struct WorkItem(int Group, int[] EditSet, int Setting);

    /// <summary>
    /// Like the single-process run, with the edits shared out over the ranks of <paramref name="comm"/>: every rank
    /// lists the same work items (groups → edit sets → settings), deals them out by estimated cost
    /// (<see cref="AssignByCost"/>), runs its own and sends the records to rank 0, which returns all of them in the
    /// single-process order and calls <paramref name="onRecord"/> for each (after the gather: on N ranks the records
    /// arrive together at the end). Other ranks return an empty list. Each edit starts from the original weights, so a
    /// record does not depend on which rank made it.
    /// </summary>
    public List<EditRecord> Run(IReadOnlyList<EvalGroup> groups, IReadOnlyList<EvalSetting> settings, EvalOptions options, ICommunicator comm,
                                Action<EditRecord>? onRecord = null)
    {
        ArgumentNullException.ThrowIfNull(comm);
        if (options.ImagesPerEdit < 1) throw new ArgumentOutOfRangeException(nameof(options), options.ImagesPerEdit, "images per edit must be ≥ 1");
        if (settings.Any(s => s.Method == EditMethod.Hprd) && _hypernet is null)
            throw new ArgumentException("HPRD settings need a hypernetwork");
        var failures = groups.Select(FailuresOf).ToList();
        var items = new List<WorkItem>();
        for (int g = 0; g < groups.Count; g++)
            foreach (var editSet in EditSets(failures[g].Count, options))
                for (int s = 0; s < settings.Count; s++) items.Add(new WorkItem(g, editSet, s));
        var c = _model.Config;
        int editedBlocks = c.Depth - _target.FirstBlock;
        // Block passes per image: ≤ MaxSteps forward+backward (≈ 3 passes) steps on the edit images from the first
        // edited block, the full forward on the group's other failures (GR), the locality set from the first edited block.
        var costs = items.Select(it => (double)options.MaxSteps * it.EditSet.Length * 3 * editedBlocks
                                      + (double)(failures[it.Group].Count - it.EditSet.Length) * c.Depth + (double)(_locality.Count + (_broad?.Count ?? 0)) * editedBlocks).ToArray();
        var owner = AssignByCost(costs, comm.Size);

        var local = new List<(int Index, EditRecord Record)>();
        int scoresFor = -1;
        float[]? scores = null;
        for (int index = 0; index < items.Count; index++)
        {
            if (owner[index] != comm.Rank) continue;
            var (g, editSet, s) = items[index];
            var group = groups[g];
            var editImages = editSet.Select(i => failures[g][i].Image).ToList();
            var pixels = editImages.SelectMany(x => x).ToArray();
            if (EditMaskPolicy.NeedsScores(settings[s].Method) && scoresFor != SetKey(index, s, settings.Count))
            {
                scores = _editor.MaskScores(new MaskPredictor(_model, _hypernet!, _target), pixels, editImages.Count);
                scoresFor = SetKey(index, s, settings.Count);
            }
            var others = failures[g].Where((_, i) => !editSet.Contains(i)).ToList();
            var record = EditOnce(group, failures[g], editSet, pixels, scores, others, settings[s], options);
            local.Add((index, record));
            if (comm.Size == 1) onRecord?.Invoke(record);
        }
        if (comm.Size == 1) return local.Select(r => r.Record).ToList();

        var blocks = comm.GatherBlocks(JsonSerializer.SerializeToUtf8Bytes(local.Select(r => new ShardRecord(r.Index, r.Record, r.Record.MaskGates)).ToList(), ShardJson), root: 0);
        if (!comm.IsRoot()) return [];
        var all = new EditRecord?[items.Count];
        for (int rank = 0; rank < blocks.Length; rank++)
            foreach (var shard in JsonSerializer.Deserialize<List<ShardRecord>>(blocks[rank], ShardJson) ?? [])
            {
                if ((uint)shard.Index >= (uint)all.Length || owner[shard.Index] != rank || all[shard.Index] is not null)
                    throw new InvalidOperationException($"rank {rank} sent a record for work item {shard.Index}, which is not its own");
                all[shard.Index] = shard.Record with { MaskGates = shard.MaskGates };
            }
        var records = new List<EditRecord>(items.Count);
        for (int index = 0; index < all.Length; index++)
        {
            var record = all[index] ?? throw new InvalidOperationException($"rank {owner[index]} sent no record for work item {index}");
            records.Add(record);
            onRecord?.Invoke(record);
        }
        return records;
    }

    /// <summary>The edit set a work item belongs to (items are listed edit set by edit set, settings innermost).</summary>
    private static int SetKey(int index, int setting, int settings) => (index - setting) / settings;

    /// <summary>A record in transit from its rank to rank 0 (with the mask gates the JSON lines leave out).</summary>
    private sealed record ShardRecord(int Index, EditRecord Record, int[]? MaskGates);

    private static readonly JsonSerializerOptions ShardJson = new() { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary>
    /// Longest-processing-time-first: items by decreasing cost (ties: list order) each go to the rank with the least
    /// load so far (ties: lowest rank). The same on every rank, so no messages are needed to agree on it.
    /// </summary>
    public static int[] AssignByCost(IReadOnlyList<double> costs, int ranks)
    {
        if (ranks < 1) throw new ArgumentOutOfRangeException(nameof(ranks), ranks, "at least one rank");
        var owner = new int[costs.Count];
        var load = new double[ranks];
        foreach (int index in Enumerable.Range(0, costs.Count).OrderByDescending(i => costs[i]).ThenBy(i => i))
        {
            int best = 0;
            for (int r = 1; r < ranks; r++) if (load[r] < load[best]) best = r;
            owner[index] = best;
            load[best] += costs[index];
        }
        return owner;
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
        var mask = EditMaskPolicy.For(setting.Method, _target, setting.Keep, scores, options.Seed ^ Rng.StableHash($"{group.Subset}/{group.Name}/{editSet[0]}"));
        var labels = Enumerable.Repeat(group.Label, editSet.Length).ToArray();
        var result = _editor.Edit(pixels, labels, mask, new EditOptions
        {
            Method = setting.Method, LearningRate = setting.LearningRate ?? options.LearningRate, MaxSteps = options.MaxSteps, Coefficient = setting.Coefficient,
        });
        double gr = options.GrFormula == GrFormula.Reference
            ? EditMetrics.GrReference(Predict(failures.Select(f => f.Image).ToList()), group.Label)
            : EditMetrics.Gr(Predict(others.Select(o => o.Image).ToList()), group.Label);
        double lr = LocalityRate(), lrBroad = BroadLocalityRate();
        _editor.Revert();
        return new EditRecord
        {
            Subset = group.Subset, Group = group.Name, Label = group.Label, Method = setting.Method.Name(), Setting = setting.Key,
            Keep = setting.Keep, Coefficient = setting.Coefficient, LearningRate = setting.LearningRate ?? options.LearningRate, EditImages = editSet.Select(i => failures[i].Id).ToArray(),
            Sr = result.Success ? 1 : 0, Gr = gr, Lr = lr, LrBroad = lrBroad, Steps = result.Steps, FinalLoss = result.FinalLoss, KeptGates = result.KeptGates,
            WeightsChanged = result.WeightsChanged, WallMs = clock.Elapsed.TotalMilliseconds,
            WeightsBefore = string.Join(",", result.HashesBefore.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Value)),
            MaskGates = setting.Method == EditMethod.Hprd ? Enumerable.Range(0, mask.Gates.Length).Where(i => mask.Gates[i]).ToArray() : null,
        };
    }

    public void Dispose()
    {
        _editor.Dispose();
        _inference.Dispose();
        _locality.Inputs.Dispose();
        _broad?.Inputs.Dispose();
    }
}

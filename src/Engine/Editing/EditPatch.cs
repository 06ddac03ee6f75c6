using System.Globalization;
using System.Text.Json;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Editing;

/// <summary>
/// An edit as a file: for each edited matrix, the selected hidden units, their original rows (fc1) / columns (fc2)
/// and the delta, plus the base model's fingerprint, the method, keep fraction, labels and the result record.
/// Stored as safetensors: units.{r}.indices [K] (F32, exact below 2²⁴), units.{r}.original [K, D],
/// units.{r}.delta [K, D], units.{r}.edited [K, D] (so applying at scale 1 is bit-exact), metadata wte.patch.
/// </summary>
public sealed class EditPatch
{
    public const string MetadataKey = "wte.patch";

    /// <summary>The patch layout this code writes and reads (<see cref="Header.FormatVersion"/>; a patch without the field is version 1).</summary>
    public const int CurrentFormatVersion = 1;

    public sealed record Unit(int Index, string Parameter, MaskAxis Axis, int[] Indices, float[] Original, float[] Edited)
    {
        public float[] Delta() => Edited.Select((e, i) => e - Original[i]).ToArray();
    }

    public sealed record Header
    {
        public int FormatVersion { get; init; } = CurrentFormatVersion;
        public required string BaseFingerprint { get; init; }
        public required string EditedFingerprint { get; init; }
        public required int[] EditBlocks { get; init; }
        public required int EmbedDim { get; init; }
        public required int MlpHidden { get; init; }
        public required string Method { get; init; }
        public double Keep { get; init; }
        public required int[] Labels { get; init; }
        public string[] Images { get; init; } = [];
        public EditResult? Result { get; init; }
    }

    public EditPatch(Header header, IReadOnlyList<Unit> units)
    {
        Info = header;
        Units = units;
    }

    public Header Info { get; }
    public IReadOnlyList<Unit> Units { get; }
    public long WeightCount => Units.Sum(u => (long)u.Indices.Length * Info.EmbedDim);

    /// <summary>
    /// Builds the patch of an edit: the units the mask kept (all units for fine-tuning), their values before
    /// (<paramref name="original"/>, unit order) and after (the model's current weights).
    /// </summary>
    public static EditPatch FromEdit(VitModel edited, EditTarget target, EditMask? mask, IReadOnlyList<float[]> original,
                                     string baseFingerprint, string method, double keep, int[] labels, string[] images, EditResult? result)
    {
        int d = target.Model.EmbedDim, h = target.UnitSize;
        var units = new List<Unit>();
        foreach (var u in target.Units)
        {
            var now = edited[u.Parameter].Value.ToArray();
            int[] indices = mask is null ? Enumerable.Range(0, h).ToArray() : mask.Indices(u.Index);
            units.Add(new Unit(u.Index, u.Parameter, u.Axis, indices, Gather(original[u.Index], u.Axis, indices, d, h), Gather(now, u.Axis, indices, d, h)));
        }
        var header = new Header
        {
            BaseFingerprint = baseFingerprint, EditedFingerprint = VitCheckpoint.Fingerprint(edited), EditBlocks = target.Blocks.ToArray(),
            EmbedDim = d, MlpHidden = h, Method = method, Keep = keep, Labels = labels, Images = images, Result = result,
        };
        return new EditPatch(header, units);
    }

    /// <summary>Rows (fc1 [H, D]) or columns (fc2 [D, H]) of a matrix as [K, D].</summary>
    private static float[] Gather(float[] matrix, MaskAxis axis, int[] indices, int d, int h)
    {
        var result = new float[indices.Length * d];
        for (int k = 0; k < indices.Length; k++)
        {
            int j = indices[k];
            for (int i = 0; i < d; i++)
                result[k * d + i] = axis == MaskAxis.Rows ? matrix[j * d + i] : matrix[i * h + j];
        }
        return result;
    }

    private static void Scatter(float[] matrix, MaskAxis axis, int[] indices, float[] values, int d, int h)
    {
        for (int k = 0; k < indices.Length; k++)
        {
            int j = indices[k];
            for (int i = 0; i < d; i++)
            {
                if (axis == MaskAxis.Rows) matrix[j * d + i] = values[k * d + i];
                else matrix[i * h + j] = values[k * d + i];
            }
        }
    }

    private void CheckShapes(VitModel model, string what)
    {
        var c = model.Config;
        if (c.EmbedDim != Info.EmbedDim || c.MlpHidden != Info.MlpHidden || Info.EditBlocks.Any(b => b >= c.Depth))
            throw new InvalidOperationException($"{what}: the patch is for a ViT of width {Info.EmbedDim}, MLP {Info.MlpHidden}, blocks [{string.Join(",", Info.EditBlocks)}]; the model has width {c.EmbedDim}, MLP {c.MlpHidden}, depth {c.Depth}");
    }

    /// <summary>
    /// W[units] = original + scale·delta (scale 1 writes the edited values exactly). Refuses a model whose
    /// weights are not the patch's base (fingerprint).
    /// </summary>
    public void Apply(VitModel model, float scale = 1f, string? modelFingerprint = null)
    {
        if (!float.IsFinite(scale)) throw new ArgumentOutOfRangeException(nameof(scale), scale, "--scale must be finite");
        CheckShapes(model, "apply");
        string fingerprint = modelFingerprint ?? VitCheckpoint.Fingerprint(model);
        if (!string.Equals(fingerprint, Info.BaseFingerprint, StringComparison.OrdinalIgnoreCase))
            throw new InvalidOperationException($"apply: this patch was made for the model with fingerprint {Info.BaseFingerprint}; this model is {fingerprint}");
        foreach (var u in Units)
        {
            var p = model[u.Parameter];
            var w = p.Value.ToArray();
            float[] values = scale == 1f ? u.Edited : u.Original.Select((o, i) => (float)(o + (double)scale * ((double)u.Edited[i] - o))).ToArray();
            Scatter(w, u.Axis, u.Indices, values, Info.EmbedDim, Info.MlpHidden);
            p.Value.CopyFrom(w);
        }
        if (scale == 1f && VitCheckpoint.Fingerprint(model) is var after && !string.Equals(after, Info.EditedFingerprint, StringComparison.OrdinalIgnoreCase))
        {
            for (int i = 0; i < Units.Count; i++)
            {
                var p = model[Units[i].Parameter];
                var w = p.Value.ToArray();
                Scatter(w, Units[i].Axis, Units[i].Indices, Units[i].Original, Info.EmbedDim, Info.MlpHidden);
                p.Value.CopyFrom(w);
            }
            throw new InvalidOperationException($"apply: the result's fingerprint {after} is not the patch's edited_fingerprint {Info.EditedFingerprint}; the patch is inconsistent, nothing was written");
        }
    }

    /// <summary>Writes the original values back and checks the result is the patch's base model bit for bit.</summary>
    public void Revert(VitModel model)
    {
        CheckShapes(model, "revert");
        string current = VitCheckpoint.Fingerprint(model);
        if (string.Equals(current, Info.BaseFingerprint, StringComparison.OrdinalIgnoreCase))
            throw new InvalidOperationException($"revert: this model is the patch's base model ({current}); the patch is not applied to it");
        if (!string.Equals(current, Info.EditedFingerprint, StringComparison.OrdinalIgnoreCase) && Units.All(u => HoldsOriginal(model, u)))
            throw new InvalidOperationException($"revert: this model ({current}) is not the patched model ({Info.EditedFingerprint}) and holds the patch's original values: the patch was not applied to it");
        var saved = Units.Select(u => model[u.Parameter].Value.ToArray()).ToList();
        foreach (var u in Units)
        {
            var p = model[u.Parameter];
            var w = p.Value.ToArray();
            Scatter(w, u.Axis, u.Indices, u.Original, Info.EmbedDim, Info.MlpHidden);
            p.Value.CopyFrom(w);
        }
        string fingerprint = VitCheckpoint.Fingerprint(model);
        if (!string.Equals(fingerprint, Info.BaseFingerprint, StringComparison.OrdinalIgnoreCase))
        {
            for (int i = 0; i < Units.Count; i++) model[Units[i].Parameter].Value.CopyFrom(saved[i]);
            throw new InvalidOperationException($"revert: restoring the patch's original values does not give its base model ({Info.BaseFingerprint}, got {fingerprint}): the model differs elsewhere, so this patch was not applied to it");
        }
    }

    /// <summary>True when the model holds the unit's original values at its indices (the patch is not applied there).</summary>
    private bool HoldsOriginal(VitModel model, Unit u)
    {
        var w = model[u.Parameter].Value.ToArray();
        var now = Gather(w, u.Axis, u.Indices, Info.EmbedDim, Info.MlpHidden);
        return now.AsSpan().SequenceEqual(u.Original);
    }

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <summary>Writes the patch atomically (temp file + rename).</summary>
    public void Save(string path)
    {
        var tensors = new List<NamedTensor>();
        foreach (var u in Units)
        {
            int k = u.Indices.Length, d = Info.EmbedDim;
            tensors.Add(new NamedTensor($"units.{u.Index}.indices", [k], u.Indices.Select(i => (float)i).ToArray()));
            tensors.Add(new NamedTensor($"units.{u.Index}.original", [k, d], u.Original));
            tensors.Add(new NamedTensor($"units.{u.Index}.delta", [k, d], u.Delta()));
            tensors.Add(new NamedTensor($"units.{u.Index}.edited", [k, d], u.Edited));
        }
        SafeTensors.Write(path, tensors, new Dictionary<string, string> { [MetadataKey] = JsonSerializer.Serialize(Info, Json) });
    }

    /// <summary>
    /// Reads and fully validates a patch before anything uses it: known format version, header fields present, edit
    /// blocks unique and non-negative, every unit of every block present with exactly [K, D] finite original, delta
    /// and edited values, unit indices integer, in range and unique, at least one unit, no foreign tensors.
    /// </summary>
    public static EditPatch Load(string path)
    {
        var file = SafeTensors.Read(path);
        if (!file.Metadata.TryGetValue(MetadataKey, out var json))
            throw new CheckpointFormatException(path, $"not a WhereToEdit edit patch: metadata '{MetadataKey}' is missing");
        Header header;
        try { header = JsonSerializer.Deserialize<Header>(json, Json) ?? throw new JsonException("null"); }
        catch (JsonException e) { throw new CheckpointFormatException(path, $"patch metadata is malformed: {e.Message}", e); }
        [System.Diagnostics.CodeAnalysis.DoesNotReturn] void Bad(string problem) => throw new CheckpointFormatException(path, problem);
        if (header.FormatVersion != CurrentFormatVersion)
            Bad($"patch format_version {header.FormatVersion} is not supported (this wte reads version {CurrentFormatVersion})");
        if (string.IsNullOrWhiteSpace(header.BaseFingerprint) || string.IsNullOrWhiteSpace(header.EditedFingerprint))
            Bad("patch metadata: base_fingerprint and edited_fingerprint are required");
        if (header.EditBlocks is null || header.EditBlocks.Length == 0) Bad("patch metadata: edit_blocks must be a non-empty list of block indices");
        if (header.EditBlocks!.Any(b => b < 0) || header.EditBlocks.Distinct().Count() != header.EditBlocks.Length)
            Bad($"patch metadata: edit_blocks [{string.Join(",", header.EditBlocks)}] must be distinct non-negative block indices");
        if (header.EmbedDim <= 0 || header.MlpHidden <= 0) Bad($"patch metadata: embed_dim {header.EmbedDim} and mlp_hidden {header.MlpHidden} must be positive");
        if (header.Labels is null || header.Method is null) Bad("patch metadata: labels and method are required");
        if (!double.IsFinite(header.Keep) || header.Keep is < 0 or > 1) Bad($"patch metadata: keep {header.Keep} must be in [0, 1]");

        var expected = new HashSet<string>(StringComparer.Ordinal);
        var units = new List<Unit>();
        for (int r = 0; r < 2 * header.EditBlocks.Length; r++)
        {
            string prefix = $"units.{r}.";
            foreach (string part in new[] { "indices", "original", "delta", "edited" })
            {
                expected.Add(prefix + part);
                if (!file.Contains(prefix + part)) Bad($"{prefix}{part}: missing (block {header.EditBlocks[r / 2]} needs units {2 * (r / 2)} and {2 * (r / 2) + 1})");
            }
            var idxTensor = file[prefix + "indices"];
            if (idxTensor.Shape.Length != 1) Bad($"{prefix}indices: shape {NamedTensor.FormatShape(idxTensor.Shape)} must be [K]");
            var idx = idxTensor.Data;
            var indices = new int[idx.Length];
            var seen = new HashSet<int>();
            for (int k = 0; k < idx.Length; k++)
            {
                float v = idx[k];
                if (!(v >= 0 && v < header.MlpHidden) || v != MathF.Floor(v))
                    Bad($"{prefix}indices[{k}] = {v.ToString(CultureInfo.InvariantCulture)}: not an integer unit index in [0, {header.MlpHidden})");
                indices[k] = (int)v;
                if (!seen.Add(indices[k])) Bad($"{prefix}indices: unit {indices[k]} appears twice");
            }
            foreach (string part in new[] { "original", "delta", "edited" })
            {
                var t = file[prefix + part];
                if (t.Shape.Length != 2 || t.Shape[0] != indices.Length || t.Shape[1] != header.EmbedDim)
                    Bad($"{prefix}{part}: shape {NamedTensor.FormatShape(t.Shape)}, but {indices.Length} indices of width {header.EmbedDim} need [{indices.Length}, {header.EmbedDim}]");
                int bad = Array.FindIndex(t.Data, x => !float.IsFinite(x));
                if (bad >= 0) Bad($"{prefix}{part}: value {bad} is {t.Data[bad].ToString(CultureInfo.InvariantCulture)}; a patch holds finite numbers only");
            }
            int block = header.EditBlocks[r / 2];
            units.Add(new Unit(r, $"blocks.{block}.mlp.fc{(r % 2 == 0 ? 1 : 2)}.weight", r % 2 == 0 ? MaskAxis.Rows : MaskAxis.Columns,
                indices, file[prefix + "original"].Data, file[prefix + "edited"].Data));
        }
        foreach (var t in file.Tensors)
            if (!expected.Contains(t.Name)) Bad($"tensor '{t.Name}' does not belong to a patch of blocks [{string.Join(",", header.EditBlocks)}]");
        if (units.All(u => u.Indices.Length == 0)) Bad("the patch is empty (no unit holds a selected index)");
        return new EditPatch(header, units);
    }

    public string Describe() =>
        string.Create(CultureInfo.InvariantCulture,
            $"method {Info.Method}, keep {Info.Keep}, labels [{string.Join(",", Info.Labels)}], blocks [{string.Join(",", Info.EditBlocks)}], " +
            $"{Units.Sum(u => u.Indices.Length)} units, {WeightCount:N0} weights; base {Info.BaseFingerprint} → edited {Info.EditedFingerprint}");
}

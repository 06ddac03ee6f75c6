using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Editing;

/// <summary>
/// Operations on a stack of edit patches applied one after another to the same model (a live server's edits):
/// which units two patches share, and reverting one patch from the middle of the stack bit for bit.
/// </summary>
public static class PatchStack
{
    /// <summary>Per edited matrix, how many hidden units both patches changed (empty when they are disjoint).</summary>
    public static IReadOnlyList<(string Parameter, int Units)> SharedUnits(EditPatch a, EditPatch b)
    {
        var shared = new List<(string, int)>();
        foreach (var ua in a.Units)
        {
            var ub = b.Units.FirstOrDefault(u => u.Parameter == ua.Parameter);
            if (ub is null) continue;
            int count = ua.Indices.Intersect(ub.Indices).Count();
            if (count > 0) shared.Add((ua.Parameter, count));
        }
        return shared;
    }

    /// <summary>
    /// Writes the patch's original values back into its units. Unlike <see cref="EditPatch.Revert"/> the patch need
    /// not be the last one applied: later patches that changed other units keep their values. Every unit must still
    /// hold the patch's edited values exactly (else nothing is written and the parameter is named), so the units
    /// return to their pre-edit bits.
    /// </summary>
    public static void RevertUnits(VitModel model, EditPatch patch) => Replace(model, patch, revert: true);

    /// <summary>The inverse of <see cref="RevertUnits"/>: writes the edited values into units that hold the original ones.</summary>
    public static void ReapplyUnits(VitModel model, EditPatch patch) => Replace(model, patch, revert: false);

    private static void Replace(VitModel model, EditPatch patch, bool revert)
    {
        int d = patch.Info.EmbedDim, h = patch.Info.MlpHidden;
        var c = model.Config;
        string what = revert ? "revert" : "reapply";
        if (c.EmbedDim != d || c.MlpHidden != h)
            throw new InvalidOperationException($"{what}: the patch is for width {d}, MLP {h}; the model has width {c.EmbedDim}, MLP {c.MlpHidden}");
        var matrices = new List<(Parameter P, float[] W)>();
        foreach (var u in patch.Units)
        {
            if (!model.TryGetParameter(u.Parameter, out var p))
                throw new InvalidOperationException($"{what}: the model has no parameter {u.Parameter}");
            float[] expected = revert ? u.Edited : u.Original, written = revert ? u.Original : u.Edited;
            var w = p.Value.ToArray();
            for (int k = 0; k < u.Indices.Length; k++)
                for (int i = 0; i < d; i++)
                {
                    int at = u.Axis == MaskAxis.Rows ? u.Indices[k] * d + i : i * h + u.Indices[k];
                    if (BitConverter.SingleToInt32Bits(w[at]) != BitConverter.SingleToInt32Bits(expected[k * d + i]))
                        throw new InvalidOperationException($"{what}: {u.Parameter} unit {u.Indices[k]} does not hold this patch's {(revert ? "edited" : "original")} values (another change overwrote it)");
                    w[at] = written[k * d + i];
                }
            matrices.Add((p, w));
        }
        foreach (var (p, w) in matrices) p.Value.CopyFrom(w);
    }
}

namespace WhereToEdit.Engine.Editing;

/// <summary>
/// Which hidden units an edit may change, by method (method.md §5–6), in one place for `wte edit` and the evaluation:
/// HPRD keeps the global top-k of the hypernetwork's scores, random keeps a seeded random set of the same size,
/// fine-tuning keeps every unit.
/// </summary>
internal static class EditMaskPolicy
{
    /// <summary>Whether <paramref name="method"/> needs the hypernetwork's scores.</summary>
    public static bool NeedsScores(EditMethod method) => method == EditMethod.Hprd;

    /// <param name="scores">The hypernetwork's mean scores for the edit images (<see cref="MaskPredictor.Scores"/>); HPRD only.</param>
    /// <param name="seed">Seeds the random mask.</param>
    public static EditMask For(EditMethod method, EditTarget target, double keep, float[]? scores, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (!method.IsFineTuning() && !(keep > 0 && keep <= 1)) throw new ArgumentOutOfRangeException(nameof(keep), keep, "--keep must be in (0, 1]");
        return method switch
        {
            EditMethod.Hprd => EditMask.TopK(target, scores ?? throw new ArgumentException("HPRD needs the hypernetwork's scores (--hypernet)"), keep),
            EditMethod.Random => EditMask.Random(target, keep, seed),
            _ => EditMask.Full(target),
        };
    }
}

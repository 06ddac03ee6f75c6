namespace WhereToEdit.Engine.MetaTraining;

/// <summary>
/// Overlap measures of per-sample masks over B samples × G gates (row-major [B, G]), each binarised by its own
/// top-k at keep fraction ρ (the edit-time binarisation, per sample). Two random masks at keep ρ overlap with
/// IoU ≈ ρ/(2 − ρ) (0.053 at ρ = 0.1); identical masks give 1.
/// </summary>
internal static class MetaDiagnostics
{
    /// <summary>The keep fraction the diagnostics binarise at (the paper's headline keep 0.1).</summary>
    public const double Keep = 0.1;

    /// <summary>
    /// Probe-mask IoU across images above this means the hypernetwork predicts nearly one mask for every input
    /// (the shipped 1500-iteration hypernetwork sat at 0.94 across groups in `wte eval`).
    /// </summary>
    public const double InputIndependentIoU = 0.9;

    /// <summary>The input-dependence warning waits this many iterations (a freshly initialised hypernetwork gives one mask for all).</summary>
    public const int WarnAfterIterations = 100;

    /// <summary>Per-sample top-k sets of <paramref name="scores"/> [samples, gates] at keep <paramref name="keep"/>.</summary>
    public static bool[][] TopKSets(ReadOnlySpan<float> scores, int samples, double keep = Keep)
    {
        if (samples <= 0 || scores.Length % samples != 0)
            throw new ArgumentException($"{scores.Length} scores do not split into {samples} samples");
        int gates = scores.Length / samples;
        int k = Math.Max(1, (int)Math.Floor(keep * gates + 1e-9));
        var sets = new bool[samples][];
        var order = new int[gates];
        var keys = new float[gates];
        for (int i = 0; i < samples; i++)
        {
            scores.Slice(i * gates, gates).CopyTo(keys);
            for (int j = 0; j < gates; j++) { order[j] = j; keys[j] = -keys[j]; }
            // Ascending −score, ties by index: deterministic.
            Array.Sort(keys, order);
            var set = new bool[gates];
            for (int j = 0; j < k; j++) set[order[j]] = true;
            sets[i] = set;
        }
        return sets;
    }

    public static double IoU(bool[] a, bool[] b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"masks of {a.Length} and {b.Length} gates");
        int inter = 0, union = 0;
        for (int j = 0; j < a.Length; j++)
        {
            if (a[j] && b[j]) inter++;
            if (a[j] || b[j]) union++;
        }
        return union == 0 ? 1 : (double)inter / union;
    }

    /// <summary>
    /// Per-sample sets of the gates whose logit is positive (<paramref name="logits"/> [samples, gates]): the stage-B
    /// labels y = sigmoid(3z) above 0.5, i.e. the gates stage B teaches the hypernetwork to open. Stage A's RMSprop
    /// moves every gate by about the same amount in the direction its gradient's sign says, so the ranking inside
    /// the open set is mostly z0 noise; which gates are open is the signal.
    /// </summary>
    public static bool[][] PositiveSets(ReadOnlySpan<float> logits, int samples)
    {
        if (samples <= 0 || logits.Length % samples != 0)
            throw new ArgumentException($"{logits.Length} logits do not split into {samples} samples");
        int gates = logits.Length / samples;
        var sets = new bool[samples][];
        for (int i = 0; i < samples; i++)
        {
            var set = new bool[gates];
            for (int j = 0; j < gates; j++) set[j] = logits[i * gates + j] > 0;
            sets[i] = set;
        }
        return sets;
    }

    /// <summary>Mean IoU over all pairs i &lt; j of different samples (NaN with fewer than 2).</summary>
    public static double MeanIoUAcross(bool[][] sets)
    {
        double sum = 0;
        int n = 0;
        for (int i = 0; i < sets.Length; i++)
            for (int j = i + 1; j < sets.Length; j++) { sum += IoU(sets[i], sets[j]); n++; }
        return n == 0 ? double.NaN : sum / n;
    }

    /// <summary>Mean IoU of sample i in <paramref name="a"/> with sample i in <paramref name="b"/>.</summary>
    public static double MeanIoUSame(bool[][] a, bool[][] b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"{a.Length} and {b.Length} samples");
        double sum = 0;
        for (int i = 0; i < a.Length; i++) sum += IoU(a[i], b[i]);
        return a.Length == 0 ? double.NaN : sum / a.Length;
    }
}

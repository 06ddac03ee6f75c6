using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Editing;

/// <summary>A binary structured mask: one 0/1 gate per hidden neuron per edited matrix, in unit order.</summary>
public sealed class EditMask
{
    public EditMask(EditTarget target, bool[] gates)
    {
        if (gates.Length != target.TotalGates)
            throw new ArgumentException($"mask has {gates.Length} gates, the edit target has {target.TotalGates} ({target.Units.Count} units × {target.UnitSize})");
        Target = target;
        Gates = gates;
    }

    public EditTarget Target { get; }
    public bool[] Gates { get; }
    public int Kept => Gates.Count(g => g);
    public double KeepFraction => (double)Kept / Gates.Length;

    public ReadOnlySpan<bool> Unit(int r) => Gates.AsSpan(r * Target.UnitSize, Target.UnitSize);

    /// <summary>Selected neuron indices of unit r, ascending.</summary>
    public int[] Indices(int r)
    {
        var unit = Unit(r);
        var list = new List<int>();
        for (int j = 0; j < unit.Length; j++) if (unit[j]) list.Add(j);
        return list.ToArray();
    }

    public float[] UnitAsFloats(int r)
    {
        var unit = Unit(r);
        var f = new float[unit.Length];
        for (int j = 0; j < f.Length; j++) f[j] = unit[j] ? 1f : 0f;
        return f;
    }

    /// <summary>Number of kept gates for a keep fraction ρ: ⌊ρ·N⌋ (as the reference), at least 1.</summary>
    public static int KeepCount(int total, double keep)
    {
        if (!(keep > 0 && keep <= 1)) throw new ArgumentOutOfRangeException(nameof(keep), keep, "--keep must be in (0, 1]");
        return Math.Max(1, (int)Math.Floor(keep * total + 1e-9));
    }

    /// <summary>
    /// ONE global top-k over all units' soft scores, keeping exactly k gates (ties broken by lower index; the
    /// reference's strict '>' keeps k−1).
    /// </summary>
    public static EditMask TopK(EditTarget target, ReadOnlySpan<float> scores, double keep)
    {
        if (scores.Length != target.TotalGates)
            throw new ArgumentException($"scores hold {scores.Length} values, the edit target has {target.TotalGates} gates");
        int k = KeepCount(scores.Length, keep);
        var order = new int[scores.Length];
        for (int i = 0; i < order.Length; i++) order[i] = i;
        var keys = scores.ToArray();
        TensorChecks.EnsureFinite(keys, "hypernetwork scores");
        // Sort by descending score, ascending index: deterministic whatever the sort's stability.
        Array.Sort(order, (a, b) => keys[a] != keys[b] ? keys[b].CompareTo(keys[a]) : a.CompareTo(b));
        var gates = new bool[scores.Length];
        for (int i = 0; i < k; i++) gates[order[i]] = true;
        return new EditMask(target, gates);
    }

    /// <summary>A uniformly random mask with exactly the same number of kept gates (the paper's ablation).</summary>
    public static EditMask Random(EditTarget target, double keep, ulong seed)
    {
        int n = target.TotalGates, k = KeepCount(n, keep);
        var order = Enumerable.Range(0, n).ToArray();
        var rng = new Rng(seed);
        for (int i = n - 1; i > 0; i--)
        {
            int j = rng.NextInt(0, i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        var gates = new bool[n];
        for (int i = 0; i < k; i++) gates[order[i]] = true;
        return new EditMask(target, gates);
    }

    /// <summary>All gates on (fine-tuning the whole matrices).</summary>
    public static EditMask Full(EditTarget target) => new(target, Enumerable.Repeat(true, target.TotalGates).ToArray());

    /// <summary>Intersection over union with another mask of the same target.</summary>
    public double IoU(EditMask other)
    {
        int inter = 0, union = 0;
        for (int i = 0; i < Gates.Length; i++)
        {
            if (Gates[i] && other.Gates[i]) inter++;
            if (Gates[i] || other.Gates[i]) union++;
        }
        return union == 0 ? 1 : (double)inter / union;
    }
}

namespace WhereToEdit.Engine.Tensors;

/// <summary>Small host-side helpers over downloaded values.</summary>
internal static class HostMath
{
    /// <summary>Index of the largest value (the first on ties).</summary>
    public static int ArgMax(ReadOnlySpan<float> values)
    {
        int arg = 0;
        for (int k = 1; k < values.Length; k++) if (values[k] > values[arg]) arg = k;
        return arg;
    }
}

namespace WhereToEdit.Engine.Tensors;

public static class TensorChecks
{
    /// <summary>Throws <see cref="NonFiniteException"/> naming the tensor if any element is NaN or ±Inf.</summary>
    public static void EnsureFinite(ReadOnlySpan<float> values, string name)
    {
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i])) throw new NonFiniteException(name, i, values[i]);
    }

    public static void EnsureFinite(Tensor t) => EnsureFinite(t.ToArray(), t.Name);

    public static void EnsureFinite(float value, string name)
    {
        if (!float.IsFinite(value)) throw new NonFiniteException(name, 0, value);
    }
}

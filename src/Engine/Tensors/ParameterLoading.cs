namespace WhereToEdit.Engine.Tensors;

/// <summary>Loading named host tensors into a model's parameters, all-or-nothing.</summary>
internal static class ParameterLoading
{
    /// <summary>
    /// Every parameter must be present with its exact shape and finite values; the error lists every missing,
    /// unexpected and mis-shaped tensor at once, and nothing is written unless everything checks out.
    /// </summary>
    public static void Load(IReadOnlyList<Parameter> parameters, IReadOnlyDictionary<string, (int[] Shape, float[] Data)> tensors,
                            string source, string what)
    {
        var byName = parameters.ToDictionary(p => p.Name);
        var missing = parameters.Where(p => !tensors.ContainsKey(p.Name)).Select(p => p.Name).ToList();
        var unexpected = tensors.Keys.Where(n => !byName.ContainsKey(n)).ToList();
        var misShaped = tensors.Where(kv => byName.TryGetValue(kv.Key, out var p) && !p.Shape.AsSpan().SequenceEqual(kv.Value.Shape))
            .Select(kv => $"{kv.Key}: expected {Tensor.ShapeString(byName[kv.Key].Shape)}, got {Tensor.ShapeString(kv.Value.Shape)}").ToList();
        if (missing.Count + unexpected.Count + misShaped.Count > 0)
        {
            var parts = new List<string>();
            if (missing.Count > 0) parts.Add($"missing {missing.Count}: {string.Join(", ", missing)}");
            if (unexpected.Count > 0) parts.Add($"unexpected {unexpected.Count}: {string.Join(", ", unexpected)}");
            if (misShaped.Count > 0) parts.Add($"mis-shaped {misShaped.Count}: {string.Join("; ", misShaped)}");
            throw new ArgumentException($"{source}: weights do not match the {what} — {string.Join(" | ", parts)}");
        }
        foreach (var p in parameters)
        {
            var data = tensors[p.Name].Data;
            if (data.Length != p.Length) throw new ArgumentException($"{source}: tensor '{p.Name}' holds {data.Length} values, expected {p.Length}");
            TensorChecks.EnsureFinite(data, $"{source}: {p.Name}");
        }
        foreach (var p in parameters) p.Value.CopyFrom(tensors[p.Name].Data);
    }
}

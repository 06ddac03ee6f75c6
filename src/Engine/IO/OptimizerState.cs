using System.Globalization;

namespace WhereToEdit.Engine.IO;

/// <summary>Checks an optimizer-state tensor read from a checkpoint before it is trusted (resume).</summary>
internal static class OptimizerState
{
    /// <summary>
    /// The tensor must have exactly <paramref name="shape"/>, finite values and, for a second moment
    /// (<paramref name="nonNegative"/>: RMSprop square average, Adam v), no negative value; otherwise the file and the
    /// tensor are named.
    /// </summary>
    public static float[] Validated(string path, string name, NamedTensor? tensor, int[] shape, bool nonNegative)
    {
        if (tensor is null) throw new CheckpointFormatException(path, $"optimizer state '{name}' is missing");
        if (!tensor.Shape.AsSpan().SequenceEqual(shape))
            throw new CheckpointFormatException(path, $"optimizer state '{name}' has shape {NamedTensor.FormatShape(tensor.Shape)}, the parameter needs {NamedTensor.FormatShape(shape)}");
        var data = tensor.Data;
        for (int i = 0; i < data.Length; i++)
        {
            float v = data[i];
            if (!float.IsFinite(v))
                throw new CheckpointFormatException(path, $"optimizer state '{name}' holds {v.ToString(CultureInfo.InvariantCulture)} at element {i}; refusing to resume from it");
            if (nonNegative && v < 0)
                throw new CheckpointFormatException(path, $"optimizer state '{name}' is a second moment but holds {v.ToString(CultureInfo.InvariantCulture)} at element {i} (must be ≥ 0)");
        }
        return data;
    }
}

using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Editing;

/// <summary>One mask vector: the hidden-neuron gates of one edited matrix.</summary>
/// <param name="Index">Position r in the unit order (blk.fc1, blk.fc2, next blk.fc1, ...).</param>
/// <param name="Axis">Rows for fc1 (input weights of neuron j), Columns for fc2 (output weights of neuron j).</param>
public sealed record EditUnit(int Index, int Block, string Parameter, MaskAxis Axis);

/// <summary>
/// The editable parameters: the fc1 (row mask) and fc2 (column mask) weights of the MLPs of a few blocks —
/// by default blocks 7, 8, 9 of a 12-block ViT, scaled to other depths (round(7·depth/12) and the next two).
/// </summary>
public sealed record EditTarget
{
    public EditTarget(VitConfig model, IReadOnlyList<int> blocks)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (blocks.Count == 0) throw new ArgumentException("an edit target needs at least one block");
        if (blocks.Distinct().Count() != blocks.Count || blocks.Zip(blocks.Skip(1)).Any(p => p.First >= p.Second))
            throw new ArgumentException($"edit blocks must be distinct and increasing, got [{string.Join(",", blocks)}]");
        foreach (int b in blocks)
            if (b < 0 || b >= model.Depth) throw new ArgumentException($"edit block {b} is outside the model's {model.Depth} blocks");
        Model = model;
        Blocks = blocks.ToArray();
        Units = Blocks.SelectMany((b, i) => new[]
        {
            new EditUnit(2 * i, b, $"blocks.{b}.mlp.fc1.weight", MaskAxis.Rows),
            new EditUnit(2 * i + 1, b, $"blocks.{b}.mlp.fc2.weight", MaskAxis.Columns),
        }).ToArray();
    }

    public VitConfig Model { get; }
    public IReadOnlyList<int> Blocks { get; }
    public IReadOnlyList<EditUnit> Units { get; }

    /// <summary>Gates per unit = the MLP's hidden width.</summary>
    public int UnitSize => Model.MlpHidden;

    public int TotalGates => Units.Count * UnitSize;

    public int FirstBlock => Blocks[0];

    public IEnumerable<string> ParameterNames => Units.Select(u => u.Parameter);

    /// <summary>Weights per gate: a row of fc1 or a column of fc2 has embed_dim weights.</summary>
    public long WeightsPerGate => Model.EmbedDim;

    public static int[] DefaultBlocks(int depth)
    {
        if (depth == 12) return [7, 8, 9];
        int first = Math.Clamp((int)Math.Round(depth * 7 / 12.0), 0, Math.Max(0, depth - 1));
        return Enumerable.Range(first, Math.Min(3, depth - first)).ToArray();
    }

    public static EditTarget Default(VitConfig model) => new(model, DefaultBlocks(model.Depth));

    /// <summary>The update mask of one unit for the optimizer, given the unit's 0/1 gate tensor.</summary>
    public UpdateMask UpdateMaskFor(EditUnit unit, Tensor gates) => unit.Axis == MaskAxis.Rows
        ? UpdateMask.RowMask(gates, Model.MlpHidden, Model.EmbedDim)
        : UpdateMask.ColumnMask(gates, Model.EmbedDim, Model.MlpHidden);
}

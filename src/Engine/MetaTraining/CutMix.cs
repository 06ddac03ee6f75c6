using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.MetaTraining;

/// <summary>A CutMix rectangle in patch units: rows [Top, Top + Height), columns [Left, Left + Width) of the patch grid.</summary>
internal readonly record struct CutMixBox(int Top, int Left, int Height, int Width);

/// <summary>
/// CutMix on the patch grid (method.md §4): a rectangle of h×w patches of the donor replaces the base's pixels there.
/// <para>Size rule: on the paper's 14×14 grid h and w are uniform in [3, 8]. Other grids G scale both ends:
/// [max(1, round(3G/14)), min(G, max(lo, round(8G/14)))], rounding halves away from zero — 14 → [3, 8],
/// 7 → [2, 4], 4 → [1, 2], 16 → [3, 9], 24 → [5, 14].</para>
/// <para>Position rule (default): the top-left corner is uniform over every position that keeps the box inside the
/// grid, top ∈ [0, G − h], left ∈ [0, G − w]. The reference draws np.random.randint(0, G − h), whose upper bound is
/// exclusive, so its boxes never touch the last row or column; <c>referenceBounds</c> reproduces that (top ∈
/// [0, G − h − 1], and 0 when h = G).</para>
/// Draw order per box: h, w, top, left (as the reference).
/// </summary>
internal static class CutMix
{
    public static (int Min, int Max) SizeRange(int grid)
    {
        if (grid <= 0) throw new ArgumentOutOfRangeException(nameof(grid), grid, "patch grid must be positive");
        int lo = Math.Max(1, (int)Math.Round(3.0 * grid / 14, MidpointRounding.AwayFromZero));
        int hi = Math.Min(grid, Math.Max(lo, (int)Math.Round(8.0 * grid / 14, MidpointRounding.AwayFromZero)));
        return (lo, hi);
    }

    public static CutMixBox Sample(Rng rng, int grid, bool referenceBounds = false)
    {
        ArgumentNullException.ThrowIfNull(rng);
        var (lo, hi) = SizeRange(grid);
        int h = rng.NextInt(lo, hi + 1), w = rng.NextInt(lo, hi + 1);
        int top = referenceBounds ? rng.NextInt(0, Math.Max(1, grid - h)) : rng.NextInt(0, grid - h + 1);
        int left = referenceBounds ? rng.NextInt(0, Math.Max(1, grid - w)) : rng.NextInt(0, grid - w + 1);
        return new CutMixBox(top, left, h, w);
    }

    /// <summary>
    /// mixed = base with the pixels of <paramref name="box"/> (all channels) taken from the donor; images are
    /// [channels, size, size] and the box is in units of <paramref name="patch"/> pixels.
    /// </summary>
    public static void Apply(ReadOnlySpan<float> baseImage, ReadOnlySpan<float> donor, Span<float> mixed, int channels, int size, int patch, CutMixBox box)
    {
        int n = channels * size * size;
        if (baseImage.Length != n || donor.Length != n || mixed.Length != n)
            throw new ArgumentException($"CutMix images must hold {channels}×{size}×{size} = {n} floats");
        int grid = size / patch;
        if (box.Top < 0 || box.Left < 0 || box.Height <= 0 || box.Width <= 0 || box.Top + box.Height > grid || box.Left + box.Width > grid)
            throw new ArgumentException($"CutMix box {box} is outside the {grid}×{grid} patch grid");
        baseImage.CopyTo(mixed);
        int y0 = box.Top * patch, x0 = box.Left * patch, rows = box.Height * patch, cols = box.Width * patch;
        for (int c = 0; c < channels; c++)
            for (int y = y0; y < y0 + rows; y++)
            {
                int at = (c * size + y) * size + x0;
                donor.Slice(at, cols).CopyTo(mixed.Slice(at, cols));
            }
    }
}

using System.Text;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// Launch shapes of native/README.md's kernel reference, built from addresses and sizes (no device needed).

/// <summary>
/// Builds the launches of native/README.md's recommended shapes from device addresses and sizes (no device needed).
/// Each returns null when the launch has nothing to write (an empty output); zero-size launches are never issued.
/// </summary>
internal static class NativeLaunches
{
    private const int Tile = 64;

    private static int Ceil(long a, long b) => (int)Math.Min(int.MaxValue, (a + b - 1) / b);

    private static int Clamp1(long x, int hi) => (int)Math.Max(1, Math.Min(x, hi));

    private static NativeArg P(IntPtr p) => NativeArg.Pointer(p);

    private static NativeArg I(int v) => NativeArg.Int(v);

    private static NativeArg F(float v) => NativeArg.Float(v);

    /// <summary>Rows variants: block (256,1,1), grid (⌈cols/256⌉, clamp(K), 1). Columns: block (32,8,1), grid (clamp(⌈K/32⌉), clamp(⌈rows/8⌉), 1).</summary>
    private static (Dim3 Grid, Dim3 Block) Elementwise(MaskAxis axis, int k, int rows, int cols) => axis == MaskAxis.Rows
        ? (new Dim3(Ceil(cols, 256), Clamp1(k, 65535), 1), new Dim3(256, 1, 1))
        : (new Dim3(Clamp1(Ceil(k, 32), int.MaxValue), Clamp1(Ceil(rows, 8), 65535), 1), new Dim3(32, 8, 1));

    private static void CheckSizes(int k, int rows, int cols, MaskAxis axis)
    {
        if (k < 0 || rows < 0 || cols < 0) throw new ArgumentOutOfRangeException(nameof(k), $"negative size (K {k}, rows {rows}, cols {cols})");
        if (axis is not (MaskAxis.Rows or MaskAxis.Columns)) throw new ArgumentOutOfRangeException(nameof(axis), axis, "native masked steps take a row or column mask");
        if (k > (axis == MaskAxis.Rows ? rows : cols)) throw new ArgumentException($"K {k} exceeds the {(axis == MaskAxis.Rows ? rows : cols)} {axis.ToString().ToLowerInvariant()}");
    }

    public static NativeLaunch? MaskedRmsProp(MaskAxis axis, bool compact, IntPtr p, IntPtr v, IntPtr grad, IntPtr idx, int k, int rows, int cols,
                                              float lr, float alpha, float oneMinusAlpha, float eps, float weightDecay)
    {
        CheckSizes(k, rows, cols, axis);
        if (k == 0 || rows == 0 || cols == 0) return null;
        var kernel = (axis, compact) switch
        {
            (MaskAxis.Rows, false) => NativeKernel.MaskedRmsPropRows,
            (MaskAxis.Rows, true) => NativeKernel.MaskedRmsPropRowsCompact,
            (_, false) => NativeKernel.MaskedRmsPropCols,
            _ => NativeKernel.MaskedRmsPropColsCompact,
        };
        var (grid, block) = Elementwise(axis, k, rows, cols);
        return new NativeLaunch(kernel, grid, block,
            [P(p), P(v), P(grad), P(idx), I(k), I(rows), I(cols), F(lr), F(alpha), F(oneMinusAlpha), F(eps), F(weightDecay)]);
    }

    public static NativeLaunch? MaskedSgd(MaskAxis axis, bool compact, IntPtr p, IntPtr grad, IntPtr idx, int k, int rows, int cols, float lr, float weightDecay)
    {
        CheckSizes(k, rows, cols, axis);
        if (k == 0 || rows == 0 || cols == 0) return null;
        var kernel = (axis, compact) switch
        {
            (MaskAxis.Rows, false) => NativeKernel.MaskedSgdRows,
            (MaskAxis.Rows, true) => NativeKernel.MaskedSgdRowsCompact,
            (_, false) => NativeKernel.MaskedSgdCols,
            _ => NativeKernel.MaskedSgdColsCompact,
        };
        var (grid, block) = Elementwise(axis, k, rows, cols);
        return new NativeLaunch(kernel, grid, block, [P(p), P(grad), P(idx), I(k), I(rows), I(cols), F(lr), F(weightDecay)]);
    }

    /// <summary>dW1c[k, d] (+)= Σ_t dH[t, idx[k]]·X[t, d]. Grid (⌈D/64⌉, clamp(⌈K/64⌉), 1). T = 0 still launches (it writes zeros or adds nothing).</summary>
    public static NativeLaunch? Dw1RowsGather(IntPtr dW1c, IntPtr dH, IntPtr x, IntPtr idx, int t, int d, int h, int k, bool accumulate)
    {
        if (t < 0 || d < 0 || h < 0 || k < 0) throw new ArgumentOutOfRangeException(nameof(t), $"negative size (T {t}, D {d}, H {h}, K {k})");
        if (k == 0 || d == 0) return null;
        return new NativeLaunch(NativeKernel.Dw1RowsGather, new Dim3(Ceil(d, Tile), Clamp1(Ceil(k, Tile), 65535), 1), new Dim3(16, 16, 1),
            [P(dW1c), P(dH), P(x), P(idx), I(t), I(d), I(h), I(k), I(accumulate ? 1 : 0)]);
    }

    /// <summary>dW2c[d, k] (+)= Σ_t dY[t, d]·A[t, idx[k]]. Grid (clamp(⌈K/64⌉), clamp(⌈D/64⌉), 1).</summary>
    public static NativeLaunch? Dw2ColsGather(IntPtr dW2c, IntPtr dY, IntPtr a, IntPtr idx, int t, int d, int h, int k, bool accumulate)
    {
        if (t < 0 || d < 0 || h < 0 || k < 0) throw new ArgumentOutOfRangeException(nameof(t), $"negative size (T {t}, D {d}, H {h}, K {k})");
        if (k == 0 || d == 0) return null;
        return new NativeLaunch(NativeKernel.Dw2ColsGather, new Dim3(Clamp1(Ceil(k, Tile), int.MaxValue), Clamp1(Ceil(d, Tile), 65535), 1), new Dim3(16, 16, 1),
            [P(dW2c), P(dY), P(a), P(idx), I(t), I(d), I(h), I(k), I(accumulate ? 1 : 0)]);
    }

    /// <summary>
    /// out[s,t,o] = Σ_i X[s,t,i]·(W[o,i] + m·delta[s,o,i]) (+ bias[o]); m = mask[s,o] (rows) or mask[s,i] (columns), a null
    /// mask (IntPtr.Zero) means all ones, a null bias none. Grid (⌈O/64⌉, clamp(⌈T/64⌉), clamp(S)). I = 0 still launches.
    /// </summary>
    public static NativeLaunch? PerSampleDelta(MaskAxis axis, IntPtr output, IntPtr x, IntPtr w, IntPtr delta, IntPtr mask, IntPtr bias,
                                               int s, int t, int i, int o)
    {
        if (s < 0 || t < 0 || i < 0 || o < 0) throw new ArgumentOutOfRangeException(nameof(s), $"negative size (S {s}, T {t}, I {i}, O {o})");
        if (axis is not (MaskAxis.Rows or MaskAxis.Columns)) throw new ArgumentOutOfRangeException(nameof(axis), axis, "per-sample deltas gate rows or columns");
        if (s == 0 || t == 0 || o == 0) return null;
        return new NativeLaunch(axis == MaskAxis.Rows ? NativeKernel.PerSampleDeltaRows : NativeKernel.PerSampleDeltaCols,
            new Dim3(Ceil(o, Tile), Clamp1(Ceil(t, Tile), 65535), Clamp1(s, 65535)), new Dim3(16, 16, 1),
            [P(output), P(x), P(w), P(delta), P(mask), P(bias), I(s), I(t), I(i), I(o)]);
    }
}

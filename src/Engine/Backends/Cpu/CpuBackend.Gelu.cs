using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Cpu;

// Exact (erf) GELU forward/backward. .NET has no erf, so Φ(x) = ½·erfc(−x/√2) uses the Chebyshev-fitted
// erfc of Numerical Recipes (relative error < 1.2e-7 for all x), evaluated with Vector512/256 where present.
public sealed unsafe partial class CpuBackend
{
    private struct GeluArgs { public float* X, Dy, Y; }

    public void GeluForward(Tensor x, Tensor y, long n)
    {
        Need(x, n, "GELU input"); Need(y, n, "GELU output");
        fixed (float* px = Cpu(x, "x").Data, py = Cpu(y, "y").Data)
        {
            var args = new GeluArgs { X = px, Y = py };
            _pool.For(checked((int)n), ElementGrain / 4, &args, &GeluForwardChunk);
        }
    }

    public void GeluBackward(Tensor x, Tensor dy, Tensor dx, long n)
    {
        Need(x, n, "GELU input"); Need(dy, n, "GELU output gradient"); Need(dx, n, "GELU input gradient");
        fixed (float* px = Cpu(x, "x").Data, pdy = Cpu(dy, "dy").Data, pdx = Cpu(dx, "dx").Data)
        {
            var args = new GeluArgs { X = px, Dy = pdy, Y = pdx };
            _pool.For(checked((int)n), ElementGrain / 4, &args, &GeluBackwardChunk);
        }
    }

    private static void GeluForwardChunk(void* p, int start, int end)
    {
        ref var a = ref *(GeluArgs*)p;
        int i = start;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= end; i += 16)
            {
                var x = Vector512.Load(a.X + i);
                (x * Gelu.Phi(x)).Store(a.Y + i);
            }
        else if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= end; i += 8)
            {
                var x = Vector256.Load(a.X + i);
                (x * Gelu.Phi(x)).Store(a.Y + i);
            }
        if (i < end) Gelu.ForwardTail(a.X + i, a.Y + i, end - i);
    }

    // GELU'(x) = Φ(x) + x·φ(x).
    private static void GeluBackwardChunk(void* p, int start, int end)
    {
        ref var a = ref *(GeluArgs*)p;
        int i = start;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= end; i += 16)
            {
                var x = Vector512.Load(a.X + i);
                var d = Gelu.Phi(x) + x * Gelu.Density(x);
                (d * Vector512.Load(a.Dy + i)).Store(a.Y + i);
            }
        else if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= end; i += 8)
            {
                var x = Vector256.Load(a.X + i);
                var d = Gelu.Phi(x) + x * Gelu.Density(x);
                (d * Vector256.Load(a.Dy + i)).Store(a.Y + i);
            }
        if (i < end) Gelu.BackwardTail(a.X + i, a.Dy + i, a.Y + i, end - i);
#if WTE_MUTANT_GELU_BACKWARD
        // Mutation spot-check (tests/mutation/run.sh builds with -p:WteMutant=GELU_BACKWARD): a deliberately wrong
        // GELU' = Φ(x) − x·φ(x), forward untouched; the test suite must fail. Never defined in a normal build.
        for (int j = start; j < end; j++) a.Y[j] -= 2 * a.X[j] * Gelu.Density(a.X[j]) * a.Dy[j];
#endif
    }
}

/// <summary>
/// The standard normal CDF Φ and density φ used by exact GELU, scalar and SIMD, with the same formula (the scalar exp can
/// round differently from the SIMD one, so the CPU backend's GELU runs every element through the SIMD form: see the tails).
/// </summary>
internal static unsafe class Gelu
{
    /// <summary>
    /// y[i] = x[i]·Φ(x[i]) for the n &lt; vector-width elements a SIMD loop leaves: its arithmetic on a zero-padded copy,
    /// so an element's GELU does not depend on where a loop's vector steps ended (a chunk boundary, a tile's edge).
    /// </summary>
    public static void ForwardTail(float* x, float* y, int n)
    {
        float* buf = stackalloc float[16];
        new Span<float>(buf, 16).Clear();
        new ReadOnlySpan<float>(x, n).CopyTo(new Span<float>(buf, 16));
        if (Vector512.IsHardwareAccelerated) { var v = Vector512.Load(buf); (v * Phi(v)).Store(buf); }
        else if (Vector256.IsHardwareAccelerated) { var v = Vector256.Load(buf); (v * Phi(v)).Store(buf); }
        else for (int i = 0; i < n; i++) buf[i] *= Phi(buf[i]);
        new ReadOnlySpan<float>(buf, n).CopyTo(new Span<float>(y, n));
    }

    /// <summary>dx[i] = (Φ(x[i]) + x[i]·φ(x[i]))·dy[i] for a SIMD loop's last n elements, as <see cref="ForwardTail"/>.</summary>
    public static void BackwardTail(float* x, float* dy, float* dx, int n)
    {
        float* bx = stackalloc float[16];
        float* bd = stackalloc float[16];
        new Span<float>(bx, 16).Clear();
        new Span<float>(bd, 16).Clear();
        new ReadOnlySpan<float>(x, n).CopyTo(new Span<float>(bx, 16));
        new ReadOnlySpan<float>(dy, n).CopyTo(new Span<float>(bd, 16));
        if (Vector512.IsHardwareAccelerated)
        {
            var v = Vector512.Load(bx);
            ((Phi(v) + v * Density(v)) * Vector512.Load(bd)).Store(bx);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            var v = Vector256.Load(bx);
            ((Phi(v) + v * Density(v)) * Vector256.Load(bd)).Store(bx);
        }
        else for (int i = 0; i < n; i++) bx[i] = (Phi(bx[i]) + bx[i] * Density(bx[i])) * bd[i];
        new ReadOnlySpan<float>(bx, n).CopyTo(new Span<float>(dx, n));
    }

    // erfc(z) ≈ t·exp(−z² + P(t)), t = 1/(1 + z/2), z ≥ 0 (Numerical Recipes' erfcc coefficients, c0..c9).
    private const float C0 = -1.26551223f, C1 = 1.00002368f, C2 = 0.37409196f, C3 = 0.09678418f, C4 = -0.18628806f,
                        C5 = 0.27886807f, C6 = -1.13520398f, C7 = 1.48851587f, C8 = -0.82215223f, C9 = 0.17087277f;
    private const float InvSqrt2 = 0.70710678118654752f;
    private const float InvSqrt2Pi = 0.39894228040143268f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Phi(float x)
    {
        float z = MathF.Abs(x) * InvSqrt2;
        float t = 1f / (1f + 0.5f * z);
        float poly = C0 + t * (C1 + t * (C2 + t * (C3 + t * (C4 + t * (C5 + t * (C6 + t * (C7 + t * (C8 + t * C9))))))));
        float erfcZ = t * MathF.Exp(-z * z + poly);
        // Φ(x) = ½·erfc(−x/√2): for x ≥ 0 that is 1 − ½·erfc(z), for x < 0 it is ½·erfc(z).
        return x >= 0 ? 1f - 0.5f * erfcZ : 0.5f * erfcZ;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Density(float x) => InvSqrt2Pi * MathF.Exp(-0.5f * x * x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Phi(Vector512<float> x)
    {
        var z = Vector512.Abs(x) * Vector512.Create(InvSqrt2);
        var one = Vector512<float>.One;
        var t = one / (one + Vector512.Create(0.5f) * z);
        var poly = Vector512.Create(C9);
        poly = Vector512.Create(C8) + t * poly;
        poly = Vector512.Create(C7) + t * poly;
        poly = Vector512.Create(C6) + t * poly;
        poly = Vector512.Create(C5) + t * poly;
        poly = Vector512.Create(C4) + t * poly;
        poly = Vector512.Create(C3) + t * poly;
        poly = Vector512.Create(C2) + t * poly;
        poly = Vector512.Create(C1) + t * poly;
        poly = Vector512.Create(C0) + t * poly;
        var half = Vector512.Create(0.5f) * (t * SimdMath.Exp(poly - z * z));
        return Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(x, Vector512<float>.Zero), one - half, half);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Density(Vector512<float> x)
        => Vector512.Create(InvSqrt2Pi) * SimdMath.Exp(Vector512.Create(-0.5f) * x * x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Phi(Vector256<float> x)
    {
        var z = Vector256.Abs(x) * Vector256.Create(InvSqrt2);
        var one = Vector256<float>.One;
        var t = one / (one + Vector256.Create(0.5f) * z);
        var poly = Vector256.Create(C9);
        poly = Vector256.Create(C8) + t * poly;
        poly = Vector256.Create(C7) + t * poly;
        poly = Vector256.Create(C6) + t * poly;
        poly = Vector256.Create(C5) + t * poly;
        poly = Vector256.Create(C4) + t * poly;
        poly = Vector256.Create(C3) + t * poly;
        poly = Vector256.Create(C2) + t * poly;
        poly = Vector256.Create(C1) + t * poly;
        poly = Vector256.Create(C0) + t * poly;
        var half = Vector256.Create(0.5f) * (t * Vector256.Exp(poly - z * z));
        return Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(x, Vector256<float>.Zero), one - half, half);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Density(Vector256<float> x)
        => Vector256.Create(InvSqrt2Pi) * Vector256.Exp(Vector256.Create(-0.5f) * x * x);
}

// Scaled, clamped sigmoid (the hypernetwork's mask head) forward/backward.
public sealed unsafe partial class CpuBackend
{
    private struct SigmoidArgs { public float* X, Dy, Y; public float Scale, Lo, Hi; }

    public void SigmoidForward(Tensor x, Tensor y, long n, float scale, float lo, float hi)
    {
        Need(x, n, "sigmoid input"); Need(y, n, "sigmoid output");
        fixed (float* px = Cpu(x, "x").Data, py = Cpu(y, "y").Data)
        {
            var args = new SigmoidArgs { X = px, Y = py, Scale = scale, Lo = lo, Hi = hi };
            _pool.For(checked((int)n), ElementGrain, &args, &SigmoidForwardChunk);
        }
    }

    private static void SigmoidForwardChunk(void* p, int start, int end)
    {
        ref var a = ref *(SigmoidArgs*)p;
        for (int i = start; i < end; i++)
        {
            float s = 1f / (1f + MathF.Exp(-a.Scale * a.X[i]));
            a.Y[i] = Math.Clamp(s, a.Lo, a.Hi);
        }
    }

    public void SigmoidBackward(Tensor y, Tensor dy, Tensor dx, long n, float scale, float lo, float hi)
    {
        Need(y, n, "sigmoid output"); Need(dy, n, "sigmoid output gradient"); Need(dx, n, "sigmoid input gradient");
        fixed (float* py = Cpu(y, "y").Data, pdy = Cpu(dy, "dy").Data, pdx = Cpu(dx, "dx").Data)
        {
            var args = new SigmoidArgs { X = py, Dy = pdy, Y = pdx, Scale = scale, Lo = lo, Hi = hi };
            _pool.For(checked((int)n), ElementGrain, &args, &SigmoidBackwardChunk);
        }
    }

    private static void SigmoidBackwardChunk(void* p, int start, int end)
    {
        ref var a = ref *(SigmoidArgs*)p;
        for (int i = start; i < end; i++)
        {
            float s = a.X[i];
            // torch.clamp passes the gradient only where the sigmoid was inside the bounds; an output sitting on a
            // bound was clamped (equality before clamping has measure zero), so it gets none.
a.Y[i] = s > a.Lo && s < a.Hi ? a.Dy[i] * a.Scale * s * (1f - s) : 0f;
        }
    }
}

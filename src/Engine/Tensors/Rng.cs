namespace WhereToEdit.Engine.Tensors;

/// <summary>
/// Deterministic random numbers (xoshiro256** seeded by SplitMix64), independent of the .NET version, so a
/// seed gives the same weights, masks and CutMix boxes everywhere. State can be saved and restored.
/// </summary>
public sealed class Rng
{
    private ulong _s0, _s1, _s2, _s3;

    public Rng(ulong seed)
    {
        ulong x = seed;
        _s0 = SplitMix(ref x); _s1 = SplitMix(ref x); _s2 = SplitMix(ref x); _s3 = SplitMix(ref x);
    }

    /// <summary>FNV-1a over the UTF-16 code units: the same in every process and .NET version
    /// (string.GetHashCode is randomised per process), for seeds derived from names.</summary>
    public static ulong StableHash(string text)
    {
        ulong h = 14695981039346656037UL;
        foreach (char ch in text) h = (h ^ ch) * 1099511628211UL;
        return h;
    }

    private static ulong SplitMix(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0; _s3 ^= _s1; _s1 ^= _s2; _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform integer in [minInclusive, maxExclusive).</summary>
    public int NextInt(int minInclusive, int maxExclusive)
    {
        if (maxExclusive <= minInclusive) throw new ArgumentOutOfRangeException(nameof(maxExclusive));
        ulong range = (ulong)(maxExclusive - (long)minInclusive);
        return (int)(minInclusive + (long)(NextUInt64() % range));
    }

    /// <summary>Standard normal (Box–Muller, one value per call).</summary>
    public double NextNormal()
    {
        double u1 = 1.0 - NextDouble();
        double u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    /// <summary>Normal(0, std²) truncated to [−2·std, 2·std] by resampling (timm's trunc_normal_ with a = −2σ, b = 2σ).</summary>
    public double NextTruncatedNormal(double std)
    {
        while (true)
        {
            double v = NextNormal();
            if (v >= -2 && v <= 2) return v * std;
        }
    }

    public ulong[] SaveState() => [_s0, _s1, _s2, _s3];

    public void RestoreState(IReadOnlyList<ulong> state)
    {
        if (state.Count != 4) throw new ArgumentException("RNG state must hold 4 words");
        (_s0, _s1, _s2, _s3) = (state[0], state[1], state[2], state[3]);
    }
}

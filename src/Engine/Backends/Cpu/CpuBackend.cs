using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Cpu;

/// <summary>Which GEMM the CPU backend uses.</summary>
public enum GemmKind
{
    /// <summary>
    /// Managed on CPUs with AVX-512 or AVX2+FMA (faster than OpenBLAS there), else OpenBLAS when it loads, else
    /// managed. The WTE_GEMM environment variable (openblas|managed|auto) overrides Auto.
    /// </summary>
    Auto,
    OpenBlas,
    Managed,
}

public sealed record CpuBackendOptions
{
    /// <summary>Worker threads; 0 = WTE_THREADS or the machine's core count.</summary>
    public int Threads { get; init; }

    public GemmKind Gemm { get; init; } = GemmKind.Auto;

    /// <summary>
    /// Bytes of weights the managed GEMM may keep packed ahead (see <see cref="PackedWeightCache"/>); 0 disables.
    /// Default 1 GiB: every weight of a ViT-B (344 MB) fits.
    /// </summary>
    public long PackedWeightBytes { get; init; } = 1L << 30;

    /// <summary>
    /// Bytes of disposed tensors' arrays kept for new tensors of the same length (see <see cref="CpuBufferPool"/>); 0
    /// disables. Default 1 GiB: the working set of a ViT-B edit (~170 MB) several times over.
    /// </summary>
    public long PooledBufferBytes { get; init; } = 1L << 30;

    /// <summary>Arithmetic of the linear layers' forward GEMMs (bf16 is opt-in; see <see cref="CpuPrecision"/>).</summary>
    public CpuPrecision Precision { get; init; } = CpuPrecision.Fp32;
}

/// <summary>
/// The CPU backend: managed SIMD (System.Numerics.Tensors, Vector256/512) on persistent worker threads,
/// GEMM through OpenBLAS or the packed managed GEMM. Ops run synchronously on the calling thread plus the
/// pool; one op at a time (like one GPU stream). Forward ops live in this file's siblings, one file per op
/// family (CpuBackend.LayerNorm.cs, CpuBackend.Attention.cs, ...), each with its backward.
/// </summary>
public sealed unsafe partial class CpuBackend : IBackend
{
    private readonly WorkerPool _pool;

    public CpuBackend() : this(new CpuBackendOptions()) { }

    public CpuBackend(CpuBackendOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        int threads = options.Threads;
        if (threads == 0 && int.TryParse(Environment.GetEnvironmentVariable("WTE_THREADS"), out int envThreads) && envThreads > 0)
            threads = envThreads;
        if (threads <= 0) threads = Environment.ProcessorCount;
        Threads = threads;
        GemmKind = ResolveGemm(options.Gemm);
        if (GemmKind == GemmKind.OpenBlas) OpenBlas.SetThreads(threads);
        _pool = new WorkerPool(threads);
        _packs = new PackedWeightCache(options.PackedWeightBytes);
        _buffers = new CpuBufferPool(options.PooledBufferBytes);
        Precision = options.Precision;
        if (Precision == CpuPrecision.Bf16 && Bf16Gemm.WhyUnavailable is { } why) throw new NotSupportedException(why);
    }

    /// <summary>Arithmetic of the linear layers' forward GEMMs.</summary>
    public CpuPrecision Precision { get; }

    private readonly PackedWeightCache _packs;
    private readonly CpuBufferPool _buffers;

    /// <summary>Bytes of weights currently held prepacked for the managed GEMM.</summary>
    public long PackedWeightBytes => _packs.Bytes;

    public string Name => $"cpu ({Threads} threads, {(GemmKind == GemmKind.OpenBlas ? "OpenBLAS" : "managed")} GEMM{(Precision == CpuPrecision.Bf16 ? ", bf16 linear layers" : "")})";

    public int Threads { get; }

    /// <summary>The GEMM actually in use (never Auto).</summary>
    public GemmKind GemmKind { get; }

    private static GemmKind ResolveGemm(GemmKind requested)
    {
        if (requested == GemmKind.Auto)
        {
            string? env = Environment.GetEnvironmentVariable("WTE_GEMM");
            if (!string.IsNullOrWhiteSpace(env))
            {
                requested = env.Trim().ToLowerInvariant() switch
                {
                    "openblas" => GemmKind.OpenBlas,
                    "managed" => GemmKind.Managed,
                    "auto" => GemmKind.Auto,
                    _ => throw new ArgumentException($"WTE_GEMM='{env}': expected openblas, managed or auto"),
                };
            }
        }
        return requested switch
        {
            // Measured here (perf/RESULTS.md): with AVX-512 or AVX2+FMA the packed managed GEMM beats Debian's
            // OpenBLAS 0.3.21 by 2–4× inside the model, whose own spinning threads also fight our worker pool.
            GemmKind.Auto => ManagedGemmIsFast || !OpenBlas.IsAvailable ? GemmKind.Managed : GemmKind.OpenBlas,
            GemmKind.OpenBlas when !OpenBlas.IsAvailable => throw new InvalidOperationException(
                "GEMM 'openblas' requested but libopenblas.so.0 could not be loaded (Debian package libopenblas0)"),
            _ => requested,
        };
    }

    private static bool ManagedGemmIsFast =>
        System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated
        || (System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated && System.Runtime.Intrinsics.X86.Fma.IsSupported);

    private volatile bool _disposed;

    public void Dispose()
    {
        _disposed = true;
        _pool.Dispose();
    }

    /// <summary>
    /// The CPU tensor behind <paramref name="t"/>, for an op that may write it: bumps its write version (so every
    /// op but a GEMM's operand read counts as a write, which keeps prepacked weights from going stale).
    /// </summary>
    internal static CpuTensor Cpu(Tensor t, string role)
    {
        var cpu = CpuOperand(t, role);
        cpu.Version++;
        return cpu;
    }

    /// <summary>The CPU tensor behind <paramref name="t"/>, for a GEMM that only reads it (no version bump).</summary>
    private static CpuTensor CpuOperand(Tensor t, string role)
    {
        ArgumentNullException.ThrowIfNull(t, role);
        return t as CpuTensor ?? throw new ArgumentException($"tensor '{t.Name}' ({role}) belongs to backend '{t.Backend.Name}', not the CPU backend");
    }

    private static void Need(Tensor t, long count, string role) => t.ExpectRange(0, count, role);

    // ---- memory ---------------------------------------------------------------------------------

    public Tensor Allocate(string name, params int[] shape) => new CpuTensor(this, name, shape);

    /// <summary>A zeroed array for a new tensor (a disposed tensor's when one of the length is kept).</summary>
    internal float[] RentBuffer(int length) => _buffers.Rent(length, _pool);

    /// <summary>Takes back the array of a disposed tensor.</summary>
    internal void ReturnBuffer(float[] data)
    {
        if (!_disposed) _buffers.Return(data);
    }

    /// <summary>Bytes of disposed tensors' arrays held for reuse (see <see cref="CpuBufferPool"/>).</summary>
    public long PooledBufferBytes => _buffers.Bytes;

    public Tensor FromHost(string name, ReadOnlySpan<float> data, params int[] shape)
    {
        var t = new CpuTensor(this, name, shape);
        if (data.Length != t.Length)
            throw new ArgumentException($"tensor '{name}': {data.Length} values given for shape {t.ShapeText} ({t.Length} elements)");
        data.CopyTo(t.Data);
        return t;
    }

    public void Fill(Tensor t, float value) => ParallelFill(Cpu(t, "fill target").Data, value, _pool);

    internal static void ParallelFill(float[] data, float value, WorkerPool pool)
    {
        if (data.Length < 1 << 20)
        {
            data.AsSpan().Fill(value);
            return;
        }
        // Zeroing a ViT-B's gradients (86 M floats) before each backward: split over the pool.
        fixed (float* p = data)
        {
            var args = new FillArgs { Data = p, Value = value };
            pool.For(data.Length, 1 << 18, &args, &FillChunk);
        }
    }

    private struct FillArgs { public float* Data; public float Value; }

    private static void FillChunk(void* p, int start, int end)
    {
        ref var a = ref *(FillArgs*)p;
        new Span<float>(a.Data + start, end - start).Fill(a.Value);
    }

    public void Copy(Tensor src, long srcOffset, Tensor dst, long dstOffset, long count)
    {
        src.ExpectRange(srcOffset, count, "copy source");
        dst.ExpectRange(dstOffset, count, "copy destination");
        Cpu(src, "copy source").Data.AsSpan((int)srcOffset, (int)count).CopyTo(Cpu(dst, "copy destination").Data.AsSpan((int)dstOffset));
    }

    public void CopyRows(Tensor src, long srcOffset, int srcStride, Tensor dst, long dstOffset, int dstStride, int rows, int cols, bool accumulate)
    {
        if (rows == 0 || cols == 0) return;
        src.ExpectRange(srcOffset, (long)(rows - 1) * srcStride + cols, "row-copy source");
        dst.ExpectRange(dstOffset, (long)(rows - 1) * dstStride + cols, "row-copy destination");
        float[] s = Cpu(src, "row-copy source").Data, d = Cpu(dst, "row-copy destination").Data;
        for (int r = 0; r < rows; r++)
        {
            var from = s.AsSpan((int)(srcOffset + (long)r * srcStride), cols);
            var to = d.AsSpan((int)(dstOffset + (long)r * dstStride), cols);
            if (accumulate) TensorPrimitives.Add(to, from, to);
            else from.CopyTo(to);
        }
    }

    public void Synchronize() { }

    // ---- elementwise --------------------------------------------------------------------------

    private struct BinaryArgs { public float* A, B, Y; public float Alpha; }

    private const int ElementGrain = 1 << 15;

    public void Add(Tensor a, Tensor b, Tensor y, long n)
    {
        Need(a, n, "add input a"); Need(b, n, "add input b"); Need(y, n, "add output");
        fixed (float* pa = Cpu(a, "a").Data, pb = Cpu(b, "b").Data, py = Cpu(y, "y").Data)
        {
            var args = new BinaryArgs { A = pa, B = pb, Y = py };
            _pool.For(checked((int)n), ElementGrain, &args, &AddChunk);
        }
    }

    private static void AddChunk(void* p, int start, int end)
    {
        ref var a = ref *(BinaryArgs*)p;
        TensorPrimitives.Add(new ReadOnlySpan<float>(a.A + start, end - start),
            new ReadOnlySpan<float>(a.B + start, end - start), new Span<float>(a.Y + start, end - start));
    }

    public void Axpy(float alpha, Tensor x, Tensor y, long n)
    {
        Need(x, n, "axpy input"); Need(y, n, "axpy output");
        fixed (float* px = Cpu(x, "x").Data, py = Cpu(y, "y").Data)
        {
            var args = new BinaryArgs { A = px, Y = py, Alpha = alpha };
            _pool.For(checked((int)n), ElementGrain, &args, &AxpyChunk);
        }
    }

    private static void AxpyChunk(void* p, int start, int end)
    {
        ref var a = ref *(BinaryArgs*)p;
        var y = new Span<float>(a.Y + start, end - start);
        TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(a.A + start, end - start), a.Alpha, y, y);
    }

    private struct PenaltyArgs { public float* G, W, W0; public float C; }

    public void L1PenaltyGradient(Tensor grad, Tensor w, Tensor w0, float c, long n)
    {
        Need(grad, n, "L1 penalty gradient"); Need(w, n, "L1 penalty weights"); Need(w0, n, "L1 penalty original weights");
        fixed (float* pg = Cpu(grad, "grad").Data, pw = Cpu(w, "w").Data, p0 = Cpu(w0, "w0").Data)
        {
            var args = new PenaltyArgs { G = pg, W = pw, W0 = p0, C = c };
            _pool.For(checked((int)n), ElementGrain, &args, &L1PenaltyChunk);
        }
    }

    private static void L1PenaltyChunk(void* p, int start, int end)
    {
        ref var a = ref *(PenaltyArgs*)p;
        for (int i = start; i < end; i++)
        {
            float d = a.W[i] - a.W0[i];
            if (d != 0) a.G[i] += d > 0 ? a.C : -a.C;
        }
    }
}

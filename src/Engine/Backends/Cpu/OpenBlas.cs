using System.Runtime.InteropServices;

namespace WhereToEdit.Engine.Backends.Cpu;

/// <summary>cblas_sgemm from OpenBLAS (Debian: libopenblas0), bound lazily so a machine without it still runs.</summary>
internal static unsafe class OpenBlas
{
    private const int RowMajor = 101, NoTrans = 111, Trans = 112;
    private static readonly Lazy<Binding?> Loaded = new(Load);

    private sealed class Binding
    {
        public required delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> Sgemm;
        public required delegate* unmanaged<int, void> SetNumThreads;
        public required string Path;
    }

    /// <summary>Library names tried in order; the first that loads and exports cblas_sgemm wins.</summary>
    private static readonly string[] Candidates =
    [
        "libopenblas.so.0", "libopenblas.so", "libopenblasp-r0.3.21.so",
        "/usr/lib/x86_64-linux-gnu/libopenblas.so.0", "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
        "libopenblas.dylib", "libopenblas.dll",
    ];

    public static bool IsAvailable => Loaded.Value is not null;

    public static string? LibraryPath => Loaded.Value?.Path;

    private static Binding? Load()
    {
        foreach (string name in Candidates)
        {
            if (!NativeLibrary.TryLoad(name, out IntPtr handle)) continue;
            if (NativeLibrary.TryGetExport(handle, "cblas_sgemm", out IntPtr sgemm)
                && NativeLibrary.TryGetExport(handle, "openblas_set_num_threads", out IntPtr setThreads))
            {
                return new Binding
                {
                    Sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)sgemm,
                    SetNumThreads = (delegate* unmanaged<int, void>)setThreads,
                    Path = name,
                };
            }
            NativeLibrary.Free(handle);
        }
        return null;
    }

    public static void SetThreads(int threads) => Require().SetNumThreads(threads);

    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
                             float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
    {
        Require().Sgemm(RowMajor, transA ? Trans : NoTrans, transB ? Trans : NoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }

    private static Binding Require() => Loaded.Value
        ?? throw new InvalidOperationException("OpenBLAS (libopenblas.so.0, Debian package libopenblas0) could not be loaded; use the managed GEMM (WTE_GEMM=managed)");
}

using System.Reflection;
using System.Runtime.InteropServices;

namespace WhereToEdit.Engine.Backends.Cpu;

/// <summary>Arithmetic of the CPU backend's linear layers.</summary>
public enum CpuPrecision
{
    /// <summary>fp32 everywhere (the default; what the parity tests check).</summary>
    Fp32,
    /// <summary>
    /// Opt-in: the linear layers' x·Wᵀ GEMMs round x and W to bf16 and accumulate in fp32 (AVX512_BF16, through
    /// libwte_cpu.so); every other op, and every backward GEMM, stays fp32.
    /// </summary>
    Bf16,
}

/// <summary>
/// The bf16 GEMM of native/cpu/wte_cpu_bf16.cpp (libwte_cpu.so, built by CMake: native/build.sh). .NET 10 has no
/// AVX512_BF16 intrinsics, so this is the one CPU op that calls native code. Found next to the engine's assembly
/// (the build copies build/native/libwte_cpu.so there) or at the path in WTE_CPU_LIB.
/// </summary>
internal static unsafe class Bf16Gemm
{
    public const string LibraryFile = "libwte_cpu.so";
    private const int AbiVersion = 1;

    private static readonly Lazy<Api?> s_api = new(Load);
    private static string s_whyNot = "";

    /// <summary>Why the bf16 GEMM cannot run here (null when it can).</summary>
    public static string? WhyUnavailable => s_api.Value is null ? s_whyNot : null;

    public static bool IsAvailable => s_api.Value is not null;

    private static Api Fns => s_api.Value ?? throw new InvalidOperationException(s_whyNot);

    public static long PackedBWords(int n, int k) => Fns.PackedBWords(n, k);

    public static long PackedAWords(int m, int k) => Fns.PackedAWords(m, k);

    public static int Panels(int n) => (n + 31) / 32;

    public static int Tiles(int m) => (m + 11) / 12;

    public static void PackB(float* b, int ldb, int n, int k, uint* dst, int panel0, int panel1) => Fns.PackB(b, ldb, n, k, dst, panel0, panel1);

    public static void PackA(float* a, int lda, int m, int k, uint* dst, int tile0, int tile1) => Fns.PackA(a, lda, m, k, dst, tile0, tile1);

    public static void Panels(int m, int n, int k, uint* apack, uint* bpack, float* c, int ldc, int panel0, int panel1)
        => Fns.GemmPanels(m, n, k, apack, bpack, c, ldc, panel0, panel1);

    private sealed class Api
    {
        public delegate* unmanaged<int, int, long> PackedBWords, PackedAWords;
        public delegate* unmanaged<float*, int, int, int, uint*, int, int, void> PackB, PackA;
        public delegate* unmanaged<int, int, int, uint*, uint*, float*, int, int, int, void> GemmPanels;
    }

    private static Api? Load()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            s_whyNot = $"--precision bf16 needs Linux on x86-64 (this is {RuntimeInformation.OSDescription}, {RuntimeInformation.ProcessArchitecture})";
            return null;
        }
        string? env = Environment.GetEnvironmentVariable("WTE_CPU_LIB");
        string beside = Path.Combine(Path.GetDirectoryName(typeof(Bf16Gemm).Assembly.Location) is { Length: > 0 } dir ? dir : AppContext.BaseDirectory, LibraryFile);
        string path = string.IsNullOrWhiteSpace(env) ? beside : env;
        if (!File.Exists(path))
        {
            s_whyNot = string.IsNullOrWhiteSpace(env)
                ? $"--precision bf16 needs {LibraryFile}, not found at {beside}: build it with native/build.sh (CMake target wte_cpu), then rebuild the engine so it is copied there, or point WTE_CPU_LIB at it"
                : $"--precision bf16: WTE_CPU_LIB={env}: no such file";
            return null;
        }
        if (!NativeLibrary.TryLoad(path, out nint lib))
        {
            s_whyNot = $"--precision bf16: {path} could not be loaded";
            return null;
        }
        nint Export(string name) => NativeLibrary.TryGetExport(lib, name, out nint f) ? f
            : throw new InvalidOperationException($"--precision bf16: {path} lacks the export {name} (a library from another version?)");
        try
        {
            var version = (delegate* unmanaged<int>)Export("wte_cpu_abi_version");
            if (version() != AbiVersion)
            {
                s_whyNot = $"--precision bf16: {path} has ABI version {version()}, this engine needs {AbiVersion}: rebuild it with native/build.sh";
                return null;
            }
            var supported = (delegate* unmanaged<int>)Export("wte_cpu_bf16_supported");
            if (supported() == 0)
            {
                s_whyNot = "--precision bf16 needs a CPU with AVX-512F and AVX512_BF16 (this one lacks them); use --precision fp32";
                return null;
            }
            return new Api
            {
                PackedBWords = (delegate* unmanaged<int, int, long>)Export("wte_bf16_packed_b_words"),
                PackedAWords = (delegate* unmanaged<int, int, long>)Export("wte_bf16_packed_a_words"),
                PackB = (delegate* unmanaged<float*, int, int, int, uint*, int, int, void>)Export("wte_bf16_pack_b"),
                PackA = (delegate* unmanaged<float*, int, int, int, uint*, int, int, void>)Export("wte_bf16_pack_a"),
                GemmPanels = (delegate* unmanaged<int, int, int, uint*, uint*, float*, int, int, int, void>)Export("wte_bf16_gemm_panels"),
            };
        }
        catch (InvalidOperationException e)
        {
            s_whyNot = e.Message;
            return null;
        }
    }
}

using System.Reflection;
using System.Runtime.InteropServices;
using ILGPU;

namespace WhereToEdit.Engine.Backends.Gpu;

/// <summary>
/// Finds the CUDA driver library for ILGPU. ILGPU P/Invokes "cuda", which .NET resolves on Linux as libcuda.so;
/// a machine with only the driver (no CUDA toolkit or -dev package) has just libcuda.so.1, and ILGPU then silently
/// reports no device. When libcuda.so is absent but libcuda.so.1 loads, a DllImport resolver for ILGPU's assembly
/// maps "cuda" to it (installed once per process).
/// </summary>
internal static class CudaDriver
{
    /// <summary>The library name in ILGPU's CUDA DllImports on Linux and macOS.</summary>
    private const string IlgpuLinuxLibraryName = "cuda";

    private static readonly Lock Gate = new();
    private static bool _located;
    private static IntPtr _handle;

    /// <summary>What the driver was loaded from ("libcuda.so", "libcuda.so.1", or the platform's default).</summary>
    public static string LoadedFrom { get; private set; } = "not loaded";

    /// <summary>True when ILGPU will be able to load the driver; otherwise false and a reason naming what is missing.</summary>
    public static bool TryLocate(out string reason)
    {
        lock (Gate)
        {
            reason = "";
            if (_located) return true;
            if (!OperatingSystem.IsLinux())
            {
                // Windows (nvcuda.dll) and others: ILGPU's own probing.
                LoadedFrom = "platform default";
                return _located = true;
            }
            if (IsWsl())
            {
                // ILGPU installs its own resolver for /usr/lib/wsl/lib on WSL; a second resolver cannot be set.
                LoadedFrom = "WSL (ILGPU's resolver)";
                return _located = true;
            }
            if (NativeLibrary.TryLoad("libcuda.so", out _handle))
            {
                LoadedFrom = "libcuda.so";
                return _located = true;
            }
            if (!NativeLibrary.TryLoad("libcuda.so.1", out _handle))
            {
                reason = "no CUDA device: libcuda.so.1 not found (no NVIDIA driver on this machine)";
                return false;
            }
            try
            {
                NativeLibrary.SetDllImportResolver(typeof(Context).Assembly, Resolve);
            }
            catch (InvalidOperationException)
            {
                // Someone else already set ILGPU's resolver; theirs decides.
            }
            LoadedFrom = "libcuda.so.1";
            return _located = true;
        }
    }

    private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
        => libraryName == IlgpuLinuxLibraryName || libraryName == "libcuda.so" ? _handle : IntPtr.Zero;

    private static bool IsWsl()
    {
        try
        {
            return Directory.Exists("/usr/lib/wsl/lib")
                && File.ReadAllText("/proc/version").Contains("microsoft", StringComparison.OrdinalIgnoreCase);
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }
}

using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends;

/// <summary>Raised when a CUDA device was asked for and none answers.</summary>
public sealed class DeviceUnavailableException(string message) : InvalidOperationException(message);

/// <summary>Picks the backend for a `--device cpu|cuda|auto` choice.</summary>
public static class BackendFactory
{
    public static readonly string[] Devices = ["cpu", "cuda", "auto"];

    public static IBackend Create(string device, int threads = 0, GemmKind gemm = GemmKind.Auto, CpuPrecision precision = CpuPrecision.Fp32)
    {
        string d = device.Trim().ToLowerInvariant();
        if (precision != CpuPrecision.Fp32 && d != "cpu")
            throw new ArgumentException($"--precision {precision.ToString().ToLowerInvariant()} is a CPU backend option: use it with --device cpu");
        switch (d)
        {
            case "cpu":
                return new CpuBackend(new CpuBackendOptions { Threads = threads, Gemm = gemm, Precision = precision });
            case "cuda":
                return TryCreateCuda(out var gpu, out string reason)
                    ? gpu!
                    : throw new DeviceUnavailableException($"--device cuda: {reason}");
            case "auto":
                return TryCreateCuda(out var auto, out _) ? auto! : new CpuBackend(new CpuBackendOptions { Threads = threads, Gemm = gemm });
            default:
                throw new ArgumentException($"--device '{device}': expected one of {string.Join(", ", Devices)}");
        }
    }

    /// <summary>The device name a backend reports for benchmark tables ("cpu" or "cuda").</summary>
    public static string DeviceOf(IBackend backend) => backend is CpuBackend ? "cpu" : "cuda";

    private static bool TryCreateCuda(out IBackend? backend, out string reason)
    {
        bool ok = Gpu.GpuBackend.TryCreateCuda(out var gpu, out reason);
        backend = gpu;
        return ok;
    }
}

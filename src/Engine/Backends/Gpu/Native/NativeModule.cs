using System.Text;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// The native CUDA kernels of native/ (PTX embedded as "WhereToEdit.Native.wte_kernels.ptx"), loaded into ILGPU's own
// CUDA context through ILGPU's public CudaAPI and launched on the backend's stream. Everything that decides what a
// launch looks like — the kernel table, argument marshalling, launch shapes, index validation, status messages — is
// plain host code, so the tests check it against the PTX without a driver (tests/WhereToEdit.Tests/Gpu/NativeKernelTests.cs).
// The launch contract is native/README.md ("Kernel reference").
//
// This file: status messages, the embedded PTX, and the CUDA launcher (module loaded into ILGPU's context, entries
// resolved, launches on the backend's stream).

/// <summary>A failed CUDA driver call of the native-kernel path, named with the call and the kernel.</summary>
internal sealed class NativeCudaException(string call, string? kernel, CudaError status, string? detail)
    : Exception(CudaStatus.Message(call, kernel, status, detail))
{
    public string Call { get; } = call;
    public string? Kernel { get; } = kernel;
    public CudaError Status { get; } = status;
}

/// <summary>Turns CUDA driver statuses into messages: "cuModuleGetFunction(masked_rmsprop_rows): CUDA_ERROR_NOT_FOUND".</summary>
internal static class CudaStatus
{
    /// <summary>The driver API's name of a status (ILGPU's <see cref="CudaError"/> uses CUDA's names), or "CUDA error N".</summary>
    public static string Name(CudaError status) => Enum.IsDefined(status) ? status.ToString() : $"CUDA error {(int)status}";

    public static string Message(string call, string? kernel, CudaError status, string? detail)
    {
        var text = new StringBuilder(call);
        if (kernel is not null) text.Append('(').Append(kernel).Append(')');
        text.Append(": ").Append(Name(status));
        if (!string.IsNullOrWhiteSpace(detail)) text.Append(" (").Append(detail.Trim()).Append(')');
        return text.ToString();
    }

    /// <summary>Throws <see cref="NativeCudaException"/> unless <paramref name="status"/> is CUDA_SUCCESS.</summary>
    public static void Check(CudaError status, string call, string? kernel, string? detail = null)
    {
        if (status == CudaError.CUDA_SUCCESS) return;
        throw new NativeCudaException(call, kernel, status, detail ?? DriverDescription(status));
    }

    /// <summary>cuGetErrorString's text (needs the driver; only called after a driver call failed).</summary>
    private static string? DriverDescription(CudaError status)
    {
        try
        {
            string text = CudaAPI.CurrentAPI.GetErrorString(status);
            return string.IsNullOrWhiteSpace(text) ? null : text;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return null;   // no driver to ask (or it failed too): the status name alone
        }
    }
}

/// <summary>The embedded PTX module: the resource bytes, their text, and the entries with their <c>.param</c> types.</summary>
internal static class NativePtx
{
    public const string ResourceName = "WhereToEdit.Native.wte_kernels.ptx";

    public static byte[] ReadResource()
    {
        using var stream = typeof(NativePtx).Assembly.GetManifestResourceStream(ResourceName)
            ?? throw new InvalidOperationException($"embedded resource '{ResourceName}' is missing from {typeof(NativePtx).Assembly.GetName().Name}");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    /// <summary>
    /// The module image for cuModuleLoadData: ILGPU passes it as a UTF-8 string, which the marshaller terminates with
    /// the NUL byte the driver needs. Refuses bytes that would not survive that (non-ASCII, an embedded NUL).
    /// </summary>
    public static string ModuleText(byte[] bytes)
    {
        for (int i = 0; i < bytes.Length; i++)
            if (bytes[i] == 0 || bytes[i] > 0x7f)
                throw new InvalidDataException($"{ResourceName}: byte {i} is 0x{bytes[i]:x2}; the PTX must be NUL-free ASCII");
        return Encoding.ASCII.GetString(bytes);
    }

    /// <summary>Every <c>.entry</c> of the PTX with its parameter types in order (".u64", ".u32", ".f32", ...).</summary>
    public static IReadOnlyDictionary<string, string[]> ParseEntries(string ptx)
    {
        var entries = new Dictionary<string, string[]>(StringComparer.Ordinal);
        var lines = ptx.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i].Trim();
            int at = line.IndexOf(".entry ", StringComparison.Ordinal);
            if (at < 0 || line.StartsWith("//", StringComparison.Ordinal)) continue;
            string name = line[(at + ".entry ".Length)..].TrimEnd('(', ' ').Trim();
            var types = new List<string>();
            for (i++; i < lines.Length; i++)
            {
                string p = lines[i].Trim();
                if (p.StartsWith(')')) break;
                if (!p.StartsWith(".param ", StringComparison.Ordinal)) throw new InvalidDataException($"PTX entry {name}: unexpected line '{p}' in the parameter list");
                var parts = p.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                types.Add(parts[1]);
            }
            if (!entries.TryAdd(name, types.ToArray())) throw new InvalidDataException($"PTX entry {name} is defined twice");
        }
        return entries;
    }

    /// <summary>The <c>.target</c> architecture (e.g. 9.0 for sm_90), or null when there is none.</summary>
    public static (int Major, int Minor)? Target(string ptx)
    {
        foreach (var raw in ptx.Split('\n'))
        {
            string line = raw.Trim();
            if (!line.StartsWith(".target sm_", StringComparison.Ordinal)) continue;
            string digits = new(line[".target sm_".Length..].TakeWhile(char.IsDigit).ToArray());
            if (digits.Length >= 2 && int.TryParse(digits, out int sm)) return (sm / 10, sm % 10);
        }
        return null;
    }

    /// <summary>Throws unless every kernel of the table is an entry of the PTX with exactly the table's parameter types.</summary>
    public static void CheckSignatures(IReadOnlyDictionary<string, string[]> entries)
    {
        foreach (var kernel in NativeKernelTable.All)
        {
            string name = NativeKernelTable.EntryName(kernel);
            if (!entries.TryGetValue(name, out var types)) throw new InvalidDataException($"{ResourceName} has no entry {name}");
            var expected = NativeKernelTable.Parameters(kernel).Select(NativeKernelTable.PtxType).ToArray();
            if (!types.SequenceEqual(expected))
                throw new InvalidDataException($"{ResourceName}: {name} takes ({string.Join(", ", types)}), the launcher passes ({string.Join(", ", expected)})");
        }
    }
}

/// <summary>Runs native kernel launches: on a CUDA device (<see cref="CudaNativeKernels"/>) or emulated on the host (<see cref="HostNativeKernels"/>).</summary>
internal interface INativeLauncher
{
    /// <summary>Issues <paramref name="launch"/> in stream order after every op issued before it.</summary>
    void Launch(NativeLaunch launch);
}

/// <summary>
/// The native module on one CUDA accelerator: the embedded PTX loaded once into ILGPU's context (the driver JIT-compiles
/// it for the device), every entry resolved, and launches on the given stream (the backend's, so they are ordered with
/// every ILGPU kernel and host copy). Every driver call's status is checked.
/// </summary>
internal sealed unsafe class CudaNativeKernels : INativeLauncher, IDisposable
{
    private readonly CudaAccelerator _accelerator;
    private readonly CudaStream _stream;
    private readonly IntPtr[] _functions = new IntPtr[NativeKernelTable.All.Count];
    private IntPtr _module;

    public CudaNativeKernels(CudaAccelerator accelerator, CudaStream stream)
    {
        _accelerator = accelerator ?? throw new ArgumentNullException(nameof(accelerator));
        _stream = stream ?? throw new ArgumentNullException(nameof(stream));
        string ptx = NativePtx.ModuleText(NativePtx.ReadResource());
        NativePtx.CheckSignatures(NativePtx.ParseEntries(ptx));
        using var binding = accelerator.BindScoped();
        var api = CudaAPI.CurrentAPI;
        var status = api.LoadModule(out _module, ptx, out string? jitLog);
        CudaStatus.Check(status, "cuModuleLoadDataEx", "wte_kernels.ptx", string.IsNullOrWhiteSpace(jitLog?.TrimEnd('\0')) ? null : "JIT log: " + jitLog!.TrimEnd('\0'));
        foreach (var kernel in NativeKernelTable.All)
        {
            string name = NativeKernelTable.EntryName(kernel);
            CudaStatus.Check(api.GetModuleFunction(out _functions[(int)kernel], _module, name), "cuModuleGetFunction", name);
        }
    }

    public void Launch(NativeLaunch launch)
    {
        ArgumentNullException.ThrowIfNull(launch);
        launch.Validate();
        if (_module == IntPtr.Zero) throw new ObjectDisposedException(nameof(CudaNativeKernels));
        int n = launch.Args.Length;
        ulong* slots = stackalloc ulong[n];
        void** pointers = stackalloc void*[n];
        NativeArgMarshal.Marshal(launch.Args, slots, pointers);
        using var binding = _accelerator.BindScoped();
        var status = CudaAPI.CurrentAPI.LaunchKernel(_functions[(int)launch.Kernel],
            launch.Grid.X, launch.Grid.Y, launch.Grid.Z, launch.Block.X, launch.Block.Y, launch.Block.Z,
            0, _stream.StreamPtr, new IntPtr(pointers), IntPtr.Zero);
        CudaStatus.Check(status, "cuLaunchKernel", launch.Entry);
    }

    public void Dispose()
    {
        if (_module == IntPtr.Zero) return;
        using (_accelerator.BindScoped())
            _ = CudaAPI.CurrentAPI.DestroyModule(_module);   // nothing useful to do with a failure while disposing
        _module = IntPtr.Zero;
    }
}

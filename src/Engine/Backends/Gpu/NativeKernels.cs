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

/// <summary>Kind of one kernel parameter, as in native/kernels.txt: p = device pointer (.u64), i = int32 (.u32), f = float32 (.f32).</summary>
internal enum NativeParamKind { Pointer, Int32, Float32 }

/// <summary>The exported entries of the native PTX module.</summary>
internal enum NativeKernel
{
    MaskedRmsPropRows, MaskedRmsPropCols, MaskedRmsPropRowsCompact, MaskedRmsPropColsCompact,
    MaskedSgdRows, MaskedSgdCols, MaskedSgdRowsCompact, MaskedSgdColsCompact,
    Dw1RowsGather, Dw2ColsGather,
    PerSampleDeltaRows, PerSampleDeltaCols,
}

/// <summary>
/// Entry name and parameter list of every native kernel: the one table both the launcher (argument checks, marshalling)
/// and the tests (against the PTX's <c>.param</c> lists and native/kernels.txt) use.
/// </summary>
internal static class NativeKernelTable
{
    private const string RmsProp = "p p p p i i i f f f f f", Sgd = "p p p i i i f f", Gather = "p p p p i i i i i", PerSample = "p p p p p p i i i i";

    private static readonly (NativeKernel Kernel, string Entry, string Signature)[] Rows =
    [
        (NativeKernel.MaskedRmsPropRows, "masked_rmsprop_rows", RmsProp),
        (NativeKernel.MaskedRmsPropCols, "masked_rmsprop_cols", RmsProp),
        (NativeKernel.MaskedRmsPropRowsCompact, "masked_rmsprop_rows_compact", RmsProp),
        (NativeKernel.MaskedRmsPropColsCompact, "masked_rmsprop_cols_compact", RmsProp),
        (NativeKernel.MaskedSgdRows, "masked_sgd_rows", Sgd),
        (NativeKernel.MaskedSgdCols, "masked_sgd_cols", Sgd),
        (NativeKernel.MaskedSgdRowsCompact, "masked_sgd_rows_compact", Sgd),
        (NativeKernel.MaskedSgdColsCompact, "masked_sgd_cols_compact", Sgd),
        (NativeKernel.Dw1RowsGather, "dw1_rows_gather", Gather),
        (NativeKernel.Dw2ColsGather, "dw2_cols_gather", Gather),
        (NativeKernel.PerSampleDeltaRows, "per_sample_delta_rows", PerSample),
        (NativeKernel.PerSampleDeltaCols, "per_sample_delta_cols", PerSample),
    ];

    private static readonly NativeParamKind[][] Kinds = Rows.Select(r => r.Signature.Split(' ').Select(FromCode).ToArray()).ToArray();

    public static IReadOnlyList<NativeKernel> All { get; } = Rows.Select(r => r.Kernel).ToArray();

    public static string EntryName(NativeKernel kernel) => Rows[(int)kernel].Entry;

    public static IReadOnlyList<NativeParamKind> Parameters(NativeKernel kernel) => Kinds[(int)kernel];

    /// <summary>The parameter list in kernels.txt notation ("p p p i i i f f").</summary>
    public static string Signature(NativeKernel kernel) => Rows[(int)kernel].Signature;

    /// <summary>The 64×64-tile kernels, which trap unless blockDim == (16, 16, 1).</summary>
    public static bool IsTiled(NativeKernel kernel) => kernel >= NativeKernel.Dw1RowsGather;

    public static char Code(NativeParamKind kind) => kind switch
    {
        NativeParamKind.Pointer => 'p',
        NativeParamKind.Int32 => 'i',
        _ => 'f',
    };

    public static NativeParamKind FromCode(string code) => code switch
    {
        "p" => NativeParamKind.Pointer,
        "i" => NativeParamKind.Int32,
        "f" => NativeParamKind.Float32,
        _ => throw new FormatException($"unknown parameter kind '{code}' (expected p, i or f)"),
    };

    /// <summary>Bytes the driver reads for the parameter (the size of its PTX type).</summary>
    public static int SizeOf(NativeParamKind kind) => kind == NativeParamKind.Pointer ? 8 : 4;

    /// <summary>The PTX parameter type clang/nvcc emit for the kind.</summary>
    public static string PtxType(NativeParamKind kind) => kind switch
    {
        NativeParamKind.Pointer => ".u64",
        NativeParamKind.Int32 => ".u32",
        _ => ".f32",
    };
}

/// <summary>One kernel argument: an 8-byte device address, an int32 or a float32 (kept as raw bits).</summary>
internal readonly record struct NativeArg(NativeParamKind Kind, ulong Bits)
{
    public static NativeArg Pointer(IntPtr address) => new(NativeParamKind.Pointer, (ulong)address.ToInt64());

    public static NativeArg Int(int value) => new(NativeParamKind.Int32, (uint)value);

    public static NativeArg Float(float value) => new(NativeParamKind.Float32, BitConverter.SingleToUInt32Bits(value));

    public IntPtr AsPointer => Kind == NativeParamKind.Pointer ? new IntPtr((long)Bits) : throw Wrong(NativeParamKind.Pointer);

    public int AsInt => Kind == NativeParamKind.Int32 ? (int)(uint)Bits : throw Wrong(NativeParamKind.Int32);

    public float AsFloat => Kind == NativeParamKind.Float32 ? BitConverter.UInt32BitsToSingle((uint)Bits) : throw Wrong(NativeParamKind.Float32);

    private InvalidOperationException Wrong(NativeParamKind wanted) => new($"kernel argument is {Kind}, read as {wanted}");

    public override string ToString() => Kind switch
    {
        NativeParamKind.Pointer => $"0x{Bits:x}",
        NativeParamKind.Int32 => AsInt.ToString(System.Globalization.CultureInfo.InvariantCulture),
        _ => AsFloat.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
    };
}

/// <summary>
/// The <c>void** kernelParams</c> array of cuLaunchKernel: every argument gets its own 8-byte slot (pointer: the 8-byte
/// address; int32/float32: 4 bytes at the slot's start), and entry i points at slot i. The caller keeps both blocks
/// fixed (stackalloc) until the launch call returns; the driver copies the values during the call.
/// </summary>
internal static unsafe class NativeArgMarshal
{
    public static void Marshal(ReadOnlySpan<NativeArg> args, ulong* slots, void** pointers)
    {
        for (int i = 0; i < args.Length; i++)
        {
            ulong* slot = slots + i;
            *slot = 0;
            switch (args[i].Kind)
            {
                case NativeParamKind.Pointer: *slot = args[i].Bits; break;
                case NativeParamKind.Int32: *(int*)slot = args[i].AsInt; break;
                default: *(float*)slot = args[i].AsFloat; break;
            }
            pointers[i] = slot;
        }
    }

    /// <summary>Reads the arguments back from a kernelParams array as the driver would, given the kernel's parameter kinds.</summary>
    public static NativeArg[] Unmarshal(void** pointers, IReadOnlyList<NativeParamKind> kinds)
    {
        var args = new NativeArg[kinds.Count];
        for (int i = 0; i < args.Length; i++)
            args[i] = kinds[i] switch
            {
                NativeParamKind.Pointer => new NativeArg(NativeParamKind.Pointer, *(ulong*)pointers[i]),
                NativeParamKind.Int32 => NativeArg.Int(*(int*)pointers[i]),
                _ => NativeArg.Float(*(float*)pointers[i]),
            };
        return args;
    }

    /// <summary>The bytes the driver reads for each parameter of <paramref name="kernel"/> (sized by the kernel table): for tests.</summary>
    public static byte[][] Images(NativeKernel kernel, NativeArg[] args)
    {
        var kinds = NativeKernelTable.Parameters(kernel);
        if (args.Length != kinds.Count) throw new ArgumentException($"{NativeKernelTable.EntryName(kernel)}: {args.Length} arguments for {kinds.Count} parameters");
        ulong* slots = stackalloc ulong[args.Length];
        void** pointers = stackalloc void*[args.Length];
        Marshal(args, slots, pointers);
        var images = new byte[args.Length][];
        for (int i = 0; i < args.Length; i++)
            images[i] = new ReadOnlySpan<byte>(pointers[i], NativeKernelTable.SizeOf(kinds[i])).ToArray();
        return images;
    }
}

internal readonly record struct Dim3(int X, int Y, int Z)
{
    public long Count => (long)X * Y * Z;

    public override string ToString() => $"({X}, {Y}, {Z})";
}

/// <summary>One kernel launch: entry, grid, block (dynamic shared memory is always 0) and arguments in parameter order.</summary>
internal sealed record NativeLaunch(NativeKernel Kernel, Dim3 Grid, Dim3 Block, NativeArg[] Args)
{
    public string Entry => NativeKernelTable.EntryName(Kernel);

    /// <summary>
    /// Throws unless the arguments match the kernel's parameter list and the shape is one CUDA accepts (and, for the tiled
    /// kernels, the 16×16×1 block they require): a bad launch fails here, with the kernel's name, not in the driver.
    /// </summary>
    public void Validate()
    {
        var kinds = NativeKernelTable.Parameters(Kernel);
        if (Args.Length != kinds.Count)
            throw new ArgumentException($"{Entry}: {Args.Length} arguments for {kinds.Count} parameters ({NativeKernelTable.Signature(Kernel)})");
        for (int i = 0; i < kinds.Count; i++)
            if (Args[i].Kind != kinds[i])
                throw new ArgumentException($"{Entry}: argument {i} is {Args[i].Kind}, the kernel takes {kinds[i]}");
        if (Grid.X < 1 || Grid.Y < 1 || Grid.Z < 1 || Grid.Y > 65535 || Grid.Z > 65535)
            throw new ArgumentException($"{Entry}: grid {Grid} is not a valid CUDA grid");
        if (Block.X < 1 || Block.Y < 1 || Block.Z < 1 || Block.X > 1024 || Block.Y > 1024 || Block.Z > 64 || Block.Count > 1024)
            throw new ArgumentException($"{Entry}: block {Block} is not a valid CUDA block");
        if (NativeKernelTable.IsTiled(Kernel) && Block != new Dim3(16, 16, 1))
            throw new ArgumentException($"{Entry}: block {Block}; the tiled kernels need (16, 16, 1)");
        if (!NativeKernelTable.IsTiled(Kernel) && (Block.Z != 1 || Grid.Z != 1))
            throw new ArgumentException($"{Entry}: the elementwise kernels need blockDim.z == gridDim.z == 1");
        if (Kernel is NativeKernel.Dw1RowsGather or NativeKernel.Dw2ColsGather && Grid.Z != 1)
            throw new ArgumentException($"{Entry}: gridDim.z must be 1");
    }

    public override string ToString() => $"{Entry}<<<{Grid}, {Block}>>>({string.Join(", ", Args)})";
}

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

/// <summary>A kernel's trap (out-of-range or unsorted index, wrong block shape) in the host emulation.</summary>
internal sealed class NativeKernelTrapException(string kernel, string message) : InvalidOperationException($"{kernel}: trap: {message}");

/// <summary>
/// The host emulation of the native kernels, for ILGPU's CPU accelerator, whose buffer addresses are host addresses.
/// A launch is marshalled exactly as for the driver, read back from the kernelParams array by the kernel's parameter
/// kinds, and run by <see cref="NativeHostKernels"/> (the same IEEE operations in the same order as the CUDA source).
/// </summary>
internal sealed unsafe class HostNativeKernels(AcceleratorStream stream) : INativeLauncher
{
    public void Launch(NativeLaunch launch)
    {
        ArgumentNullException.ThrowIfNull(launch);
        launch.Validate();
        stream.Synchronize();   // the emulator's ILGPU kernels before this launch have finished
        int n = launch.Args.Length;
        ulong* slots = stackalloc ulong[n];
        void** pointers = stackalloc void*[n];
        NativeArgMarshal.Marshal(launch.Args, slots, pointers);
        NativeHostKernels.Run(launch.Kernel, NativeArgMarshal.Unmarshal(pointers, NativeKernelTable.Parameters(launch.Kernel)));
    }
}

/// <summary>
/// The native kernels as host code over raw addresses (the emulation and the CPU reference of the GPU check), following
/// native/wte_kernels.cu operation for operation: fp32, FMA only where the kernel writes one, the same trap conditions.
/// </summary>
internal static unsafe class NativeHostKernels
{
    public static void Run(NativeKernel kernel, NativeArg[] a)
    {
        string name = NativeKernelTable.EntryName(kernel);
        switch (kernel)
        {
            case NativeKernel.MaskedRmsPropRows or NativeKernel.MaskedRmsPropCols or NativeKernel.MaskedRmsPropRowsCompact or NativeKernel.MaskedRmsPropColsCompact:
                MaskedStep(name, kernel is NativeKernel.MaskedRmsPropCols or NativeKernel.MaskedRmsPropColsCompact,
                    kernel is NativeKernel.MaskedRmsPropRowsCompact or NativeKernel.MaskedRmsPropColsCompact,
                    (float*)a[0].AsPointer, (float*)a[1].AsPointer, (float*)a[2].AsPointer, (int*)a[3].AsPointer, a[4].AsInt, a[5].AsInt, a[6].AsInt,
                    rmsProp: true, a[7].AsFloat, a[8].AsFloat, a[9].AsFloat, a[10].AsFloat, a[11].AsFloat);
                break;
            case NativeKernel.MaskedSgdRows or NativeKernel.MaskedSgdCols or NativeKernel.MaskedSgdRowsCompact or NativeKernel.MaskedSgdColsCompact:
                MaskedStep(name, kernel is NativeKernel.MaskedSgdCols or NativeKernel.MaskedSgdColsCompact,
                    kernel is NativeKernel.MaskedSgdRowsCompact or NativeKernel.MaskedSgdColsCompact,
                    (float*)a[0].AsPointer, null, (float*)a[1].AsPointer, (int*)a[2].AsPointer, a[3].AsInt, a[4].AsInt, a[5].AsInt,
                    rmsProp: false, a[6].AsFloat, 0, 0, 0, a[7].AsFloat);
                break;
            case NativeKernel.Dw1RowsGather:
                Dw1RowsGather(name, (float*)a[0].AsPointer, (float*)a[1].AsPointer, (float*)a[2].AsPointer, (int*)a[3].AsPointer,
                    a[4].AsInt, a[5].AsInt, a[6].AsInt, a[7].AsInt, a[8].AsInt != 0);
                break;
            case NativeKernel.Dw2ColsGather:
                Dw2ColsGather(name, (float*)a[0].AsPointer, (float*)a[1].AsPointer, (float*)a[2].AsPointer, (int*)a[3].AsPointer,
                    a[4].AsInt, a[5].AsInt, a[6].AsInt, a[7].AsInt, a[8].AsInt != 0);
                break;
            default:
                PerSampleDelta(kernel == NativeKernel.PerSampleDeltaCols, (float*)a[0].AsPointer, (float*)a[1].AsPointer, (float*)a[2].AsPointer,
                    (float*)a[3].AsPointer, (float*)a[4].AsPointer, (float*)a[5].AsPointer, a[6].AsInt, a[7].AsInt, a[8].AsInt, a[9].AsInt);
                break;
        }
    }

    /// <summary>Selected index k: in [0, limit) and strictly above the previous one, else the kernel traps.</summary>
    private static int Checked(string kernel, int* idx, int k, int limit)
    {
        int i = idx[k];
        if ((uint)i >= (uint)limit || (k > 0 && idx[k - 1] >= i))
            throw new NativeKernelTrapException(kernel, $"index list entry {k} = {i} out of range [0, {limit}) or not strictly increasing");
        return i;
    }

    private static void MaskedStep(string kernel, bool columns, bool compact, float* p, float* v, float* grad, int* idx, int k, int rows, int cols,
                                   bool rmsProp, float lr, float alpha, float oneMinusAlpha, float eps, float weightDecay)
    {
        for (int kk = 0; kk < k; kk++)
        {
            int sel = Checked(kernel, idx, kk, columns ? cols : rows);
            for (long other = 0; other < (columns ? rows : cols); other++)
            {
                long r = columns ? other : sel, c = columns ? sel : other;
                long e = r * cols + c;
                float g = compact ? grad[columns ? r * k + kk : (long)kk * cols + c] : grad[e];
                float pv = p[e];
                if (weightDecay != 0f) g = g + weightDecay * pv;
                if (rmsProp)
                {
                    float va = alpha * v[e];
                    float vn = va + (oneMinusAlpha * g) * g;
                    v[e] = vn;
                    float denom = MathF.Sqrt(vn) + eps;
                    p[e] = pv - (lr * g) / denom;
                }
                else
                    p[e] = pv - lr * g;
            }
        }
    }

    private static int Gathered(string kernel, int* idx, int k, int limit)
    {
        int i = idx[k];
        if ((uint)i >= (uint)limit) throw new NativeKernelTrapException(kernel, $"gather index {k} = {i} out of range [0, {limit})");
        return i;
    }

    private static void Dw1RowsGather(string kernel, float* dW1c, float* dH, float* x, int* idx, int t, int d, int h, int k, bool accumulate)
    {
        for (int kk = 0; kk < k; kk++)
        {
            int hi = Gathered(kernel, idx, kk, h);
            for (int dd = 0; dd < d; dd++)
            {
                float acc = 0f;
                for (int tt = 0; tt < t; tt++) acc = MathF.FusedMultiplyAdd(dH[(long)tt * h + hi], x[(long)tt * d + dd], acc);
                float* o = dW1c + ((long)kk * d + dd);
                *o = accumulate ? *o + acc : acc;
            }
        }
    }

    private static void Dw2ColsGather(string kernel, float* dW2c, float* dY, float* a, int* idx, int t, int d, int h, int k, bool accumulate)
    {
        for (int kk = 0; kk < k; kk++)
        {
            int hi = Gathered(kernel, idx, kk, h);
            for (int dd = 0; dd < d; dd++)
            {
                float acc = 0f;
                for (int tt = 0; tt < t; tt++) acc = MathF.FusedMultiplyAdd(dY[(long)tt * d + dd], a[(long)tt * h + hi], acc);
                float* o = dW2c + ((long)dd * k + kk);
                *o = accumulate ? *o + acc : acc;
            }
        }
    }

    private static void PerSampleDelta(bool columns, float* output, float* x, float* w, float* delta, float* mask, float* bias, int s, int t, int inputs, int outputs)
    {
        for (long ss = 0; ss < s; ss++)
        {
            float* xs = x + ss * t * inputs, ds = delta + ss * outputs * inputs, os = output + ss * t * outputs;
            float* ms = mask == null ? null : mask + ss * (columns ? inputs : outputs);
            for (int tt = 0; tt < t; tt++)
                for (int o = 0; o < outputs; o++)
                {
                    float acc = 0f;
                    for (int i = 0; i < inputs; i++)
                    {
                        long e = (long)o * inputs + i;
                        float wv = w[e];
                        float m = ms == null ? 1f : ms[columns ? i : o];
                        float weff = m != 0f ? MathF.FusedMultiplyAdd(m, ds[e], wv) : wv;
                        acc = MathF.FusedMultiplyAdd(xs[(long)tt * inputs + i], weff, acc);
                    }
                    os[(long)tt * outputs + o] = bias == null ? acc : acc + bias[o];
                }
        }
    }
}

using System.Text;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// Kernel arguments and launches: how an argument is laid out in cuLaunchKernel's kernelParams array, and what one
// launch is (entry, grid, block, arguments).

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

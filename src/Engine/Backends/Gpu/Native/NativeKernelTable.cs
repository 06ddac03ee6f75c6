using System.Text;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// The native kernels' table: entry names and parameter lists (native/kernels.txt), the one source the launcher and
// the tests use. Overview of the native path: see NativeModule.cs.

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

using ILGPU.Runtime.Cuda;
using WhereToEdit.Engine.Backends.Gpu;
using WhereToEdit.Engine.Tensors;
using Xunit;
using Xunit.Abstractions;
using static WhereToEdit.Tests.Gpu.GpuTestData;

namespace WhereToEdit.Tests.Gpu;

/// <summary>
/// The native-kernel path without a driver: the embedded PTX, the kernel table against the PTX's parameter lists and
/// native/kernels.txt, argument marshalling, launch shapes, index lists, status messages, and — on the CPU emulator —
/// every native op through the backend, run by the host emulation, against the CPU backend.
/// </summary>
public sealed class NativeKernelTests(ITestOutputHelper output)
{
    private static string RepoFile(string relative)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "WhereToEdit.sln"))) return Path.Combine(dir.FullName, relative);
        throw new FileNotFoundException($"no WhereToEdit.sln above {AppContext.BaseDirectory}");
    }

    private static string Ptx => NativePtx.ModuleText(NativePtx.ReadResource());

    /// <summary>kernels.txt: entry → parameter codes.</summary>
    private static Dictionary<string, string> KernelsTxt() => File.ReadAllLines(RepoFile("native/kernels.txt"))
        .Select(l => l.Trim())
        .Where(l => l.Length > 0 && !l.StartsWith('#'))
        .Select(l => l.Split(' ', 2, StringSplitOptions.RemoveEmptyEntries))
        .ToDictionary(p => p[0], p => string.Join(' ', p[1].Split(' ', StringSplitOptions.RemoveEmptyEntries)));

    // ---- the embedded PTX ----------------------------------------------------------------------------

    [Fact]
    public void The_embedded_ptx_is_the_committed_file_and_complete_ptx_text()
    {
        var bytes = NativePtx.ReadResource();
        Assert.Equal(File.ReadAllBytes(RepoFile("src/Engine/Backends/Gpu/Native/wte_kernels.ptx")), bytes);
        string ptx = NativePtx.ModuleText(bytes);   // NUL-free ASCII (the marshaller appends the terminating NUL)
        var directives = ptx.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith("//", StringComparison.Ordinal)).ToArray();
        Assert.StartsWith(".version ", directives[0]);
        Assert.StartsWith(".target sm_", directives[1]);
        Assert.Equal(".address_size 64", directives[2]);
        Assert.Equal("}", directives[^1]);   // ends with the last entry's closing brace: not truncated
        Assert.Equal(ptx.Count(c => c == '{'), ptx.Count(c => c == '}'));
        Assert.Equal((9, 0), NativePtx.Target(ptx)!.Value);
        Assert.Throws<InvalidDataException>(() => NativePtx.ModuleText([.. bytes[..10], 0, .. bytes[10..]]));
    }

    [Fact]
    public void Every_entry_of_kernels_txt_is_in_the_ptx_with_the_listed_parameter_types_and_the_table_agrees()
    {
        var entries = NativePtx.ParseEntries(Ptx);
        var listed = KernelsTxt();
        Assert.Equal(listed.Keys.Order(StringComparer.Ordinal), entries.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(listed.Keys.Order(StringComparer.Ordinal), NativeKernelTable.All.Select(NativeKernelTable.EntryName).Order(StringComparer.Ordinal));
        foreach (var (name, codes) in listed)
        {
            var kinds = codes.Split(' ').Select(NativeKernelTable.FromCode).ToArray();
            Assert.Equal(kinds.Select(NativeKernelTable.PtxType), entries[name]);
            var kernel = NativeKernelTable.All.Single(k => NativeKernelTable.EntryName(k) == name);
            Assert.Equal(codes, NativeKernelTable.Signature(kernel));
            Assert.Equal(kinds, NativeKernelTable.Parameters(kernel));
            output.WriteLine($"{name,-28} {codes}   ({string.Join(", ", entries[name])})");
        }
        NativePtx.CheckSignatures(entries);   // what the loader checks before cuModuleLoadData
        var broken = entries.ToDictionary(e => e.Key, e => e.Value);
        broken["masked_sgd_rows"] = [.. broken["masked_sgd_rows"].Take(7)];
        Assert.Contains("masked_sgd_rows", Assert.Throws<InvalidDataException>(() => NativePtx.CheckSignatures(broken)).Message);
        broken["masked_sgd_rows"] = entries["masked_sgd_rows"];
        broken.Remove("dw1_rows_gather");
        Assert.Contains("no entry dw1_rows_gather", Assert.Throws<InvalidDataException>(() => NativePtx.CheckSignatures(broken)).Message);
    }

    // ---- marshalling and launch shapes ------------------------------------------------------------------

    private static IntPtr Addr(int i) => new(0x7f00_0000_1000L + 0x100L * i);

    /// <summary>One launch per kernel, from the builders the backend uses, with distinct recognisable values.</summary>
    internal static IEnumerable<NativeLaunch> AllLaunches()
    {
        foreach (var axis in new[] { MaskAxis.Rows, MaskAxis.Columns })
            foreach (bool compact in new[] { false, true })
            {
                yield return NativeLaunches.MaskedRmsProp(axis, compact, Addr(0), Addr(1), Addr(2), Addr(3), 307, 3072, 768, 1e-3f, 0.99f, 0.01f, 1e-8f, 0.5f)!;
                yield return NativeLaunches.MaskedSgd(axis, compact, Addr(0), Addr(1), Addr(2), 307, 3072, 3072, 0.25f, 0.125f)!;
            }
        yield return NativeLaunches.Dw1RowsGather(Addr(0), Addr(1), Addr(2), Addr(3), 197, 768, 3072, 307, accumulate: true)!;
        yield return NativeLaunches.Dw2ColsGather(Addr(0), Addr(1), Addr(2), Addr(3), 197, 768, 3072, 307, accumulate: false)!;
        yield return NativeLaunches.PerSampleDelta(MaskAxis.Rows, Addr(0), Addr(1), Addr(2), Addr(3), Addr(4), IntPtr.Zero, 8, 197, 768, 3072)!;
        yield return NativeLaunches.PerSampleDelta(MaskAxis.Columns, Addr(0), Addr(1), Addr(2), Addr(3), IntPtr.Zero, Addr(5), 8, 197, 3072, 768)!;
    }

    [Fact]
    public void Marshalled_arguments_match_each_kernels_ptx_parameter_list_in_count_order_and_size()
    {
        var entries = NativePtx.ParseEntries(Ptx);
        var launches = AllLaunches().ToArray();
        Assert.Equal(NativeKernelTable.All.Order(), launches.Select(l => l.Kernel).Order());
        foreach (var launch in launches)
        {
            launch.Validate();
            var ptxParams = entries[launch.Entry];
            var images = NativeArgMarshal.Images(launch.Kernel, launch.Args);
            Assert.Equal(ptxParams.Length, images.Length);
            for (int i = 0; i < images.Length; i++)
            {
                int expectedSize = ptxParams[i] == ".u64" ? 8 : 4;
                Assert.Equal(expectedSize, images[i].Length);
                // The bytes the driver reads are the argument's value in its parameter's type.
                switch (ptxParams[i])
                {
                    case ".u64": Assert.Equal((ulong)launch.Args[i].AsPointer.ToInt64(), BitConverter.ToUInt64(images[i])); break;
                    case ".u32": Assert.Equal(launch.Args[i].AsInt, BitConverter.ToInt32(images[i])); break;
                    case ".f32": Assert.Equal(launch.Args[i].AsFloat, BitConverter.ToSingle(images[i])); break;
                    default: Assert.Fail($"{launch.Entry}: unexpected PTX type {ptxParams[i]}"); break;
                }
            }
            output.WriteLine(launch.ToString());
        }
    }

    [Fact]
    public void Builders_put_each_value_in_the_parameter_native_README_documents()
    {
        var rms = NativeLaunches.MaskedRmsProp(MaskAxis.Rows, false, Addr(0), Addr(1), Addr(2), Addr(3), 5, 30, 7, 0.1f, 0.9f, 0.1f, 1e-8f, 0.01f)!;
        Assert.Equal([Addr(0), Addr(1), Addr(2), Addr(3)], rms.Args[..4].Select(a => a.AsPointer));
        Assert.Equal([5, 30, 7], rms.Args[4..7].Select(a => a.AsInt));
        Assert.Equal([0.1f, 0.9f, 0.1f, 1e-8f, 0.01f], rms.Args[7..].Select(a => a.AsFloat));
        var sgd = NativeLaunches.MaskedSgd(MaskAxis.Columns, true, Addr(0), Addr(1), Addr(2), 4, 9, 11, 0.5f, 0f)!;
        Assert.Equal(NativeKernel.MaskedSgdColsCompact, sgd.Kernel);
        Assert.Equal([4, 9, 11], sgd.Args[3..6].Select(a => a.AsInt));
        Assert.Equal([0.5f, 0f], sgd.Args[6..].Select(a => a.AsFloat));
        var dw1 = NativeLaunches.Dw1RowsGather(Addr(0), Addr(1), Addr(2), Addr(3), 10, 20, 30, 4, accumulate: true)!;
        Assert.Equal([10, 20, 30, 4, 1], dw1.Args[4..].Select(a => a.AsInt));   // T, D, H, K, accumulate
        var ps = NativeLaunches.PerSampleDelta(MaskAxis.Columns, Addr(0), Addr(1), Addr(2), Addr(3), IntPtr.Zero, IntPtr.Zero, 2, 3, 4, 5)!;
        Assert.Equal(NativeKernel.PerSampleDeltaCols, ps.Kernel);
        Assert.Equal([IntPtr.Zero, IntPtr.Zero], ps.Args[4..6].Select(a => a.AsPointer));   // null mask and bias
        Assert.Equal([2, 3, 4, 5], ps.Args[6..].Select(a => a.AsInt));                       // S, T, I, O
    }

    [Fact]
    public void Launch_shapes_follow_native_README_and_zero_size_launches_are_skipped()
    {
        // _rows: block (256,1,1), grid (ceil(cols/256), clamp1(K, 65535), 1).
        var rows = NativeLaunches.MaskedRmsProp(MaskAxis.Rows, false, Addr(0), Addr(1), Addr(2), Addr(3), 307, 3072, 768, 1, 1, 0, 1, 0)!;
        Assert.Equal((new Dim3(3, 307, 1), new Dim3(256, 1, 1)), (rows.Grid, rows.Block));
        var many = NativeLaunches.MaskedSgd(MaskAxis.Rows, false, Addr(0), Addr(1), Addr(2), 70000, 70000, 1, 1, 0)!;
        Assert.Equal(new Dim3(1, 65535, 1), many.Grid);
        // _cols: block (32,8,1), grid (clamp1(ceil(K/32)), clamp1(ceil(rows/8), 65535), 1).
        var cols = NativeLaunches.MaskedRmsProp(MaskAxis.Columns, true, Addr(0), Addr(1), Addr(2), Addr(3), 307, 768, 3072, 1, 1, 0, 1, 0)!;
        Assert.Equal((new Dim3(10, 96, 1), new Dim3(32, 8, 1)), (cols.Grid, cols.Block));
        // Tiled: block (16,16,1); dw1 grid (ceil(D/64), clamp1(ceil(K/64)), 1); dw2 (clamp1(ceil(K/64)), clamp1(ceil(D/64)), 1).
        var dw1 = NativeLaunches.Dw1RowsGather(Addr(0), Addr(1), Addr(2), Addr(3), 197, 768, 3072, 307, false)!;
        Assert.Equal((new Dim3(12, 5, 1), new Dim3(16, 16, 1)), (dw1.Grid, dw1.Block));
        var dw2 = NativeLaunches.Dw2ColsGather(Addr(0), Addr(1), Addr(2), Addr(3), 197, 768, 3072, 307, false)!;
        Assert.Equal(new Dim3(5, 12, 1), dw2.Grid);
        // Per-sample: grid (ceil(O/64), clamp1(ceil(T/64)), clamp1(S)).
        var ps = NativeLaunches.PerSampleDelta(MaskAxis.Rows, Addr(0), Addr(1), Addr(2), Addr(3), IntPtr.Zero, IntPtr.Zero, 70000, 197, 768, 3072)!;
        Assert.Equal(new Dim3(48, 4, 65535), ps.Grid);

        Assert.Null(NativeLaunches.MaskedRmsProp(MaskAxis.Rows, false, Addr(0), Addr(1), Addr(2), Addr(3), 0, 30, 7, 1, 1, 0, 1, 0));
        Assert.Null(NativeLaunches.MaskedSgd(MaskAxis.Columns, false, Addr(0), Addr(1), Addr(2), 3, 0, 7, 1, 0));
        Assert.Null(NativeLaunches.Dw1RowsGather(Addr(0), Addr(1), Addr(2), Addr(3), 5, 8, 9, 0, false));
        Assert.Null(NativeLaunches.Dw2ColsGather(Addr(0), Addr(1), Addr(2), Addr(3), 5, 0, 9, 3, false));
        Assert.Null(NativeLaunches.PerSampleDelta(MaskAxis.Rows, Addr(0), Addr(1), Addr(2), Addr(3), IntPtr.Zero, IntPtr.Zero, 0, 3, 4, 5));
        // An empty reduction still writes its output (zeros, or the bias): it launches.
        Assert.NotNull(NativeLaunches.Dw1RowsGather(Addr(0), Addr(1), Addr(2), Addr(3), 0, 8, 9, 3, false));
        Assert.NotNull(NativeLaunches.PerSampleDelta(MaskAxis.Rows, Addr(0), Addr(1), Addr(2), Addr(3), IntPtr.Zero, Addr(4), 2, 3, 0, 5));
        Assert.Throws<ArgumentException>(() => NativeLaunches.MaskedSgd(MaskAxis.Rows, false, Addr(0), Addr(1), Addr(2), 31, 30, 7, 1, 0));
    }

    [Fact]
    public void Validate_rejects_launches_the_driver_or_the_kernels_would_reject()
    {
        var good = NativeLaunches.Dw1RowsGather(Addr(0), Addr(1), Addr(2), Addr(3), 10, 20, 30, 4, false)!;
        Assert.Contains("(16, 16, 1)", Assert.Throws<ArgumentException>(() => (good with { Block = new Dim3(32, 8, 1) }).Validate()).Message);
        Assert.Contains("gridDim.z", Assert.Throws<ArgumentException>(() => (good with { Grid = good.Grid with { Z = 2 } }).Validate()).Message);
        Assert.Contains("argument 4", Assert.Throws<ArgumentException>(() => (good with { Args = [.. good.Args[..4], NativeArg.Float(10), .. good.Args[5..]] }).Validate()).Message);
        Assert.Contains("8 arguments for 9", Assert.Throws<ArgumentException>(() => (good with { Args = good.Args[..8] }).Validate()).Message);
        var sgd = NativeLaunches.MaskedSgd(MaskAxis.Rows, false, Addr(0), Addr(1), Addr(2), 3, 30, 7, 1, 0)!;
        Assert.Throws<ArgumentException>(() => (sgd with { Grid = new Dim3(1, 70000, 1) }).Validate());
        Assert.Throws<ArgumentException>(() => (sgd with { Block = new Dim3(2048, 1, 1) }).Validate());
        Assert.Throws<ArgumentException>(() => (sgd with { Block = new Dim3(32, 8, 2) }).Validate());
        Assert.Throws<ArgumentException>(() => (sgd with { Grid = new Dim3(0, 1, 1) }).Validate());
    }

    // ---- index lists and status messages ---------------------------------------------------------------------

    [Fact]
    public void Index_lists_from_masks_select_every_nonzero_entry_and_validation_rejects_bad_lists()
    {
        Assert.Equal([1, 3, 4, 6], NativeIndexList.FromMask([0f, 1f, 0f, 2f, float.NaN, -0f, -1f]));
        Assert.Empty(NativeIndexList.FromMask([0f, -0f]));
        Assert.Empty(NativeIndexList.FromMask([]));
        NativeIndexList.Validate([0, 2, 9], 10, "ok");
        NativeIndexList.Validate([], 0, "empty");
        Assert.Throws<ArgumentOutOfRangeException>(() => NativeIndexList.Validate([0, 10], 10, "too big"));
        Assert.Throws<ArgumentOutOfRangeException>(() => NativeIndexList.Validate([-1, 3], 10, "negative"));
        Assert.Contains("sorted and distinct", Assert.Throws<ArgumentException>(() => NativeIndexList.Validate([3, 3], 10, "repeated")).Message);
        Assert.Throws<ArgumentException>(() => NativeIndexList.Validate([4, 2], 10, "unsorted"));
    }

    [Fact]
    public void Cuda_statuses_become_messages_naming_the_call_and_the_kernel()
    {
        Assert.Equal("cuModuleGetFunction(masked_rmsprop_rows): CUDA_ERROR_NOT_FOUND",
            CudaStatus.Message("cuModuleGetFunction", "masked_rmsprop_rows", CudaError.CUDA_ERROR_NOT_FOUND, null));
        Assert.Equal("cuLaunchKernel(dw1_rows_gather): CUDA_ERROR_LAUNCH_FAILED (unspecified launch failure)",
            CudaStatus.Message("cuLaunchKernel", "dw1_rows_gather", CudaError.CUDA_ERROR_LAUNCH_FAILED, " unspecified launch failure "));
        Assert.Equal("cuModuleLoadDataEx(wte_kernels.ptx): CUDA_ERROR_INVALID_PTX (JIT log: ptxas fatal)",
            CudaStatus.Message("cuModuleLoadDataEx", "wte_kernels.ptx", CudaError.CUDA_ERROR_INVALID_PTX, "JIT log: ptxas fatal"));
        Assert.Equal("cuInit: CUDA error 123456", CudaStatus.Message("cuInit", null, (CudaError)123456, null));
        CudaStatus.Check(CudaError.CUDA_SUCCESS, "cuLaunchKernel", "masked_sgd_rows");
        var e = Assert.Throws<NativeCudaException>(() => CudaStatus.Check(CudaError.CUDA_ERROR_NOT_FOUND, "cuModuleGetFunction", "masked_sgd_cols", "named symbol not found"));
        Assert.Equal("cuModuleGetFunction(masked_sgd_cols): CUDA_ERROR_NOT_FOUND (named symbol not found)", e.Message);
        Assert.Equal((CudaError.CUDA_ERROR_NOT_FOUND, "cuModuleGetFunction", "masked_sgd_cols"), (e.Status, e.Call, e.Kernel));
        // Without a detail it asks the driver for its text, and does without when there is no driver.
        var bare = Assert.Throws<NativeCudaException>(() => CudaStatus.Check(CudaError.CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel", "masked_sgd_rows"));
        Assert.StartsWith("cuLaunchKernel(masked_sgd_rows): CUDA_ERROR_INVALID_VALUE", bare.Message);
    }

    // ---- the host emulation of the kernels themselves ----------------------------------------------------------

    [Fact]
    public unsafe void The_host_emulation_traps_like_the_kernels_on_bad_index_lists()
    {
        var p = Random(1, 12); var v = new float[12]; var g = Random(2, 12);
        int[] unsorted = [2, 1];
        fixed (float* pp = p, pv = v, pg = g)
        fixed (int* pi = unsorted)
        {
            var launch = NativeLaunches.MaskedRmsProp(MaskAxis.Rows, false, (IntPtr)pp, (IntPtr)pv, (IntPtr)pg, (IntPtr)pi, 2, 3, 4, 0.1f, 0.9f, 0.1f, 1e-8f, 0)!;
            Assert.Contains("trap", Assert.Throws<NativeKernelTrapException>(() => NativeHostKernels.Run(launch.Kernel, launch.Args)).Message);
            var gather = NativeLaunches.Dw1RowsGather((IntPtr)pv, (IntPtr)pg, (IntPtr)pp, (IntPtr)pi, 1, 2, 1, 2, false)!;   // index 2 ≥ H = 1
            Assert.Throws<NativeKernelTrapException>(() => NativeHostKernels.Run(gather.Kernel, gather.Args));
        }
    }
}

/// <summary>The native ops through <see cref="GpuBackend"/> on the CPU emulator (host emulation of the kernels) against the CPU backend.</summary>
[Collection(GpuEmulatorCollection.Name)]
public sealed class NativeEmulationTests(GpuEmulatorFixture f, ITestOutputHelper output)
{
    private Pair P(string name, float[] data, params int[] shape) => new(f, name, data, shape);

    private Pair Rand(string name, int seed, params int[] shape)
    {
        int n = 1;
        foreach (int d in shape) n *= d;
        return P(name, Random(seed, n), shape);
    }

    private void WithNative(Action body)
    {
        Assert.False(f.Gpu.NativeMaskedOptimizers);   // the emulator keeps the ILGPU kernels by default
        f.Gpu.NativeMaskedOptimizers = true;
        try
        {
            body();
        }
        finally
        {
            f.Gpu.NativeMaskedOptimizers = false;
        }
    }

    [Fact]
    public void The_emulator_reports_host_emulation()
    {
        Assert.True(f.Gpu.NativeKernelsAvailable);
        Assert.Equal("host emulation (CPU accelerator)", f.Gpu.NativeKernelsStatus);
        Assert.IsType<HostNativeKernels>(f.Gpu.NativeLauncher);
    }

    [Theory]
    [InlineData("rmsprop", MaskAxis.Rows)]
    [InlineData("rmsprop", MaskAxis.Columns)]
    [InlineData("sgd", MaskAxis.Rows)]
    [InlineData("sgd", MaskAxis.Columns)]
    public void Masked_steps_through_the_native_path_match_the_cpu_backend_and_follow_mask_changes(string optimizer, MaskAxis axis)
    {
        const int rows = 9, cols = 70;
        int length = axis == MaskAxis.Rows ? rows : cols;
        var first = Enumerable.Range(0, length).Select(i => i % 3 == 1 ? 1f : 0f).ToArray();
        var second = Enumerable.Range(0, length).Select(i => i % 4 == 0 ? 1f : 0f).ToArray();
        using var param = Rand("w", 200, rows, cols);
        using var grad = Rand("g", 201, rows, cols);
        using var state = P("v", Random(202, rows * cols).Select(x => x * x * 0.01f).ToArray(), rows, cols);
        using var mask = P("mask", first, length);
        UpdateMask M(Tensor m) => axis == MaskAxis.Rows ? UpdateMask.RowMask(m, rows, cols) : UpdateMask.ColumnMask(m, rows, cols);
        var everSelected = new bool[length];
        WithNative(() =>
        {
            for (int step = 0; step < 4; step++)
            {
                if (step == 2)
                {
                    // A new mask through a host copy: the cached index list must be rebuilt.
                    mask.Cpu.CopyFrom(second);
                    mask.Gpu.CopyFrom(second);
                }
                var current = step < 2 ? first : second;
                for (int i = 0; i < length; i++) everSelected[i] |= current[i] != 0;
                var list = f.Gpu.MaskIndexList(mask.Gpu);
                Assert.Equal(NativeIndexList.FromMask(current), list.Indices.ToArray());
                foreach (bool gpu in new[] { false, true })
                {
                    var be = gpu ? (IBackend)f.Gpu : f.Cpu;
                    Tensor p = gpu ? param.Gpu : param.Cpu, g = gpu ? grad.Gpu : grad.Cpu, v = gpu ? state.Gpu : state.Cpu;
                    if (optimizer == "sgd") be.SgdStep(p, g, 0.1f, 0.01f, M(gpu ? mask.Gpu : mask.Cpu));
                    else be.RmsPropStep(p, g, v, 1e-2f, 0.99f, 1e-8f, 0.01f, M(gpu ? mask.Gpu : mask.Cpu));
                }
                Assert.Same(list, f.Gpu.MaskIndexList(mask.Gpu));   // the step only read the mask: the list stays cached
            }
        });
        Compare.Check(output, $"{optimizer}/{axis} weights", param.Gpu.ToArray(), param.Cpu.ToArray(), 1e-6);
        Compare.Check(output, $"{optimizer}/{axis} state", state.Gpu.ToArray(), state.Cpu.ToArray(), 1e-6);
        var after = param.Gpu.ToArray();
        var v1 = state.Gpu.ToArray();
        for (int i = 0; i < after.Length; i++)
        {
            int unit = axis == MaskAxis.Rows ? i / cols : i % cols;
            if (everSelected[unit]) continue;
            Assert.True(BitEqual(after[i], param.Host[i]), $"weight {i} outside the mask changed");
            Assert.True(BitEqual(v1[i], state.Host[i]), $"state {i} outside the mask changed");
        }
    }

    [Fact]
    public void The_mask_index_list_is_rebuilt_after_an_op_writes_the_mask()
    {
        using var mask = P("mask", [0f, 1f, 0f, 1f], 4);
        var list = f.Gpu.MaskIndexList(mask.Gpu);
        Assert.Equal([1, 3], list.Indices.ToArray());
        Assert.Same(list, f.Gpu.MaskIndexList(mask.Gpu));
        f.Gpu.Fill(mask.Gpu, 1f);
        var filled = f.Gpu.MaskIndexList(mask.Gpu);
        Assert.NotSame(list, filled);
        Assert.Equal([0, 1, 2, 3], filled.Indices.ToArray());
        _ = ((GpuTensor)mask.Gpu).Buffer;   // a hand-out of the raw buffer may be a write too
        Assert.NotSame(filled, f.Gpu.MaskIndexList(mask.Gpu));
        Assert.Throws<ArgumentOutOfRangeException>(() => f.Gpu.CreateIndexList([0, 4], 4));
        Assert.Throws<ArgumentException>(() => f.Gpu.MaskIndexList(mask.Cpu));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Gather_weight_gradients_match_the_full_gradient_gemm_gathered(bool accumulate)
    {
        const int tokens = 37, dim = 20, hidden = 70;
        int[] idx = [0, 3, 4, 17, 40, 69];
        int k = idx.Length;
        using var dH = Rand("dH", 210, tokens, hidden);
        using var x = Rand("X", 211, tokens, dim);
        using var dY = Rand("dY", 212, tokens, dim);
        using var a = Rand("A", 213, tokens, hidden);
        using var list = f.Gpu.CreateIndexList(idx, hidden);
        var init1 = Random(214, k * dim);
        var init2 = Random(215, dim * k);
        using var dW1c = f.Gpu.FromHost("dW1c", init1, k, dim);
        using var dW2c = f.Gpu.FromHost("dW2c", init2, dim, k);
        f.Gpu.GatherWeightGradientRows(dH.Gpu, x.Gpu, list, dW1c, tokens, dim, hidden, accumulate);
        f.Gpu.GatherWeightGradientColumns(dY.Gpu, a.Gpu, list, dW2c, tokens, dim, hidden, accumulate);

        // Reference: the full gradients by the CPU backend's GEMM (as the backward computes them), then gathered.
        using var full1 = f.Cpu.Allocate("dW1", hidden, dim);
        using var full2 = f.Cpu.Allocate("dW2", dim, hidden);
        f.Cpu.Gemm(true, false, hidden, dim, tokens, 1f, dH.Cpu, 0, hidden, x.Cpu, 0, dim, 0f, full1, 0, dim);
        f.Cpu.Gemm(true, false, dim, hidden, tokens, 1f, dY.Cpu, 0, dim, a.Cpu, 0, hidden, 0f, full2, 0, hidden);
        var f1 = full1.ToArray();
        var f2 = full2.ToArray();
        var e1 = new float[k * dim];
        var e2 = new float[dim * k];
        for (int kk = 0; kk < k; kk++)
            for (int d = 0; d < dim; d++)
            {
                e1[kk * dim + d] = f1[idx[kk] * dim + d] + (accumulate ? init1[kk * dim + d] : 0f);
                e2[d * k + kk] = f2[d * hidden + idx[kk]] + (accumulate ? init2[d * k + kk] : 0f);
            }
        Compare.Check(output, $"dw1_rows_gather (accumulate {accumulate})", dW1c.ToArray(), e1, 1e-5);
        Compare.Check(output, $"dw2_cols_gather (accumulate {accumulate})", dW2c.ToArray(), e2, 1e-5);

        Assert.Throws<ArgumentException>(() => f.Gpu.GatherWeightGradientRows(dH.Gpu, x.Gpu, list, dH.Gpu, tokens, dim, hidden, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => f.Gpu.GatherWeightGradientRows(dH.Gpu, x.Gpu, list, dW1c, tokens, dim, 40, false));
        Assert.Throws<ArgumentException>(() => f.Gpu.GatherWeightGradientColumns(dY.Gpu, a.Gpu, list, dW2c, tokens + 1, dim, hidden, false));
    }

    [Theory]
    [InlineData(MaskAxis.Rows)]
    [InlineData(MaskAxis.Columns)]
    public void Compact_steps_from_gathered_gradients_equal_the_masked_full_gradient_steps(MaskAxis axis)
    {
        const int rows = 12, cols = 30, tokens = 9;
        int hidden = axis == MaskAxis.Rows ? rows : cols, dim = axis == MaskAxis.Rows ? cols : rows;
        int[] idx = [1, 2, 7, hidden - 1];
        var maskValues = new float[hidden];
        foreach (int i in idx) maskValues[i] = 1f;
        using var mask = P("mask", maskValues, hidden);
        using var list = f.Gpu.CreateIndexList(idx, hidden);
        using var wRms = Rand("w", 220, rows, cols);
        using var wSgd = Rand("w2", 220, rows, cols);
        using var v = P("v", Random(221, rows * cols).Select(x => x * x).ToArray(), rows, cols);
        using var dOut = Rand("dOut", 222, tokens, axis == MaskAxis.Rows ? hidden : dim);
        using var input = Rand("input", 223, tokens, axis == MaskAxis.Rows ? dim : hidden);
        using var fullGrad = f.Cpu.Allocate("grad", rows, cols);
        using var compact = f.Gpu.Allocate("compact", axis == MaskAxis.Rows ? idx.Length : rows, axis == MaskAxis.Rows ? cols : idx.Length);
        if (axis == MaskAxis.Rows)
        {
            f.Cpu.Gemm(true, false, rows, cols, tokens, 1f, dOut.Cpu, 0, hidden, input.Cpu, 0, cols, 0f, fullGrad, 0, cols);
            f.Gpu.GatherWeightGradientRows(dOut.Gpu, input.Gpu, list, compact, tokens, dim, hidden, false);
        }
        else
        {
            f.Cpu.Gemm(true, false, rows, cols, tokens, 1f, dOut.Cpu, 0, dim, input.Cpu, 0, cols, 0f, fullGrad, 0, cols);
            f.Gpu.GatherWeightGradientColumns(dOut.Gpu, input.Gpu, list, compact, tokens, dim, hidden, false);
        }
        var m = axis == MaskAxis.Rows ? UpdateMask.RowMask(mask.Cpu, rows, cols) : UpdateMask.ColumnMask(mask.Cpu, rows, cols);
        for (int step = 0; step < 2; step++)
        {
            f.Cpu.RmsPropStep(wRms.Cpu, fullGrad, v.Cpu, 1e-2f, 0.99f, 1e-8f, 0f, m);
            f.Gpu.MaskedRmsPropCompact(axis, wRms.Gpu, compact, v.Gpu, list, rows, cols, 1e-2f, 0.99f, 1e-8f, 0f);
            f.Cpu.SgdStep(wSgd.Cpu, fullGrad, 0.1f, 0.01f, m);
            f.Gpu.MaskedSgdCompact(axis, wSgd.Gpu, compact, list, rows, cols, 0.1f, 0.01f);
        }
        Compare.Check(output, $"compact rmsprop {axis}", wRms.Gpu.ToArray(), wRms.Cpu.ToArray(), 1e-5);
        Compare.Check(output, $"compact rmsprop state {axis}", v.Gpu.ToArray(), v.Cpu.ToArray(), 1e-5);
        Compare.Check(output, $"compact sgd {axis}", wSgd.Gpu.ToArray(), wSgd.Cpu.ToArray(), 1e-5);
        var w = wRms.Gpu.ToArray();
        for (int i = 0; i < w.Length; i++)
            if (maskValues[axis == MaskAxis.Rows ? i / cols : i % cols] == 0) Assert.True(BitEqual(w[i], wRms.Host[i]), $"weight {i} outside the selection changed");
        Assert.Throws<ArgumentException>(() => f.Gpu.MaskedSgdCompact(axis, wSgd.Gpu, wSgd.Gpu, list, rows, cols, 0.1f, 0f));
    }

    [Theory]
    [InlineData(MaskAxis.Rows, true, true)]
    [InlineData(MaskAxis.Columns, true, false)]
    [InlineData(MaskAxis.Rows, false, false)]
    [InlineData(MaskAxis.Columns, false, true)]
    public void Per_sample_delta_apply_matches_gemms_with_each_samples_effective_weight(MaskAxis axis, bool withMask, bool withBias)
    {
        const int samples = 3, tokens = 5, inF = 13, outF = 11;
        int maskLen = axis == MaskAxis.Rows ? outF : inF;
        var xHost = Random(230, samples * tokens * inF);
        var wHost = Random(231, outF * inF);
        var dHost = Random(232, samples * outF * inF, 0.1f);
        var mHost = Enumerable.Range(0, samples * maskLen).Select(i => i % 3 == 0 ? 0f : (i % 3 == 1 ? 1f : 0.5f)).ToArray();
        var bHost = Random(233, outF);
        // Where the mask is 0 the delta must not be read: poison it.
        if (withMask)
            for (int s = 0; s < samples; s++)
                for (int o = 0; o < outF; o++)
                    for (int i = 0; i < inF; i++)
                        if (mHost[s * maskLen + (axis == MaskAxis.Rows ? o : i)] == 0) dHost[(s * outF + o) * inF + i] = float.NaN;
        using var x = f.Gpu.FromHost("X", xHost, samples, tokens, inF);
        using var w = f.Gpu.FromHost("W", wHost, outF, inF);
        using var delta = f.Gpu.FromHost("delta", dHost, samples, outF, inF);
        using var mask = f.Gpu.FromHost("mask", mHost, samples, maskLen);
        using var bias = f.Gpu.FromHost("bias", bHost, outF);
        using var result = f.Gpu.FromHost("out", Enumerable.Repeat(float.NaN, samples * tokens * outF).ToArray(), samples, tokens, outF);
        f.Gpu.PerSampleDeltaLinear(axis, result, x, w, delta, withMask ? mask : null, withBias ? bias : null, samples, tokens, inF, outF);

        var expected = new float[samples * tokens * outF];
        for (int s = 0; s < samples; s++)
        {
            var weff = new float[outF * inF];
            for (int o = 0; o < outF; o++)
                for (int i = 0; i < inF; i++)
                {
                    float m = withMask ? mHost[s * maskLen + (axis == MaskAxis.Rows ? o : i)] : 1f;
                    weff[o * inF + i] = m != 0 ? wHost[o * inF + i] + m * dHost[(s * outF + o) * inF + i] : wHost[o * inF + i];
                }
            using var xs = f.Cpu.FromHost("xs", xHost.AsSpan(s * tokens * inF, tokens * inF), tokens, inF);
            using var ws = f.Cpu.FromHost("weff", weff, outF, inF);
            using var ys = f.Cpu.Allocate("ys", tokens, outF);
            f.Cpu.Gemm(false, true, tokens, outF, inF, 1f, xs, 0, inF, ws, 0, inF, 0f, ys, 0, outF);
            if (withBias)
            {
                using var bs = f.Cpu.FromHost("b", bHost, outF);
                f.Cpu.AddBias(ys, bs, tokens, outF);
            }
            ys.ToArray().CopyTo(expected, s * tokens * outF);
        }
        Compare.Check(output, $"per_sample_delta {axis} mask {withMask} bias {withBias}", result.ToArray(), expected, 1e-5);
        Assert.Throws<ArgumentException>(() => f.Gpu.PerSampleDeltaLinear(axis, x, x, w, delta, null, null, samples, tokens, inF, outF));
        Assert.Throws<ArgumentException>(() => f.Gpu.PerSampleDeltaLinear(axis, result, x, w, delta, null, null, samples + 1, tokens, inF, outF));
    }
}

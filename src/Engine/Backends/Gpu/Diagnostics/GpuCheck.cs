using WhereToEdit.Engine.Perf;
using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Serialization;
using ILGPU.Runtime.Cuda;
using WhereToEdit.Engine.Backends.Reference;
using WhereToEdit.Engine.Backends.Gpu;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu.Diagnostics;

/// <summary>What the GPU check ran on.</summary>
public sealed record GpuDeviceInfo
{
    [JsonPropertyName("name")] public required string Name { get; init; }
    [JsonPropertyName("compute_capability")] public required string ComputeCapability { get; init; }
    [JsonPropertyName("multiprocessors")] public int Multiprocessors { get; init; }
    [JsonPropertyName("memory_gib")] public double MemoryGiB { get; init; }
    /// <summary>The CUDA version the driver supports (cuDriverGetVersion).</summary>
    [JsonPropertyName("cuda")] public required string Cuda { get; init; }
    /// <summary>The NVIDIA kernel driver's version (/proc/driver/nvidia/version or nvidia-smi).</summary>
    [JsonPropertyName("driver")] public required string Driver { get; init; }
    [JsonPropertyName("ilgpu")] public required string Ilgpu { get; init; }
    [JsonPropertyName("dotnet")] public required string Dotnet { get; init; }
    [JsonPropertyName("native_kernels")] public required string NativeKernels { get; init; }
    [JsonPropertyName("cpu_threads")] public int CpuThreads { get; init; }
    [JsonPropertyName("date_utc")] public required string DateUtc { get; init; }
}

/// <summary>One timing of the GPU check.</summary>
public sealed record GpuMeasurement
{
    [JsonPropertyName("name")] public required string Name { get; init; }
    [JsonPropertyName("value")] public double Value { get; init; }
    [JsonPropertyName("unit")] public required string Unit { get; init; }
    [JsonPropertyName("detail")] public string? Detail { get; init; }
}

public sealed record GpuCheckResult
{
    [JsonPropertyName("device")] public required GpuDeviceInfo Device { get; init; }
    [JsonPropertyName("parity")] public required IReadOnlyList<ParityCheck> Parity { get; init; }
    [JsonPropertyName("timings")] public required IReadOnlyList<GpuMeasurement> Timings { get; init; }
    /// <summary>Timings that could not be taken, with the reason (e.g. no libcublas).</summary>
    [JsonPropertyName("notes")] public required IReadOnlyList<string> Notes { get; init; }
    [JsonPropertyName("parity_passed")] public bool ParityPassed => Parity.All(p => p.Passed);
}

public sealed record GpuCheckOptions
{
    public int DeviceIndex { get; init; }
    public bool Parity { get; init; } = true;
    public bool Timings { get; init; } = true;
    /// <summary>Minimum time per measurement.</summary>
    public double Seconds { get; init; } = 2;
    /// <summary>CPU reference threads (0: all cores).</summary>
    public int CpuThreads { get; init; }
    /// <summary>SGEMM size (square).</summary>
    public int GemmSize { get; init; } = 4096;
    public string VitModel { get; init; } = "vit_base_patch16_224";
    /// <summary>A config to time instead of the <see cref="VitModel"/> preset (tests use a tiny one); VitModel then only names it.</summary>
    public VitConfig? VitConfig { get; init; }
    public int ForwardBatch { get; init; } = 64;
    public int TrainBatch { get; init; } = 32;
    /// <summary>The masked RMSprop timing's matrices: fc1 [hidden, dim] (rows) and fc2 [dim, hidden] (columns), keeping 10 % of hidden.</summary>
    public int MaskedHidden { get; init; } = 3072;
    public int MaskedDim { get; init; } = 768;
    /// <summary>Steps per synchronised batch of the masked RMSprop timing (short kernels: the host waits once per batch).</summary>
    public int MaskedBatch { get; init; } = 200;
    public ParityShapes Shapes { get; init; } = ParityShapes.Realistic;
}

/// <summary>
/// `wte gpu-check`: on a CUDA device, the parity suite (<see cref="GpuParity"/>) and the timings — SGEMM with our ILGPU
/// GemmKernel and with cuBLAS (through ILGPU.Algorithms' CuBlas), ViT forward / forward+backward throughput, the HPRD
/// edit step (native masked optimizer kernels on and off), and the fused native masked RMSprop against ILGPU kernels.
/// </summary>
public static class GpuCheck
{
    public static GpuCheckResult Run(GpuBackend gpu, GpuCheckOptions options, TextWriter log)
    {
        ArgumentNullException.ThrowIfNull(gpu);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(log);
        var device = DescribeDevice(gpu, options.CpuThreads);
        log.WriteLine($"gpu-check: {device.Name}, sm {device.ComputeCapability}, {device.Multiprocessors} SMs, {device.MemoryGiB:F1} GiB, CUDA {device.Cuda}, driver {device.Driver}");
        log.WriteLine($"gpu-check: native kernels: {device.NativeKernels}");
        var parity = new List<ParityCheck>();
        if (options.Parity)
        {
            using var reference = new ReferenceBackend();
            var clock = Stopwatch.StartNew();
            parity.AddRange(GpuParity.Run(gpu, reference, options.Shapes, p =>
                log.WriteLine($"  {(p.Passed ? "ok  " : "FAIL")} {p.RelativeError,10:E2} ≤ {p.Tolerance:E0}  {p.Name}{(p.Detail is null ? "" : "  (" + p.Detail + ")")}")));
            log.WriteLine($"gpu-check: parity {parity.Count(p => p.Passed)}/{parity.Count} passed in {clock.Elapsed.TotalSeconds:F1} s");
        }
        var timings = new List<GpuMeasurement>();
        var notes = new List<string>();
        if (options.Timings)
        {
            void Add(GpuMeasurement m)
            {
                timings.Add(m);
                log.WriteLine($"  {m.Name}: {m.Value.ToString("G4", CultureInfo.InvariantCulture)} {m.Unit}{(m.Detail is null ? "" : "  (" + m.Detail + ")")}");
            }
            void Try(string what, Action body)
            {
                try
                {
                    body();
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    string note = $"{what}: not measured: {e.GetType().Name}: {e.Message}";
                    notes.Add(note);
                    log.WriteLine("  " + note);
                }
            }
            Try("sgemm", () => Sgemm(gpu, options.GemmSize, options.Seconds, Add, notes, log));
            Try("masked rmsprop", () => MaskedRmsProp(gpu, options.MaskedHidden, options.MaskedDim, options.MaskedBatch, options.Seconds, Add));
            Try("vit", () => Vit(gpu, options, Add));
        }
        return new GpuCheckResult { Device = device, Parity = parity, Timings = timings, Notes = notes };
    }

    // ---- device -------------------------------------------------------------------------------------------------

    public static GpuDeviceInfo DescribeDevice(GpuBackend gpu, int cpuThreads)
    {
        var acc = gpu.Accelerator;
        var cuda = gpu.CudaAccelerator;
        return new GpuDeviceInfo
        {
            Name = acc.Name,
            ComputeCapability = cuda is null ? "n/a" : $"{cuda.Architecture.Major}.{cuda.Architecture.Minor}",
            Multiprocessors = acc.NumMultiprocessors,
            MemoryGiB = acc.MemorySize / (double)(1L << 30),
            Cuda = cuda is null ? "n/a" : $"{cuda.DriverVersion.Major}.{cuda.DriverVersion.Minor}",
            Driver = DriverVersion(),
            Ilgpu = typeof(ILGPU.Context).Assembly.GetName().Version?.ToString(3) ?? "?",
            Dotnet = Environment.Version.ToString(),
            NativeKernels = gpu.NativeKernelsStatus,
            CpuThreads = cpuThreads > 0 ? cpuThreads : Environment.ProcessorCount,
            DateUtc = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", CultureInfo.InvariantCulture),
        };
    }

    /// <summary>"580.159.04" from /proc/driver/nvidia/version, else from nvidia-smi, else "unknown".</summary>
    private static string DriverVersion()
    {
        try
        {
            const string proc = "/proc/driver/nvidia/version";
            if (File.Exists(proc))
            {
                string text = File.ReadAllText(proc);
                var m = System.Text.RegularExpressions.Regex.Match(text, @"Kernel Module(?: for [^ ]+)?\s+([0-9]+(?:\.[0-9]+)+)");
                if (m.Success) return m.Groups[1].Value;
            }
            using var smi = Process.Start(new ProcessStartInfo("nvidia-smi", "--query-gpu=driver_version --format=csv,noheader")
            {
                RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            });
            if (smi is not null)
            {
                string output = smi.StandardOutput.ReadToEnd().Trim();
                if (smi.WaitForExit(10_000) && smi.ExitCode == 0 && output.Length > 0) return output.Split('\n')[0].Trim();
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.ComponentModel.Win32Exception or InvalidOperationException)
        {
        }
        return "unknown";
    }

    // ---- timing helpers ---------------------------------------------------------------------------------------------

    /// <summary>Milliseconds per call: one warm-up batch, then batches of <paramref name="batch"/> calls (synchronised after each batch) for at least <paramref name="seconds"/> and 3 batches.</summary>
    private static double MillisecondsPerCall(GpuBackend gpu, Action call, int batch, double seconds)
    {
        for (int i = 0; i < batch; i++) call();
        gpu.Synchronize();
        var clock = Stopwatch.StartNew();
        long calls = 0;
        int batches = 0;
        do
        {
            for (int i = 0; i < batch; i++) call();
            gpu.Synchronize();
            calls += batch;
            batches++;
        } while (clock.Elapsed.TotalSeconds < seconds || batches < 3);
        return clock.Elapsed.TotalMilliseconds / calls;
    }

    private static float[] RandomData(long n, ulong seed)
    {
        var rng = new Rng(seed);
        var x = new float[n];
        for (long i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }

    // ---- SGEMM: ILGPU GemmKernel vs cuBLAS ---------------------------------------------------------------------------

    private static void Sgemm(GpuBackend gpu, int n, double seconds, Action<GpuMeasurement> add, List<string> notes, TextWriter log)
    {
        using var a = gpu.FromHost("gemm.a", RandomData((long)n * n, 1), n, n);
        using var b = gpu.FromHost("gemm.b", RandomData((long)n * n, 2), n, n);
        using var c = gpu.Allocate("gemm.c", n, n);
        double flop = 2.0 * n * n * n;
        double ms = MillisecondsPerCall(gpu, () => gpu.Gemm(false, false, n, n, n, 1f, a, 0, n, b, 0, n, 0f, c, 0, n), 1, seconds);
        add(new GpuMeasurement { Name = $"SGEMM {n}³ ILGPU GemmKernel", Value = flop / ms / 1e9, Unit = "TFLOP/s", Detail = $"{ms:F2} ms" });
        var ours = c.ToArray();

        if (gpu.CudaAccelerator is not { } cuda)
        {
            notes.Add("cuBLAS SGEMM: not measured: not on CUDA");
            return;
        }
        string? library = CuBlasLibrary.InstallResolver();
        CuBlas blas;
        try
        {
            blas = new CuBlas(cuda);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or CuBlasException or TypeInitializationException)
        {
            string note = $"cuBLAS SGEMM: not measured: ILGPU's CuBlas could not load libcublas ({e.GetType().Name}: {e.Message}); "
                          + "ILGPU 1.5.3 binds libcublas.so.10/11/12 — set WTE_CUBLAS to a libcublas.so path (perf/gpu-check.sh looks for one)";
            notes.Add(note);
            log.WriteLine("  " + note);
            return;
        }
        using (blas)
        {
            blas.Stream = gpu.CudaStream!;
            using var cb = gpu.Allocate("gemm.c.cublas", n, n);
            var av = ((GpuTensor)a).View;
            var bv = ((GpuTensor)b).View;
            var cv = ((GpuTensor)cb).View;
            // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: cuBLAS gets B first.
            double cms = MillisecondsPerCall(gpu, () => blas.Gemm(CuBlasOperation.NonTranspose, CuBlasOperation.NonTranspose, n, n, n, 1f, bv, n, av, n, 0f, cv, n), 1, seconds);
            double err = GpuParity.RelativeError(cb.ToArray(), ours);
            add(new GpuMeasurement
            {
                Name = $"SGEMM {n}³ cuBLAS (ILGPU CuBlas)", Value = flop / cms / 1e9, Unit = "TFLOP/s",
                Detail = $"{cms:F2} ms; cublas {blas.Version}, math mode {blas.MathMode}{(library is null ? "" : ", " + Path.GetFileName(library))}; max rel. diff vs ILGPU {err:E1}",
            });
        }
    }

    // ---- masked RMSprop: fused native vs ILGPU ----------------------------------------------------------------------

    /// <summary>
    /// One masked RMSprop step keeping 10 % of 3072 hidden units on fc1 [3072, 768] (rows) and fc2 [768, 3072] (columns):
    /// the fused native kernel (selected elements only) against the ILGPU kernel with the same mask (one thread per
    /// element of the matrix; masked-out threads return after reading the mask) and the ILGPU unmasked step (the dense
    /// update a mask-multiplied-gradient implementation runs). GB/s counts the useful bytes: p, v, grad read and p, v
    /// written for the selected elements (20 B each), plus the index list.
    /// </summary>
    private static void MaskedRmsProp(GpuBackend gpu, int hidden, int dim, int batch, double seconds, Action<GpuMeasurement> add)
    {
        int keep = Math.Max(1, hidden / 10);
        var rng = new Rng(99);
        var maskValues = new float[hidden];
        foreach (int i in Enumerable.Range(0, hidden).OrderBy(_ => rng.NextUInt64()).Take(keep)) maskValues[i] = 1f;
        using var mask = gpu.FromHost("rms.mask", maskValues, hidden);
        foreach (var axis in new[] { MaskAxis.Rows, MaskAxis.Columns })
        {
            int rows = axis == MaskAxis.Rows ? hidden : dim, cols = axis == MaskAxis.Rows ? dim : hidden;
            using var p = gpu.FromHost("rms.p", RandomData((long)rows * cols, 3), rows, cols);
            using var g = gpu.FromHost("rms.g", RandomData((long)rows * cols, 4), rows, cols);
            using var v = gpu.Allocate("rms.v", rows, cols);
            var m = axis == MaskAxis.Rows ? UpdateMask.RowMask(mask, rows, cols) : UpdateMask.ColumnMask(mask, rows, cols);
            double usefulBytes = (double)keep * dim * 20 + keep * 4;
            string shape = $"[{rows},{cols}] {(axis == MaskAxis.Rows ? "rows" : "cols")}, K {keep}";
            bool before = gpu.NativeMaskedOptimizers;
            try
            {
                if (gpu.NativeKernelsAvailable && gpu.CudaAccelerator is not null)
                {
                    gpu.NativeMaskedOptimizers = true;
                    double native = MillisecondsPerCall(gpu, () => gpu.RmsPropStep(p, g, v, 1e-6f, 0.99f, 1e-8f, 0f, m), batch, seconds / 2);
                    add(new GpuMeasurement { Name = $"masked RMSprop {shape}: native fused", Value = usefulBytes / native / 1e6, Unit = "GB/s", Detail = $"{native * 1000:F1} µs/step" });
                }
                gpu.NativeMaskedOptimizers = false;
                double ilgpu = MillisecondsPerCall(gpu, () => gpu.RmsPropStep(p, g, v, 1e-6f, 0.99f, 1e-8f, 0f, m), batch, seconds / 2);
                add(new GpuMeasurement { Name = $"masked RMSprop {shape}: ILGPU masked kernel", Value = usefulBytes / ilgpu / 1e6, Unit = "GB/s", Detail = $"{ilgpu * 1000:F1} µs/step, all {rows * cols} elements' threads" });
                var none = UpdateMask.None((long)rows * cols);
                double dense = MillisecondsPerCall(gpu, () => gpu.RmsPropStep(p, g, v, 1e-6f, 0.99f, 1e-8f, 0f, none), batch, seconds / 2);
                add(new GpuMeasurement
                {
                    Name = $"masked RMSprop {shape}: ILGPU dense step", Value = usefulBytes / dense / 1e6, Unit = "GB/s",
                    Detail = $"{dense * 1000:F1} µs/step; {(double)rows * cols * 20 / dense / 1e6:F0} GB/s over the whole matrix",
                });
            }
            finally
            {
                gpu.NativeMaskedOptimizers = before;
            }
        }
    }

    // ---- ViT throughput and the edit step ------------------------------------------------------------------------

    private static void Vit(GpuBackend gpu, GpuCheckOptions options, Action<GpuMeasurement> add)
    {
        var config = options.VitConfig ?? VitConfig.Preset(options.VitModel);
        using var model = new VitModel(gpu, config);
        model.InitializeRandom(0);
        double gflop = 2 * config.ForwardMacs() / 1e9;
        double fwd = VitBenchmark.ForwardImagesPerSecond(model, options.ForwardBatch, options.Seconds);
        add(new GpuMeasurement { Name = $"{options.VitModel} forward, batch {options.ForwardBatch}", Value = fwd, Unit = "images/s", Detail = $"{fwd * gflop / 1000:F1} TFLOP/s" });
        double train = VitBenchmark.ForwardBackwardImagesPerSecond(model, options.TrainBatch, options.Seconds);
        add(new GpuMeasurement { Name = $"{options.VitModel} forward+backward, batch {options.TrainBatch}", Value = train, Unit = "images/s", Detail = $"{3 * train * gflop / 1000:F1} TFLOP/s (3× forward FLOPs)" });
        int[] blocks = VitBenchmark.DefaultEditBlocks(config.Depth);
        bool before = gpu.NativeMaskedOptimizers;
        try
        {
            foreach (bool native in gpu.NativeKernelsAvailable && gpu.CudaAccelerator is not null ? new[] { true, false } : [false])
            {
                gpu.NativeMaskedOptimizers = native;
                double ms = VitBenchmark.EditStepMilliseconds(gpu, model, blocks, 0.1, 0, options.Seconds);
                add(new GpuMeasurement
                {
                    Name = $"{options.VitModel} HPRD edit step, batch 1 ({(native ? "native masked RMSprop" : "ILGPU masked RMSprop")})", Value = ms, Unit = "ms",
                    Detail = $"blocks {string.Join(",", blocks)} forward+backward from the cached block input, {2 * blocks.Length} masked fc1/fc2 updates, keep 10 %",
                });
            }
        }
        finally
        {
            gpu.NativeMaskedOptimizers = before;
        }
    }

    // ---- report ---------------------------------------------------------------------------------------------------

    /// <summary>The JSON report (indented; a failed check's infinite error is written as "Infinity").</summary>
    public static string ToJson(GpuCheckResult result) => System.Text.Json.JsonSerializer.Serialize(result, new System.Text.Json.JsonSerializerOptions
    {
        WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    });

    public const string BeginMarker = "<!-- gpu-check:begin -->", EndMarker = "<!-- gpu-check:end -->";

    public static string Markdown(GpuCheckResult r)
    {
        ArgumentNullException.ThrowIfNull(r);
        var d = r.Device;
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture,
            $"Measured {d.DateUtc} on {d.Name} (compute capability {d.ComputeCapability}, {d.Multiprocessors} SMs, {d.MemoryGiB:F0} GiB), "
            + $"NVIDIA driver {d.Driver}, CUDA {d.Cuda} (driver API), ILGPU {d.Ilgpu}, .NET {d.Dotnet}; CPU reference on {d.CpuThreads} threads. "
            + $"fp32, random weights and inputs. Native kernels: {d.NativeKernels}. Produced by `wte gpu-check` (perf/gpu-check.sh).");
        md.AppendLine();
        if (r.Timings.Count > 0 || r.Notes.Count > 0)
        {
            md.AppendLine("| timing | value | unit | notes |");
            md.AppendLine("|---|---|---|---|");
            foreach (var t in r.Timings)
                md.AppendLine(CultureInfo.InvariantCulture, $"| {t.Name} | {Format(t.Value)} | {t.Unit} | {Escape(t.Detail)} |");
            foreach (var n in r.Notes) md.AppendLine(CultureInfo.InvariantCulture, $"| — | — | — | {Escape(n)} |");
            md.AppendLine();
        }
        if (r.Parity.Count > 0)
        {
            md.AppendLine(CultureInfo.InvariantCulture,
                $"Parity, GPU backend vs the reference backend on the conformance cases (normwise relative error max|gpu − ref| / max|ref|): **{r.Parity.Count(p => p.Passed)} of {r.Parity.Count} passed**"
                + $" (ops ≤ {GpuParity.OpTolerance:0e0}, whole model ≤ {GpuParity.ModelTolerance:0e0}).");
            md.AppendLine();
            md.AppendLine("| check | rel. error | tolerance | result | notes |");
            md.AppendLine("|---|---|---|---|---|");
            foreach (var p in r.Parity)
                md.AppendLine(CultureInfo.InvariantCulture,
                    $"| {Escape(p.Name)} | {p.RelativeError.ToString("0.0E+0", CultureInfo.InvariantCulture)} | {p.Tolerance.ToString("0E+0", CultureInfo.InvariantCulture)} | {(p.Passed ? "ok" : "**FAIL**")} | {Escape(p.Detail)} |");
        }
        return md.ToString().TrimEnd() + "\n";
    }

    private static string Format(double v) => v >= 100 ? v.ToString("F0", CultureInfo.InvariantCulture)
        : v >= 10 ? v.ToString("F1", CultureInfo.InvariantCulture) : v.ToString("F2", CultureInfo.InvariantCulture);

    private static string Escape(string? s) => s is null ? "" : s.Replace("|", "\\|", StringComparison.Ordinal).Replace("\n", " ", StringComparison.Ordinal);

    /// <summary>
    /// Replaces the text between <see cref="BeginMarker"/> and <see cref="EndMarker"/> of <paramref name="path"/> with
    /// <paramref name="markdown"/>; without markers (or without the file) appends a "GPU" section holding them.
    /// </summary>
    public static void Splice(string path, string markdown)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(markdown);
        string text = File.Exists(path) ? File.ReadAllText(path) : "# Performance results\n";
        string block = $"{BeginMarker}\n{markdown.Trim()}\n{EndMarker}";
        int begin = text.IndexOf(BeginMarker, StringComparison.Ordinal);
        int end = begin < 0 ? -1 : text.IndexOf(EndMarker, begin, StringComparison.Ordinal);
        text = begin >= 0 && end >= 0
            ? text[..begin] + block + text[(end + EndMarker.Length)..]
            : text.TrimEnd() + "\n\n## GPU: `wte gpu-check` (perf/gpu-check.sh)\n\n" + block + "\n";
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        string tmp = path + ".tmp";
        File.WriteAllText(tmp, text);
        File.Move(tmp, path, overwrite: true);
    }
}

/// <summary>
/// Where ILGPU's CuBlas finds libcublas. ILGPU 1.5.3 binds the names libcublas.so.10/11/12 only; a CUDA 13 machine has
/// libcublas.so.13 (whose cublas*_v2 entry points ILGPU calls are unchanged). With WTE_CUBLAS set to a library path, a
/// DllImport resolver for ILGPU.Algorithms maps every cuBLAS name to that file.
/// </summary>
internal static class CuBlasLibrary
{
    private static readonly Lock Gate = new();
    private static IntPtr _handle;
    private static string? _path;

    /// <summary>Installs the resolver when WTE_CUBLAS names a loadable file; returns that path, or null (ILGPU's own probing).</summary>
    public static string? InstallResolver()
    {
        lock (Gate)
        {
            if (_path is not null) return _path;
            string? path = Environment.GetEnvironmentVariable("WTE_CUBLAS");
            if (string.IsNullOrWhiteSpace(path) || !NativeLibrary.TryLoad(path, out _handle)) return null;
            try
            {
                NativeLibrary.SetDllImportResolver(typeof(CuBlas).Assembly, Resolve);
            }
            catch (InvalidOperationException)
            {
                return null;   // a resolver is already installed for ILGPU.Algorithms; it decides
            }
            return _path = path;
        }
    }

    private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
        => libraryName.Contains("cublas", StringComparison.OrdinalIgnoreCase) && !libraryName.Contains("cublasLt", StringComparison.OrdinalIgnoreCase)
            ? _handle
            : IntPtr.Zero;
}

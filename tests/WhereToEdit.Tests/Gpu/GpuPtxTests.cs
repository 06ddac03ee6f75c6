using System.Text.RegularExpressions;
using ILGPU.Runtime.Cuda;
using WhereToEdit.Engine.Backends.Gpu;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Gpu;

/// <summary>
/// Every kernel compiles to PTX with ILGPU's PTX backend, no driver or device needed: this runs the IR frontend,
/// optimiser and PTX code generator that the CPU-accelerator tests never touch (the CPU accelerator executes the
/// kernels' .NET IL directly).
/// </summary>
public sealed partial class GpuPtxTests(ITestOutputHelper output)
{
    [GeneratedRegex(@"^\s*\.visible \.entry (\S+)\(", RegexOptions.Multiline)]
    private static partial Regex EntryLine();

    [Fact]
    public void Every_kernel_compiles_to_ptx_for_sm90()
    {
        var kernels = GpuPtx.CompileAll(CudaArchitecture.SM_90, CudaInstructionSet.ISA_78);
        Assert.Equal(GpuBackend.KernelMethods.Count, kernels.Count);
        Assert.True(kernels.Count >= 20, $"only {kernels.Count} kernels found");
        string? dump = Environment.GetEnvironmentVariable("WTE_PTX_DUMP");
        if (!string.IsNullOrEmpty(dump))
        {
            Directory.CreateDirectory(dump);
            foreach (var k in kernels) File.WriteAllText(Path.Combine(dump, k.Method + ".ptx"), k.Ptx);
        }
        foreach (var k in kernels)
        {
            var entries = EntryLine().Matches(k.Ptx);
            output.WriteLine($"{k.Method,-28} .entry {k.EntryName}  ({k.Ptx.Length} chars of PTX)");
            Assert.Single(entries);
            Assert.Equal(k.EntryName, entries[0].Groups[1].Value);
            // ILGPU 1.5.3 writes the lowest architecture that has every capability it knows of (sm_80 at most),
            // never above the one asked for; the driver JIT-compiles that PTX for the device (sm_90 on H100/H200).
            Assert.Contains(".target sm_80", k.Ptx);
            Assert.Contains(".version 7.8", k.Ptx);
            Assert.DoesNotContain(".local", k.Ptx);   // no local-memory arrays or spills at the PTX level
            Assert.Contains(".address_size 64", k.Ptx);
        }
        // The features each family depends on made it into the PTX.
        string Ptx(string method) => kernels.Single(k => k.Method == method).Ptx;
        Assert.Contains(".shared", Ptx("GemmKernel"));
        Assert.Contains("bar.sync", Ptx("GemmKernel"));
        Assert.Contains("shfl.sync.bfly", Ptx("LayerNormForwardKernel"));
        Assert.Contains("ex2.approx", Ptx("GeluForwardKernel"));
        Assert.Contains("lg2.approx", Ptx("CrossEntropyKernel"));
        Assert.Contains("sqrt.rn.f32", Ptx("AdamKernel"));
        Assert.DoesNotContain("__nv_", string.Concat(kernels.Select(k => k.Ptx)));   // no libdevice calls
    }

    [Fact]
    public void Kernels_also_compile_for_sm75_with_an_older_isa()
    {
        var kernels = GpuPtx.CompileAll(CudaArchitecture.SM_75, CudaInstructionSet.ISA_70);
        Assert.All(kernels, k => Assert.Contains(".target sm_75", k.Ptx));
        Assert.All(kernels, k => Assert.Contains(".version 7.0", k.Ptx));
    }
}

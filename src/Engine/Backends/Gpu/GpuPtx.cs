using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace WhereToEdit.Engine.Backends.Gpu;

/// <summary>
/// Compiles the GPU backend's kernels to PTX with ILGPU's PTX backend, with no CUDA driver or device: the same
/// frontend, IR optimisation and code generation a <c>CudaAccelerator</c> runs when it loads a kernel, for a
/// chosen architecture and PTX ISA. (Assembling the PTX to SASS and loading it need the driver.)
/// </summary>
internal static class GpuPtx
{
    /// <summary>H100/H200 (sm_90); PTX ISA 7.8 (CUDA 11.8) is the first to know sm_90.</summary>
    public static readonly CudaArchitecture DefaultArchitecture = CudaArchitecture.SM_90;
    public static readonly CudaInstructionSet DefaultInstructionSet = CudaInstructionSet.ISA_78;

    public sealed record Kernel(string Method, string EntryName, string Ptx);

    /// <summary>Every kernel of <see cref="GpuBackend"/> as PTX text.</summary>
    public static IReadOnlyList<Kernel> CompileAll() => CompileAll(DefaultArchitecture, DefaultInstructionSet);

    public static IReadOnlyList<Kernel> CompileAll(CudaArchitecture architecture, CudaInstructionSet instructionSet,
        OptimizationLevel optimization = OptimizationLevel.O2)
    {
        // The same context setup as GpuBackend.TryCreateCuda, minus the devices: XMath needs the algorithms
        // library's PTX intrinsics.
        using var context = Context.Create(builder => builder.EnableAlgorithms().Optimize(optimization));
        using var backend = new PTXBackend(context, new CudaCapabilityContext(architecture), architecture, instructionSet, nvvmAPI: null);
        var result = new List<Kernel>();
        foreach (var method in GpuBackend.KernelMethods)
        {
            var entry = EntryPointDescription.FromExplicitlyGroupedKernel(method);
            var compiled = (PTXCompiledKernel)backend.Compile(entry, KernelSpecialization.Empty);
            result.Add(new Kernel(method.Name, compiled.Name, compiled.PTXAssembly));
        }
        return result;
    }
}

using System.CommandLine;
using WhereToEdit.Engine.Backends.Cpu;

namespace WhereToEdit.Cli;

/// <summary>The `wte` command tree. Each command lives in its own file; errors become one line on stderr and exit code 1.</summary>
public static partial class WteCommands
{
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var root = new RootCommand("WhereToEdit: learn where to edit a Vision Transformer, then fix its mistakes with a few weights.");
        root.Subcommands.Add(InfoCommand(stdout));
        root.Subcommands.Add(PredictCommand(stdout));
        root.Subcommands.Add(EditCommand(stdout));
        root.Subcommands.Add(PatchCommand(stdout));
        root.Subcommands.Add(PretrainCommand(stdout, stderr));
        root.Subcommands.Add(EvalCommand(stdout, stderr));
        root.Subcommands.Add(DemoCommand(stdout, stderr));
        root.Subcommands.Add(BenchCommand(stdout));
        root.Subcommands.Add(GpuCheckCommand(stdout, stderr));
        root.Subcommands.Add(BenchmarkCommand(stdout, stderr));
        root.Subcommands.Add(MetaTrainCommand(stdout, stderr));
        root.Subcommands.Add(ServeCommand(stdout));
        var config = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false };
        try
        {
            return root.Parse(args).Invoke(config);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            stderr.WriteLine($"wte: {Describe(e)}");
            return 1;
        }
    }

    /// <summary>The innermost useful message of an exception (System.CommandLine may wrap ours).</summary>
    internal static string Describe(Exception e)
    {
        while (e is System.Reflection.TargetInvocationException or AggregateException && e.InnerException is not null) e = e.InnerException;
        return e.Message;
    }

    internal static Option<string> DeviceOption() => new("--device")
    {
        Description = "cpu, cuda, or auto (CUDA when a device answers, else CPU)",
        DefaultValueFactory = _ => "cpu",
    };

    internal static Option<int> ThreadsOption() => new("--threads")
    {
        Description = "CPU worker threads (default: WTE_THREADS or all cores)",
        DefaultValueFactory = _ => 0,
    };

    internal static Option<string> GemmOption() => new("--gemm")
    {
        Description = "CPU GEMM: auto (OpenBLAS when it loads), openblas, or managed (also WTE_GEMM)",
        DefaultValueFactory = _ => "auto",
    };

    internal static GemmKind ParseGemm(string value) => value.Trim().ToLowerInvariant() switch
    {
        "auto" => GemmKind.Auto,
        "openblas" => GemmKind.OpenBlas,
        "managed" => GemmKind.Managed,
        _ => throw new ArgumentException($"--gemm '{value}': expected auto, openblas or managed"),
    };
}

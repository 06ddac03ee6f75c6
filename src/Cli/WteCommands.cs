using System.CommandLine;
using WhereToEdit.Engine.Distributed;
using WhereToEdit.Engine.IO;

namespace WhereToEdit.Cli;

/// <summary>The `wte` command tree. Each command lives in its own file; errors become one line on stderr and exit code 1.</summary>
public static partial class WteCommands
{
    /// <summary>The command tree as `wte` builds it (for tests and documentation: every command, option and short flag).</summary>
    public static RootCommand Tree() => Build(new CliOutput(TextWriter.Null, TextWriter.Null), out _);

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var root = Build(new CliOutput(stdout, stderr), out var maxMemory);
        var config = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false };
        ICommunicator world;
        try { world = Communicators.FromEnvironment(); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return CliErrors.Report(CliErrors.Describe(e), args, stdout, stderr);
        }
        World = world;
        if (world.Size > 1 && world.IsRoot()) stderr.WriteLine($"wte: {world.Size} MPI ranks");
        try
        {
            var parse = root.Parse(args);
            if (CliErrors.ParseProblem(parse) is { } problem) return CliErrors.Report(problem, args, stdout, stderr);
            ResourceBudget.LimitBytes = parse.GetValue(maxMemory) is { } limit ? ResourceBudget.ParseSize(limit) : ResourceBudget.DefaultLimit();
            if (world.Size > 1 && args.Length > 0 && !DistributedCommands.Contains(args[0]))
                throw new ArgumentException($"`wte {args[0]}` does not spread over MPI ranks (meta-train, eval and demo do): run it without mpirun");
            int code = parse.Invoke(config);
            world.Dispose();
            return code;
        }
        catch (Exception e) when (CliErrors.IsOutOfMemory(e))
        {
            // A legitimate input that still does not fit: one line, not a crash.
            return CliErrors.Report($"out of memory ({ResourceBudget.Show(GC.GetGCMemoryInfo().TotalAvailableMemoryBytes)} available to this process); " +
                                    "use smaller inputs or batches, or lower --max-memory so inputs are refused before loading", args, stdout, stderr);
        }
        catch (Exception e)
        {
            if (world.Size == 1) return CliErrors.Report(CliErrors.Describe(e), args, stdout, stderr);
            // The other ranks may wait in a collective for this one: end the whole job.
            stderr.WriteLine($"wte: rank {world.Rank} of {world.Size}: {CliErrors.Describe(e)}");
            world.Abort(1);
            return 1;
        }
    }

    private static RootCommand Build(CliOutput io, out Option<string?> maxMemory)
    {
        var root = new RootCommand("WhereToEdit: learn where to edit a Vision Transformer, then fix its mistakes with a few weights.")
        {
            InfoCommand(io), PredictCommand(io), ValidateCommand(io), PlotCommand(io), EditCommand(io), PatchCommand(io), PretrainCommand(io),
            EvalCommand(io), DemoCommand(io), BenchCommand(io), GpuCheckCommand(io), BenchmarkCommand(io), MetaTrainCommand(io),
            SaliencyCommand(io), DatasetCommand(io), ConvertCommand(io), ExportCommand(io), ServeCommand(io),
        };
        maxMemory = new Option<string?>("--max-memory")
        {
            Description = "largest allocation one input file may imply, e.g. 8G (default: three quarters of the memory available to the process)",
            Recursive = true,
        };
        root.Options.Add(io.JsonOption);
        root.Options.Add(maxMemory);
        ShortFlags.AddTo(root);
        return root;
    }

    private static readonly string[] DistributedCommands = ["meta-train", "eval", "demo"];

    /// <summary>The process's communicator (MPI under mpirun, else a single process); set by <see cref="Run"/>.</summary>
    internal static ICommunicator World { get; private set; } = SingleProcess.Instance;

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

    internal static Option<string> PrecisionOption() => new("--precision")
    {
        Description = "CPU linear layers' forward arithmetic: fp32, or bf16 (opt-in: bf16 inputs and weights, fp32 sums; needs AVX512_BF16 and libwte_cpu.so from native/build.sh)",
        DefaultValueFactory = _ => "fp32",
    };

    internal static Option<string> GemmOption() => new("--gemm")
    {
        Description = "CPU GEMM: auto (managed on AVX-512 or AVX2+FMA CPUs, else OpenBLAS when it loads), openblas, or managed (also WTE_GEMM)",
        DefaultValueFactory = _ => "auto",
    };
}

using System.Globalization;

namespace WhereToEdit.Engine.Distributed;

/// <summary>Finds the process's communicator: MPI when a launcher started several ranks, else <see cref="SingleProcess"/>.</summary>
public static class Communicators
{
    /// <summary>
    /// The world size a launcher announces: Open MPI's mpirun sets OMPI_COMM_WORLD_SIZE, PMI launchers (srun,
    /// Hydra) PMI_SIZE; null when neither is set (a process on its own).
    /// </summary>
    public static int? LaunchedSize(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        foreach (string name in (string[])["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"])
        {
            if (environment(name) is not { } text) continue;
            return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int size) && size > 0
                ? size : throw new ArgumentException($"environment variable {name}='{text}' is not a positive rank count");
        }
        return null;
    }

    /// <summary>
    /// A single process unless a launcher announced more than one rank; then loads Open MPI (only then: a machine
    /// without it runs every command) and joins MPI_COMM_WORLD.
    /// </summary>
    public static ICommunicator FromEnvironment(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        int? size = LaunchedSize(environment);
        if (size is null or 1) return SingleProcess.Instance;
        OpenMpi mpi;
        try { mpi = OpenMpi.Load(); }
        catch (DllNotFoundException e)
        {
            throw new InvalidOperationException($"the launcher started {size} ranks (OMPI_COMM_WORLD_SIZE / PMI_SIZE), but {e.Message}", e);
        }
        int local = int.TryParse(environment("OMPI_COMM_WORLD_LOCAL_SIZE"), NumberStyles.None, CultureInfo.InvariantCulture, out int l) ? l : 1;
        var comm = new MpiCommunicator(mpi, local);
        if (comm.Size != size)
            throw new InvalidOperationException($"the launcher announced {size} ranks but MPI_COMM_WORLD has {comm.Size}");
        return comm;
    }

    /// <summary>
    /// Worker threads per rank: <paramref name="requested"/> when given (or WTE_THREADS is set), else the cores shared
    /// by the ranks on this machine, so N ranks on one machine do not each take every core.
    /// </summary>
    public static int ThreadsPerRank(this ICommunicator comm, int requested)
    {
        if (requested > 0 || comm.LocalSize <= 1 || Environment.GetEnvironmentVariable("WTE_THREADS") is not null) return requested;
        return Math.Max(1, Environment.ProcessorCount / comm.LocalSize);
    }
}

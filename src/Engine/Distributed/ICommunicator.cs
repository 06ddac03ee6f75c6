namespace WhereToEdit.Engine.Distributed;

/// <summary>Reductions on 64-bit integers: exact, so their result never depends on the order ranks are combined in.</summary>
public enum ReduceOp { Sum, Min, Max }

/// <summary>
/// The group of processes a job runs on. The engine's distributed code (meta-training, sharded evaluation) talks to
/// this and nothing else: <see cref="SingleProcess"/> when the process runs alone, <see cref="MpiCommunicator"/> under
/// mpirun. Every member is a collective: all ranks call it, in the same order, with matching sizes.
/// </summary>
public interface ICommunicator : IDisposable
{
    /// <summary>0-based rank of this process; 0 is the root that writes files and prints.</summary>
    int Rank { get; }

    /// <summary>Number of ranks.</summary>
    int Size { get; }

    /// <summary>Ranks of this job on this machine (for the default thread count).</summary>
    int LocalSize { get; }

    void Barrier();

    /// <summary>Copies <paramref name="data"/> of <paramref name="root"/> into every rank's <paramref name="data"/>.</summary>
    void Broadcast(Span<byte> data, int root);

    /// <summary>
    /// Concatenates every rank's <paramref name="local"/> in rank order into every rank's <paramref name="all"/>;
    /// <paramref name="counts"/>[r] is rank r's length in bytes (the same array on every rank).
    /// </summary>
    void AllGather(ReadOnlySpan<byte> local, Span<byte> all, ReadOnlySpan<int> counts);

    /// <summary>Like <see cref="AllGather"/>, but only <paramref name="root"/> receives (<paramref name="all"/> is ignored elsewhere).</summary>
    void Gather(ReadOnlySpan<byte> local, Span<byte> all, ReadOnlySpan<int> counts, int root);

    /// <summary>Element-wise reduction of 64-bit integers over all ranks, result on every rank.</summary>
    void Allreduce(Span<long> values, ReduceOp op);

    /// <summary>Ends the whole job (every rank) with <paramref name="exitCode"/>; does not return.</summary>
    void Abort(int exitCode);
}

/// <summary>The communicator of a process that runs alone: every collective is a copy or nothing.</summary>
public sealed class SingleProcess : ICommunicator
{
    public static readonly SingleProcess Instance = new();

    private SingleProcess() { }

    public int Rank => 0;
    public int Size => 1;
    public int LocalSize => 1;

    public void Barrier() { }

    public void Broadcast(Span<byte> data, int root) => CheckRoot(root);

    public void AllGather(ReadOnlySpan<byte> local, Span<byte> all, ReadOnlySpan<int> counts)
    {
        CheckCounts(local, all, counts);
        local.CopyTo(all);
    }

    public void Gather(ReadOnlySpan<byte> local, Span<byte> all, ReadOnlySpan<int> counts, int root)
    {
        CheckRoot(root);
        AllGather(local, all, counts);
    }

    public void Allreduce(Span<long> values, ReduceOp op) { }

    public void Abort(int exitCode) => Environment.Exit(exitCode);

    public void Dispose() { }

    private static void CheckRoot(int root)
    {
        if (root != 0) throw new ArgumentOutOfRangeException(nameof(root), root, "a single process has only rank 0");
    }

    private static void CheckCounts(ReadOnlySpan<byte> local, Span<byte> all, ReadOnlySpan<int> counts)
    {
        if (counts.Length != 1 || counts[0] != local.Length || all.Length < local.Length)
            throw new ArgumentException($"gather: {counts.Length} counts for 1 rank, {local.Length} bytes sent, room for {all.Length}");
    }
}

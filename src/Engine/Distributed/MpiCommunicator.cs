namespace WhereToEdit.Engine.Distributed;

/// <summary>MPI_COMM_WORLD of an Open MPI job. Created once per process by <see cref="Communicators.FromEnvironment"/>.</summary>
internal sealed unsafe class MpiCommunicator : ICommunicator
{
    private readonly OpenMpi _mpi;
    private readonly int[] _counts, _displs;
    private bool _finalized;

    internal MpiCommunicator(OpenMpi mpi, int localSize)
    {
        _mpi = mpi;
        if (!mpi.IsInitialized) mpi.InitThread(OpenMpi.ThreadSerialized);
        Rank = mpi.Rank(mpi.CommWorld);
        Size = mpi.Size(mpi.CommWorld);
        LocalSize = Math.Max(1, localSize);
        _counts = new int[Size];
        _displs = new int[Size];
    }

    public int Rank { get; }
    public int Size { get; }
    public int LocalSize { get; }

    public void Barrier() => _mpi.Barrier(_mpi.CommWorld);

    public void Broadcast(Span<byte> data, int root)
    {
        CheckRoot(root);
        fixed (byte* p = data) _mpi.Bcast(p, data.Length, _mpi.Byte, root, _mpi.CommWorld);
    }

    public void AllGather(ReadOnlySpan<byte> local, Span<byte> all, ReadOnlySpan<int> counts)
    {
        int total = Layout(local, counts);
        if (all.Length < total) throw new ArgumentException($"allgather: {total} bytes arrive, room for {all.Length}");
        fixed (byte* send = local)
        fixed (byte* recv = all)
        fixed (int* c = _counts)
        fixed (int* d = _displs)
            _mpi.Allgatherv(send, local.Length, _mpi.Byte, recv, c, d, _mpi.Byte, _mpi.CommWorld);
    }

    public void Gather(ReadOnlySpan<byte> local, Span<byte> all, ReadOnlySpan<int> counts, int root)
    {
        CheckRoot(root);
        int total = Layout(local, counts);
        if (Rank == root && all.Length < total) throw new ArgumentException($"gather: {total} bytes arrive, room for {all.Length}");
        fixed (byte* send = local)
        fixed (byte* recv = all)
        fixed (int* c = _counts)
        fixed (int* d = _displs)
            _mpi.Gatherv(send, local.Length, _mpi.Byte, recv, c, d, _mpi.Byte, root, _mpi.CommWorld);
    }

    public void Allreduce(Span<long> values, ReduceOp op)
    {
        nint handle = op switch { ReduceOp.Sum => _mpi.OpSum, ReduceOp.Min => _mpi.OpMin, ReduceOp.Max => _mpi.OpMax, _ => throw new ArgumentOutOfRangeException(nameof(op)) };
        fixed (long* p = values) _mpi.Allreduce(OpenMpi.InPlace, p, values.Length, _mpi.Int64, handle, _mpi.CommWorld);
    }

    public void Abort(int exitCode)
    {
        Console.Out.Flush();
        Console.Error.Flush();
        _mpi.Abort(_mpi.CommWorld, exitCode);
        Environment.Exit(exitCode);   // MPI_Abort does not return; this is for an implementation that does
    }

    /// <summary>MPI_Finalize: every rank calls it once at the normal end of a command.</summary>
    public void Dispose()
    {
        if (_finalized) return;
        _finalized = true;
        _mpi.FinalizeMpi();
    }

    private int Layout(ReadOnlySpan<byte> local, ReadOnlySpan<int> counts)
    {
        if (counts.Length != Size) throw new ArgumentException($"gather: {counts.Length} counts for {Size} ranks");
        if (counts[Rank] != local.Length) throw new ArgumentException($"gather: rank {Rank} sends {local.Length} bytes, its count says {counts[Rank]}");
        long offset = 0;
        for (int r = 0; r < Size; r++)
        {
            _counts[r] = counts[r];
            _displs[r] = checked((int)offset);
            offset += counts[r];
        }
        return checked((int)offset);
    }

    private void CheckRoot(int root)
    {
        if ((uint)root >= (uint)Size) throw new ArgumentOutOfRangeException(nameof(root), root, $"root must be a rank of 0..{Size - 1}");
    }
}

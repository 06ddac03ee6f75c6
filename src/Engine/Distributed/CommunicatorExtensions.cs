using System.Runtime.InteropServices;

namespace WhereToEdit.Engine.Distributed;

/// <summary>Typed and deterministic collectives built on the byte-level <see cref="ICommunicator"/> members.</summary>
public static class CommunicatorExtensions
{
    public static bool IsRoot(this ICommunicator comm) => comm.Rank == 0;

    /// <summary>The contiguous share [Start, Start + Count) of <paramref name="total"/> items that <paramref name="rank"/> owns: sizes differ by at most one, lower ranks take the extra.</summary>
    public static (int Start, int Count) Slice(int total, int size, int rank)
    {
        int q = total / size, r = total % size;
        return (rank * q + Math.Min(rank, r), q + (rank < r ? 1 : 0));
    }

    /// <summary>Typed <see cref="ICommunicator.AllGather"/>: <paramref name="counts"/> in elements.</summary>
    public static void AllGather<T>(this ICommunicator comm, ReadOnlySpan<T> local, Span<T> all, ReadOnlySpan<int> counts) where T : unmanaged
    {
        Span<int> bytes = counts.Length <= 256 ? stackalloc int[counts.Length] : new int[counts.Length];
        int size = Marshal.SizeOf<T>();
        for (int r = 0; r < counts.Length; r++) bytes[r] = checked(counts[r] * size);
        comm.AllGather(MemoryMarshal.AsBytes(local), MemoryMarshal.AsBytes(all), bytes);
    }

    public static void Broadcast<T>(this ICommunicator comm, Span<T> data, int root) where T : unmanaged
        => comm.Broadcast(MemoryMarshal.AsBytes(data), root);

    /// <summary>
    /// Σ over ranks of <paramref name="values"/>, summed on every rank in rank order 0, 1, …, N−1: the result is the
    /// same on every rank and in every run with the same rank count (MPI's own float reductions promise neither).
    /// <paramref name="scratch"/> holds Size·values.Length doubles.
    /// </summary>
    public static void SumInRankOrder(this ICommunicator comm, Span<double> values, Span<double> scratch)
    {
        if (comm.Size == 1) return;
        int n = values.Length;
        if (scratch.Length < comm.Size * n) throw new ArgumentException($"scratch holds {scratch.Length} doubles, {comm.Size * n} needed");
        Span<int> counts = comm.Size <= 256 ? stackalloc int[comm.Size] : new int[comm.Size];
        counts.Fill(n);
        comm.AllGather<double>(values, scratch, counts);
        for (int i = 0; i < n; i++)
        {
            double sum = 0;
            for (int r = 0; r < comm.Size; r++) sum += scratch[r * n + i];
            values[i] = sum;
        }
    }

    /// <summary>Every rank's byte block, in rank order, on <paramref name="root"/> (an empty array elsewhere).</summary>
    public static byte[][] GatherBlocks(this ICommunicator comm, byte[] local, int root)
    {
        if (comm.Size == 1) return [local];
        var lengths = new int[comm.Size];
        var four = new int[comm.Size];
        Array.Fill(four, 1);
        comm.AllGather<int>([local.Length], lengths, four);
        long total = lengths.Sum(l => (long)l);
        if (total > int.MaxValue) throw new InvalidOperationException($"gather: {total} bytes from {comm.Size} ranks is over the 2 GiB a single MPI message holds");
        var all = new byte[comm.Rank == root ? total : 0];
        comm.Gather(local, all, lengths, root);
        if (comm.Rank != root) return [];
        var blocks = new byte[comm.Size][];
        int offset = 0;
        for (int r = 0; r < comm.Size; r++)
        {
            blocks[r] = all.AsSpan(offset, lengths[r]).ToArray();
            offset += lengths[r];
        }
        return blocks;
    }

    /// <summary>True on every rank when all ranks passed the same <paramref name="value"/>.</summary>
    public static bool AllEqual(this ICommunicator comm, long value)
    {
        if (comm.Size == 1) return true;
        Span<long> min = [value], max = [value];
        comm.Allreduce(min, ReduceOp.Min);
        comm.Allreduce(max, ReduceOp.Max);
        return min[0] == max[0];
    }
}

namespace WhereToEdit.Engine.Backends.Cpu;

/// <summary>
/// Keeps the arrays of disposed CPU tensors for the next tensor of the same length. Fresh memory is expensive to
/// touch: on the Firecracker VMs we run on, memory the process (or the GC) gave back is reported to the host and
/// faults in again at about 3 ms per MB, against 0.1 ms per MB to clear memory still held. An edit allocates
/// ~170 MB for ViT-B (snapshot, RMSprop state, activations); without this its second edit in a process spent
/// 0.5 s of its ~2 s faulting that memory back. A rented array is cleared, so a new tensor reads zeros as before.
/// </summary>
internal sealed class CpuBufferPool(long budgetBytes)
{
    /// <summary>Smallest array worth keeping (256 KB): below it the GC's own reuse is cheap enough.</summary>
    internal const int MinFloats = 1 << 16;

    private readonly Dictionary<int, Stack<float[]>> _free = [];
    private long _bytes;

    /// <summary>Bytes of arrays held for reuse.</summary>
    public long Bytes { get { lock (_free) return _bytes; } }

    /// <summary>A zeroed array of <paramref name="length"/> floats: a kept one when there is one, else a new pinned one.</summary>
    public float[] Rent(int length, WorkerPool pool)
    {
        if (length >= MinFloats)
        {
            float[]? kept = null;
            lock (_free)
                if (_free.TryGetValue(length, out var stack) && stack.Count > 0)
                {
                    kept = stack.Pop();
                    _bytes -= 4L * length;
                }
            if (kept is not null)
            {
                CpuBackend.ParallelFill(kept, 0f, pool);
                return kept;
            }
        }
        return length == 0 ? [] : GC.AllocateArray<float>(length, pinned: length >= 4096);
    }

    /// <summary>Keeps <paramref name="data"/> for reuse while the budget allows (else the GC frees it).</summary>
    public void Return(float[] data)
    {
        if (data.Length < MinFloats) return;
        lock (_free)
        {
            if (_bytes + 4L * data.Length > budgetBytes) return;
            if (!_free.TryGetValue(data.Length, out var stack)) _free[data.Length] = stack = new Stack<float[]>();
            stack.Push(data);
            _bytes += 4L * data.Length;
        }
    }
}

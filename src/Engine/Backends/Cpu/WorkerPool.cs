namespace WhereToEdit.Engine.Backends.Cpu;

/// <summary>
/// Persistent worker threads that run one parallel loop at a time without allocating: the caller
/// passes a pointer to an argument struct on its own stack and a static function pointer; chunks are
/// claimed with an interlocked counter. Chunk boundaries depend only on the loop size and the chunk
/// count, never on scheduling, so results are deterministic for a given thread count.
/// </summary>
internal sealed unsafe class WorkerPool : IDisposable
{
    private readonly Thread[] _workers;
    private readonly SemaphoreSlim[] _wake;
    private volatile bool _stopping;

    // The loop currently running.
    private void* _args;
    private delegate*<void*, int, int, void> _body;
    private int _count, _chunkSize, _chunkCount;
    private int _nextChunk;
    private int _busyWorkers;
    private Exception? _error;
    private long _workerAllocatedBytes;

    /// <summary>Bytes this pool's worker threads allocated while running loop bodies (a zero-allocation test reads it).</summary>
    public long WorkerAllocatedBytes => Interlocked.Read(ref _workerAllocatedBytes);

    public WorkerPool(int threads)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads), threads, "need at least one thread");
        Threads = threads;
        _workers = new Thread[threads - 1];
        _wake = new SemaphoreSlim[threads - 1];
        for (int i = 0; i < _workers.Length; i++)
        {
            _wake[i] = new SemaphoreSlim(0);
            int index = i;
            _workers[i] = new Thread(() => WorkerLoop(index)) { IsBackground = true, Name = $"wte-cpu-{i + 1}" };
            _workers[i].Start();
        }
    }

    public int Threads { get; }

    /// <summary>
    /// Runs body(args, start, end) over [0, count) in chunks of at least <paramref name="grain"/> items,
    /// at most 4 chunks per thread. The args pointer must stay valid until this returns (a local is fine).
    /// </summary>
    public void For(int count, int grain, void* args, delegate*<void*, int, int, void> body)
    {
        if (count <= 0) return;
        int maxChunks = Threads * 4;
        int chunkSize = Math.Max(Math.Max(grain, 1), (count + maxChunks - 1) / maxChunks);
        int chunkCount = (count + chunkSize - 1) / chunkSize;
        if (chunkCount == 1 || Threads == 1)
        {
            for (int c = 0; c < chunkCount; c++)
                body(args, c * chunkSize, Math.Min(count, (c + 1) * chunkSize));
            return;
        }
        _args = args; _body = body; _count = count; _chunkSize = chunkSize; _chunkCount = chunkCount;
        _nextChunk = 0;
        _error = null;
        int helpers = Math.Min(_workers.Length, chunkCount - 1);
        Volatile.Write(ref _busyWorkers, helpers);
        for (int i = 0; i < helpers; i++) _wake[i].Release();
        Exception? own = null;
        try { RunChunks(); }
        catch (Exception e) { own = e; }
        var spin = new SpinWait();
        while (Volatile.Read(ref _busyWorkers) != 0) spin.SpinOnce(sleep1Threshold: -1);
        _args = null;
        // A body that threw on a worker is rethrown here, on the caller's thread (never lost, never crashing a worker).
        if ((own ?? _error) is { } error) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error);
    }

    private void RunChunks()
    {
        while (true)
        {
            int c = Interlocked.Increment(ref _nextChunk) - 1;
            if (c >= _chunkCount) return;
            int start = c * _chunkSize;
            _body(_args, start, Math.Min(_count, start + _chunkSize));
        }
    }

    private void WorkerLoop(int index)
    {
        while (true)
        {
            _wake[index].Wait();
            if (_stopping) return;
            long before = GC.GetAllocatedBytesForCurrentThread();
            try { RunChunks(); }
            catch (Exception e) { Interlocked.CompareExchange(ref _error, e, null); }
            finally
            {
                Interlocked.Add(ref _workerAllocatedBytes, GC.GetAllocatedBytesForCurrentThread() - before);
                Interlocked.Decrement(ref _busyWorkers);
            }
        }
    }

    public void Dispose()
    {
        _stopping = true;
        foreach (var w in _wake) w.Release();
        foreach (var t in _workers) t.Join();
        foreach (var w in _wake) w.Dispose();
    }
}

using System.Runtime.CompilerServices;

namespace WhereToEdit.Engine.Backends.Cpu;

/// <summary>
/// Prepacked GEMM B operands (weights) of the CPU backend. A linear layer's weight is the B of its GEMMs, and
/// packing it into the micro-kernel's panels costs a pass over the whole matrix on every call: with one image
/// (m = 197 rows) that is a sizeable share of the call. Weights that stay unchanged between calls (inference,
/// and the blocks an edit does not touch) are packed once here and reused.
/// <para>
/// Staleness: every <see cref="CpuTensor"/> carries a write version that its <see cref="CpuTensor.CopyFrom"/>
/// and every backend op touching it other than as a GEMM operand bump (<see cref="CpuBackend.Cpu"/>). A pack
/// is used only while the version it was made at is current, so a weight updated by an optimizer, an edit or
/// a reload is never read from an old pack. An fp32 view is packed on its second sighting at one version, so
/// weights that change every step (training) are never packed; fp32 packs are bit-identical to per-call packing.
/// bf16 packs (<see cref="CpuPrecision.Bf16"/>, the layout of <see cref="Bf16Gemm"/>) are made on the first sighting:
/// that path always reads a pack.
/// </para>
/// <para>Memory: packs live as long as their tensor, within a byte budget (0 disables the cache); a stale pack keeps its
/// array for the repack.</para>
/// </summary>
internal sealed unsafe class PackedWeightCache
{
    /// <summary>Smallest op(B) (n·k floats) worth packing ahead: below it packing costs little.</summary>
    internal const long MinFloats = 1L << 16;

    private readonly ConditionalWeakTable<CpuTensor, Views> _views = new();
    private readonly long _budgetBytes;
    private long _bytes;

    public PackedWeightCache(long budgetBytes) => _budgetBytes = budgetBytes;

    /// <summary>Bytes held by live packs.</summary>
    public long Bytes => Interlocked.Read(ref _bytes);

    /// <summary>
    /// The packed op(B) for this view of <paramref name="tensor"/> (null: pack per call). Packs it, on
    /// <paramref name="pool"/>, the second time the same view is seen at the same version.
    /// </summary>
    public float* Find(CpuTensor tensor, long offset, bool transB, int n, int k, int ldb, float* b, WorkerPool pool)
        => (float*)Find(tensor, new ViewKey(offset, transB, n, k, ldb, Bf16: false), b, pool);

    /// <summary>
    /// The bf16 pack (<see cref="Bf16Gemm.PackB"/>) of W (n×k, row stride ldb, the B of x·Wᵀ) at <paramref name="offset"/>
    /// in <paramref name="tensor"/>, made on the first sighting; null only when the budget has no room (the caller
    /// then packs into scratch).
    /// </summary>
    public uint* FindBf16(CpuTensor tensor, long offset, int n, int k, int ldb, float* b, WorkerPool pool)
        => (uint*)Find(tensor, new ViewKey(offset, true, n, k, ldb, Bf16: true), b, pool);

    private void* Find(CpuTensor tensor, ViewKey key, float* b, WorkerPool pool)
    {
        if (_budgetBytes <= 0 || (!key.Bf16 && (long)key.N * key.K < MinFloats)) return null;
        var views = _views.GetOrCreateValue(tensor);
        Pack? pack = views.Find(key);
        if (pack is null)
        {
            views.Add(pack = new Pack(this, key, tensor.Version));
            if (!key.Bf16) return null;
        }
        else if (pack.Version != tensor.Version)
        {
            pack.Aligned = null;   // stale; its array stays for the repack (fresh memory is slow to touch, see CpuBufferPool)
            pack.Version = tensor.Version;
            if (!key.Bf16) return null;
        }
        if (pack.Aligned is null && !pack.TryFill(b, pool)) return null;
        return pack.Aligned;
    }

    private readonly record struct ViewKey(long Offset, bool TransB, int N, int K, int Ldb, bool Bf16);

    /// <summary>The packs of one tensor (a weight has at most a few GEMM views: x·Wᵀ forward, dy·W backward).</summary>
    private sealed class Views
    {
        private readonly List<Pack> _packs = [];

        public Pack? Find(ViewKey key)
        {
            lock (_packs)
                foreach (var p in _packs)
                    if (p.Key == key) return p;
            return null;
        }

        public void Add(Pack pack)
        {
            lock (_packs) _packs.Add(pack);
        }
    }

    private sealed class Pack(PackedWeightCache owner, ViewKey key, long version)
    {
        public ViewKey Key { get; } = key;
        public long Version = version;
        public float[]? Data;
        public void* Aligned;

        public bool TryFill(float* b, WorkerPool pool)
        {
            // A bf16 pack is 32-bit words (bf16 pairs); it rides in a float array all the same.
            long floats = Key.Bf16 ? Bf16Gemm.PackedBWords(Key.N, Key.K) : ManagedGemm.WholeBFloats(Key.N, Key.K);
            long bytes = (floats + 16) * sizeof(float);
            var data = Data;
            if (data is null)
            {
                if (Interlocked.Add(ref owner._bytes, bytes) > owner._budgetBytes)
                {
                    Interlocked.Add(ref owner._bytes, -bytes);
                    return false;
                }
                data = GC.AllocateUninitializedArray<float>(checked((int)(floats + 16)), pinned: true);
            }
            float* aligned;
            fixed (float* p = data) aligned = (float*)(((nint)p + 63) & ~(nint)63);
            var args = new PackArgs { TransB = Key.TransB, N = Key.N, K = Key.K, B = b, Ldb = Key.Ldb, Dst = aligned };
            if (Key.Bf16) pool.For(Bf16Gemm.Panels(Key.N), 4, &args, &PackBf16Chunk);
            else pool.For(ManagedGemm.WholeBPanels(Key.N), 4, &args, &PackChunk);
            Data = data;
            Aligned = aligned;
            return true;
        }

        public void Release()
        {
            if (Data is null) return;
            Interlocked.Add(ref owner._bytes, -((long)Data.Length * sizeof(float)));
            Data = null;
            Aligned = null;
        }

        ~Pack() => Release();
    }

    private struct PackArgs
    {
        public bool TransB;
        public int N, K, Ldb;
        public float* B, Dst;
    }

    private static void PackChunk(void* p, int start, int end)
    {
        ref var a = ref *(PackArgs*)p;
        ManagedGemm.PackWholeB(a.TransB, a.N, a.K, a.B, a.Ldb, a.Dst, start, end);
    }

    private static void PackBf16Chunk(void* p, int start, int end)
    {
        ref var a = ref *(PackArgs*)p;
        Bf16Gemm.PackB(a.B, a.Ldb, a.N, a.K, (uint*)a.Dst, start, end);
    }
}

using System.Runtime.InteropServices;
using System.Text;

namespace WhereToEdit.Engine.Distributed;

/// <summary>
/// A thin binding to Open MPI's C library (Debian's libmpi.so.40), loaded only when a process runs under mpirun.
/// Open MPI's handles (MPI_COMM_WORLD, MPI_BYTE, MPI_SUM, …) are addresses of exported globals
/// (<c>ompi_mpi_comm_world</c>, …), so they are resolved with <see cref="NativeLibrary.GetExport"/>; the functions are
/// called through unmanaged function pointers. MPI.NET 1.4.0 binds MS-MPI's integer handles and crashes on Open MPI
/// (docs/DISTRIBUTED.md), hence this file.
/// </summary>
internal sealed unsafe class OpenMpi
{
    public const int ThreadSerialized = 2;
    private const int RtldNow = 2, RtldGlobal = 0x100;

    private readonly delegate* unmanaged<int*, byte***, int, int*, int> _initThread;
    private readonly delegate* unmanaged<int*, int> _initialized;
    private readonly delegate* unmanaged<nint, int*, int> _commRank, _commSize;
    private readonly delegate* unmanaged<nint, int> _barrier;
    private readonly delegate* unmanaged<void*, int, nint, int, nint, int> _bcast;
    private readonly delegate* unmanaged<void*, int, nint, void*, int*, int*, nint, nint, int> _allgatherv;
    private readonly delegate* unmanaged<void*, int, nint, void*, int*, int*, nint, int, nint, int> _gatherv;
    private readonly delegate* unmanaged<void*, void*, int, nint, nint, nint, int> _allreduce;
    private readonly delegate* unmanaged<nint, int, int> _abort;
    private readonly delegate* unmanaged<int> _finalize;
    private readonly delegate* unmanaged<int, byte*, int*, int> _errorString;

    public nint CommWorld { get; }
    public nint Byte { get; }
    public nint Int64 { get; }
    public nint OpSum { get; }
    public nint OpMin { get; }
    public nint OpMax { get; }

    private OpenMpi(nint lib)
    {
        nint Export(string name) => NativeLibrary.TryGetExport(lib, name, out nint p)
            ? p : throw new InvalidOperationException($"libmpi.so.40 has no symbol '{name}': wte's MPI layer binds Open MPI 4.x (Debian openmpi-bin)");
        _initThread = (delegate* unmanaged<int*, byte***, int, int*, int>)Export("MPI_Init_thread");
        _initialized = (delegate* unmanaged<int*, int>)Export("MPI_Initialized");
        _commRank = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_rank");
        _commSize = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_size");
        _barrier = (delegate* unmanaged<nint, int>)Export("MPI_Barrier");
        _bcast = (delegate* unmanaged<void*, int, nint, int, nint, int>)Export("MPI_Bcast");
        _allgatherv = (delegate* unmanaged<void*, int, nint, void*, int*, int*, nint, nint, int>)Export("MPI_Allgatherv");
        _gatherv = (delegate* unmanaged<void*, int, nint, void*, int*, int*, nint, int, nint, int>)Export("MPI_Gatherv");
        _allreduce = (delegate* unmanaged<void*, void*, int, nint, nint, nint, int>)Export("MPI_Allreduce");
        _abort = (delegate* unmanaged<nint, int, int>)Export("MPI_Abort");
        _finalize = (delegate* unmanaged<int>)Export("MPI_Finalize");
        _errorString = (delegate* unmanaged<int, byte*, int*, int>)Export("MPI_Error_string");
        CommWorld = Export("ompi_mpi_comm_world");
        Byte = Export("ompi_mpi_byte");
        Int64 = Export("ompi_mpi_int64_t");
        OpSum = Export("ompi_mpi_op_sum");
        OpMin = Export("ompi_mpi_op_min");
        OpMax = Export("ompi_mpi_op_max");
    }

    [DllImport("libc", EntryPoint = "dlopen")]
    private static extern nint DlOpen(string file, int mode);

    /// <summary>
    /// Loads libmpi.so.40 with RTLD_GLOBAL: Open MPI dlopens its own components (transports, collectives), which
    /// resolve symbols of libmpi/libopen-pal from the global namespace.
    /// </summary>
    public static OpenMpi Load()
    {
        string[] names = ["libmpi.so.40", "libmpi.so"];
        foreach (string name in names)
        {
            nint handle = 0;
            try { handle = DlOpen(name, RtldNow | RtldGlobal); }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
            if (handle == 0 && !NativeLibrary.TryLoad(name, out handle)) continue;
            return new OpenMpi(handle);
        }
        throw new DllNotFoundException("libmpi.so.40 (Open MPI) could not be loaded: install openmpi-bin (Debian: apt-get install openmpi-bin)");
    }

    public bool IsInitialized
    {
        get { int flag; Check(_initialized(&flag), "MPI_Initialized"); return flag != 0; }
    }

    public int InitThread(int required)
    {
        int provided;
        Check(_initThread(null, null, required, &provided), "MPI_Init_thread");
        return provided;
    }

    public int Rank(nint comm) { int r; Check(_commRank(comm, &r), "MPI_Comm_rank"); return r; }
    public int Size(nint comm) { int s; Check(_commSize(comm, &s), "MPI_Comm_size"); return s; }
    public void Barrier(nint comm) => Check(_barrier(comm), "MPI_Barrier");

    public void Bcast(void* buffer, int count, nint type, int root, nint comm) => Check(_bcast(buffer, count, type, root, comm), "MPI_Bcast");

    public void Allgatherv(void* send, int sendCount, nint sendType, void* recv, int* counts, int* displs, nint recvType, nint comm)
        => Check(_allgatherv(send, sendCount, sendType, recv, counts, displs, recvType, comm), "MPI_Allgatherv");

    public void Gatherv(void* send, int sendCount, nint sendType, void* recv, int* counts, int* displs, nint recvType, int root, nint comm)
        => Check(_gatherv(send, sendCount, sendType, recv, counts, displs, recvType, root, comm), "MPI_Gatherv");

    public void Allreduce(void* send, void* recv, int count, nint type, nint op, nint comm)
        => Check(_allreduce(send, recv, count, type, op, comm), "MPI_Allreduce");

    public void Abort(nint comm, int code) => _abort(comm, code);

    public void FinalizeMpi() => Check(_finalize(), "MPI_Finalize");

    /// <summary>MPI_IN_PLACE in Open MPI.</summary>
    public static void* InPlace => (void*)1;

    private void Check(int rc, string call)
    {
        if (rc == 0) return;
        var buffer = stackalloc byte[256];   // MPI_MAX_ERROR_STRING is 256 in Open MPI
        int length = 0;
        string text = _errorString(rc, buffer, &length) == 0 ? Encoding.ASCII.GetString(buffer, Math.Clamp(length, 0, 256)) : $"error {rc}";
        throw new InvalidOperationException($"{call} failed: {text}");
    }
}

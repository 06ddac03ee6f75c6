using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace WhereToEdit.Engine.IO;

/// <summary>
/// One file being written atomically: bytes go to a temp file in the target's folder
/// (<c>.NAME.wte-PID-GUID.tmp</c>); <see cref="Commit"/> fsyncs and renames it over the target. Disposing without a
/// commit (an exception, Ctrl-C, SIGTERM) deletes the temp. Opening one removes stale temps of ours for the same
/// target left by processes that no longer run (a kill -9).
/// </summary>
internal sealed class AtomicWrite : IDisposable
{
    private static readonly ConcurrentDictionary<string, byte> Live = new(StringComparer.Ordinal);
    private static readonly object SignalLock = new();
    private static List<PosixSignalRegistration>? _signals;
    private readonly FileStream _stream;
    private bool _done;

    public AtomicWrite(string path, int bufferSize = 1 << 16)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        Target = Path.GetFullPath(path);
        string folder = OutputPaths.CreateParentFolder(Target);
        string name = Path.GetFileName(Target);
        if (name.Length == 0) throw new ArgumentException($"{path}: not a file name");
        RemoveStaleTemps(folder, name);
        TempPath = Path.Combine(folder, $".{name}.wte-{Environment.ProcessId}-{Guid.NewGuid():N}.tmp");
        InstallSignalCleanup();
        Live[TempPath] = 0;
        try
        {
            _stream = new FileStream(TempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize);
        }
        catch
        {
            Live.TryRemove(TempPath, out _);
            throw;
        }
    }

    public string Target { get; }
    public string TempPath { get; }
    public Stream Stream => _stream;

    /// <summary>fsync, close, rename over the target.</summary>
    public void Commit()
    {
        ObjectDisposedException.ThrowIf(_done, this);
        _stream.Flush(flushToDisk: true);
        _stream.Dispose();
        File.Move(TempPath, Target, overwrite: true);
        _done = true;
        Live.TryRemove(TempPath, out _);
    }

    public void Dispose()
    {
        if (_done) return;
        _done = true;
        _stream.Dispose();
        TryDelete(TempPath);
        Live.TryRemove(TempPath, out _);
    }

    /// <summary>Temp files of ours (any process, this target) whose writer no longer runs.</summary>
    internal static void RemoveStaleTemps(string folder, string name)
    {
        string prefix = $".{name}.wte-";
        IEnumerable<string> candidates;
        try
        {
            if (!Directory.Exists(folder)) return;
            candidates = Directory.EnumerateFiles(folder, prefix + "*.tmp").ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return; }
        foreach (string file in candidates)
        {
            string rest = Path.GetFileName(file)[prefix.Length..];
            int dash = rest.IndexOf('-', StringComparison.Ordinal);
            if (dash <= 0 || !int.TryParse(rest.AsSpan(0, dash), NumberStyles.None, CultureInfo.InvariantCulture, out int pid)) continue;
            if (pid == Environment.ProcessId ? Live.ContainsKey(file) : IsRunning(pid)) continue;
            TryDelete(file);
        }
    }

    private static bool IsRunning(int pid)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException) { return false; }
    }

    private static void TryDelete(string file)
    {
        try { File.Delete(file); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    /// <summary>On SIGINT/SIGTERM/SIGHUP delete the live temps, then let the signal end the process as usual.</summary>
    private static void InstallSignalCleanup()
    {
        if (_signals is not null || OperatingSystem.IsBrowser() || OperatingSystem.IsWindows()) return;
        lock (SignalLock)
        {
            if (_signals is not null) return;
            var list = new List<PosixSignalRegistration>();
            foreach (var s in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM, PosixSignal.SIGHUP })
            {
                try { list.Add(PosixSignalRegistration.Create(s, _ => { foreach (string f in Live.Keys) TryDelete(f); })); }
                catch (Exception e) when (e is PlatformNotSupportedException or IOException) { }
            }
            _signals = list;
        }
    }
}

/// <summary>Atomic whole-file writes (<see cref="AtomicWrite"/>).</summary>
public static class AtomicFile
{
    public static void Write(string path, Action<Stream> write, int bufferSize = 1 << 16)
    {
        using var w = new AtomicWrite(path, bufferSize);
        write(w.Stream);
        w.Commit();
    }

    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        using var w = new AtomicWrite(path);
        w.Stream.Write(bytes);
        w.Commit();
    }

    public static void WriteAllText(string path, string text) => WriteAllBytes(path, System.Text.Encoding.UTF8.GetBytes(text));
}

/// <summary>
/// An output folder of a command: created when missing, and on failure (dispose without <see cref="Commit"/>)
/// removed again with everything in it when this instance created it, so a failed run leaves nothing behind.
/// </summary>
internal sealed class OutputFolder : IDisposable
{
    private readonly bool _created;
    private bool _done;

    public OutputFolder(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        FullPath = Path.GetFullPath(path);
        if (File.Exists(FullPath)) throw new UnsafePathException($"{path}: is a file, not a folder");
        _created = !Directory.Exists(FullPath);
        Directory.CreateDirectory(FullPath);
    }

    public string FullPath { get; }

    public void Commit() => _done = true;

    public void Dispose()
    {
        if (_done) return;
        _done = true;
        if (!_created) return;
        try { Directory.Delete(FullPath, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}

namespace WhereToEdit.Engine.IO;

/// <summary>A path a command must not use as it is: an output that is one of its inputs, a FIFO, a path leaving its folder.</summary>
internal sealed class UnsafePathException(string message) : Exception(message);

/// <summary>
/// Real paths and the checks built on them: every symlink resolved component by component (directory links
/// included), regular files only, confinement under a root.
/// </summary>
internal static class PathSafety
{
    private const int MaxLinkHops = 40;

    /// <summary>
    /// The absolute path with every symbolic link resolved, component by component (like realpath(3)); components
    /// that do not exist are kept as written. Throws <see cref="UnsafePathException"/> on a link loop.
    /// </summary>
    public static string RealPath(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return Path.GetFullPath(path);
        var pending = new Stack<string>(Path.GetFullPath(path).Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse());
        string current = "/";
        int hops = 0;
        bool missing = false;
        while (pending.Count > 0)
        {
            string part = pending.Pop();
            if (part == ".") continue;
            if (part == "..")
            {
                current = Path.GetDirectoryName(current) ?? "/";
                continue;
            }
            string candidate = current == "/" ? "/" + part : current + "/" + part;
            string? target = null;
            if (!missing)
            {
                try
                {
                    var info = new FileInfo(candidate);
                    if (info.Exists || Directory.Exists(candidate) || info.LinkTarget is not null) target = info.LinkTarget;
                    else missing = true;   // nothing below a missing component can be a link
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    missing = true;
                }
            }
            if (target is null)
            {
                current = candidate;
                continue;
            }
            if (++hops > MaxLinkHops) throw new UnsafePathException($"{path}: too many levels of symbolic links (a link loop)");
            foreach (string t in target.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse()) pending.Push(t);
            if (target.StartsWith('/')) current = "/";
        }
        return current;
    }

    /// <summary>True when <paramref name="realPath"/> lies strictly inside <paramref name="realRoot"/> (both real paths).</summary>
    public static bool IsUnder(string realPath, string realRoot)
    {
        string root = realRoot.EndsWith('/') ? realRoot : realRoot + "/";
        return realPath.StartsWith(root, StringComparison.Ordinal) && realPath.Length > root.Length;
    }

    /// <summary>
    /// Why <paramref name="path"/> cannot be read as an input file, or null when it can: missing, a folder, or empty /
    /// not a regular file. A FIFO, socket or device reports size 0, so it is refused here before anything opens it
    /// (opening a FIFO for reading blocks until a writer comes).
    /// </summary>
    public static string? InputFileProblem(string path)
    {
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists) return Directory.Exists(path) ? "is a folder, not a file" : "no such file";
            if (info.Length == 0) return "is empty (0 bytes) or not a regular file (a FIFO, socket or device); refusing to read it";
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return $"cannot be inspected ({e.Message})";
        }
    }

    /// <summary>Throws a <see cref="CheckpointFormatException"/> naming the file when <see cref="InputFileProblem"/> finds one.</summary>
    public static void RequireInputFile(string path, string what)
    {
        if (InputFileProblem(path) is { } problem) throw new CheckpointFormatException(path, $"{what} {problem}");
    }
}

/// <summary>
/// The paths one command reads and writes, checked together before any work starts: no output may be (or, for an
/// output folder, contain) one of the inputs. Inputs are compared by real path; an input folder stands for every
/// file under it.
/// </summary>
public sealed class CommandPaths
{
    private const int MaxFolderFiles = 200_000;
    private readonly List<(string Real, string Given, string Flag, bool KeptByFolders)> _inputs = [];
    private readonly List<(string Given, string Flag, Func<string, bool>? Writes, bool Folder)> _outputs = [];

    /// <summary>
    /// An input file or folder (null is ignored; a missing path is left to the reader's own error).
    /// <paramref name="keptByFolderOutputs"/>: the command's output folders never rewrite this file even when it lies
    /// in one (a resumed checkpoint: later checkpoints get higher numbers); output files are still compared with it.
    /// </summary>
    public CommandPaths Input(string? path, string flag, bool keptByFolderOutputs = false)
    {
        if (string.IsNullOrEmpty(path)) return this;
        string real = PathSafety.RealPath(path);
        if (Directory.Exists(real))
        {
            int n = 0;
            foreach (string f in Directory.EnumerateFiles(real, "*", new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true, AttributesToSkip = 0 }))
            {
                if (++n > MaxFolderFiles) break;
                _inputs.Add((PathSafety.RealPath(f), path, flag, keptByFolderOutputs));
            }
        }
        else _inputs.Add((real, path, flag, keptByFolderOutputs));
        return this;
    }

    /// <summary>Several inputs under one flag.</summary>
    public CommandPaths Inputs(IEnumerable<string>? paths, string flag)
    {
        if (paths is not null) foreach (string p in paths) Input(p, flag);
        return this;
    }

    /// <summary>An output file (written by temp + rename).</summary>
    public CommandPaths Output(string? path, string flag)
    {
        if (!string.IsNullOrEmpty(path)) _outputs.Add((path, flag, null, false));
        return this;
    }

    /// <summary>
    /// An output folder; <paramref name="writes"/> says which file names (relative to the folder, '/'-separated) the
    /// command may write there (null: any).
    /// </summary>
    public CommandPaths OutputFolder(string? path, string flag, Func<string, bool>? writes = null)
    {
        if (!string.IsNullOrEmpty(path)) _outputs.Add((path, flag, writes, true));
        return this;
    }

    /// <summary>
    /// Refuses (<see cref="UnsafePathException"/>) when an output is an input; otherwise creates the parent folder of
    /// every output (<see cref="OutputPaths.CreateParentFolder"/>), so nothing fails for a missing folder after the work.
    /// </summary>
    public void Check()
    {
        foreach (var (given, flag, writes, folder) in _outputs)
        {
            string real = PathSafety.RealPath(given);
            if (!folder)
            {
                if (Directory.Exists(real)) throw new UnsafePathException($"{flag} {given}: is a folder; give a file name");
                foreach (var input in _inputs)
                    if (input.Real == real)
                        throw new UnsafePathException($"{flag} {given}: is the input {input.Flag} {input.Given}{(input.Given != real ? $" ({real})" : "")}; refusing to overwrite an input, write to another file");
            }
            else
            {
                if (File.Exists(real)) throw new UnsafePathException($"{flag} {given}: is a file; give a folder");
                foreach (var input in _inputs)
                {
                    if (input.Real == real || (!input.KeptByFolders && PathSafety.IsUnder(input.Real, real) && (writes is null || writes(Path.GetRelativePath(real, input.Real).Replace('\\', '/')))))
                        throw new UnsafePathException($"{flag} {given}: holds the input {input.Flag} {input.Given} ({input.Real}) that this command could overwrite; write to another folder");
                }
            }
        }
        // Two outputs on one file would clobber each other.
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (given, flag, _, folder) in _outputs)
            if (!folder && !seen.TryAdd(PathSafety.RealPath(given), flag))
                throw new UnsafePathException($"{flag} {given}: is also given as {seen[PathSafety.RealPath(given)]}; each output needs its own file");
        foreach (var (given, flag, _, _) in _outputs) OutputPaths.CreateParentFolder(given, flag);
    }
}

/// <summary>A recursive folder walk that visits each real folder once (a symlink cycle cannot repeat files or loop).</summary>
internal static class FolderWalk
{
    private const int MaxDepth = 64;

    /// <summary>Files under <paramref name="root"/> (any depth) whose name passes <paramref name="filter"/>, ordinal order.</summary>
    public static List<string> Files(string root, Func<string, bool> filter)
    {
        var files = new List<string>();
        var visited = new HashSet<string>(StringComparer.Ordinal);
        var pending = new Stack<(string Dir, int Depth)>();
        pending.Push((root, 0));
        while (pending.Count > 0)
        {
            var (dir, depth) = pending.Pop();
            if (depth > MaxDepth || !visited.Add(PathSafety.RealPath(dir))) continue;
            IEnumerable<string> entries;
            try { entries = Directory.EnumerateFileSystemEntries(dir).ToList(); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }
            foreach (string entry in entries)
            {
                if (Directory.Exists(entry)) pending.Push((entry, depth + 1));
                else if (filter(entry)) files.Add(entry);
            }
        }
        files.Sort(StringComparer.Ordinal);
        return files;
    }
}

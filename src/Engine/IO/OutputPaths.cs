namespace WhereToEdit.Engine.IO;

/// <summary>
/// The one place that prepares where a command writes: every output's parent folder is created (with its parents),
/// so `--out new/dir/model.safetensors` works, and a folder that cannot be made is one line naming the flag.
/// <see cref="CommandPaths.Check"/> calls it for every output before any work starts; the writers
/// (<see cref="AtomicWrite"/>, the figures) call it again so that a file written without a command is covered too.
/// </summary>
public static class OutputPaths
{
    /// <summary>Creates the folder <paramref name="path"/> will be written in; returns it (full path).</summary>
    /// <param name="flag">the option that named the path, for the error ("--out"); null: the path alone.</param>
    public static string CreateParentFolder(string path, string? flag = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(full) ?? Path.GetPathRoot(full) ?? "/";
        if (Directory.Exists(folder)) return folder;
        string who = flag is null ? path : $"{flag} {path}";
        // A file where a folder should be: name it rather than let .NET say "Could not find a part of the path".
        for (string? f = folder; !string.IsNullOrEmpty(f); f = Path.GetDirectoryName(f))
        {
            if (File.Exists(f)) throw new UnsafePathException($"{who}: cannot create folder {folder}: {f} is a file");
            if (Directory.Exists(f)) break;
        }
        try
        {
            Directory.CreateDirectory(folder);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UnsafePathException($"{who}: cannot create folder {folder} ({e.Message})");
        }
        return folder;
    }
}

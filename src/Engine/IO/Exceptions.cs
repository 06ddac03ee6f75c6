namespace WhereToEdit.Engine.IO;

/// <summary>
/// A checkpoint, config or tensor container that cannot be read as it is: truncated, malformed, inconsistent
/// or using something this engine does not support. The message always names the file and, where one is
/// concerned, the tensor, and says what is wrong.
/// </summary>
public class CheckpointFormatException : Exception
{
    public CheckpointFormatException(string filePath, string problem, Exception? inner = null)
        : base($"{Describe(filePath)}: {problem}", inner)
    {
        FilePath = filePath;
        Problem = problem;
    }

    /// <summary>The file that was being read (or written).</summary>
    public string FilePath { get; }

    /// <summary>The message without the file prefix.</summary>
    public string Problem { get; }

    internal static string Describe(string path) => string.IsNullOrEmpty(path) ? "<in-memory>" : path;
}

/// <summary>An image file that cannot be used: empty, truncated, not an image, too large or unsupported.</summary>
public class ImageLoadException : Exception
{
    public ImageLoadException(string filePath, string problem, Exception? inner = null)
        : base($"{CheckpointFormatException.Describe(filePath)}: {problem}", inner)
    {
        FilePath = filePath;
        Problem = problem;
    }

    public string FilePath { get; }

    public string Problem { get; }
}

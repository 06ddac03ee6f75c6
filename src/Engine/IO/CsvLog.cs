using System.Globalization;
using System.Text;

namespace WhereToEdit.Engine.IO;

/// <summary>
/// A training log (CSV, one row per step, the step number first). Opening never destroys a file this command did
/// not write: an existing file must start with the same header line. A fresh run replaces the log atomically; a
/// resumed run keeps only the rows up to the resumed step (so rows are never repeated) and appends.
/// </summary>
internal sealed class CsvLog : IDisposable
{
    private readonly StreamWriter _writer;

    private CsvLog(StreamWriter writer, string path)
    {
        _writer = writer;
        Path = path;
    }

    public string Path { get; }

    /// <param name="resumedStep">null for a fresh run; else the step the run resumes after (rows with a larger step are dropped).</param>
    public static CsvLog Open(string path, string header, string flag, long? resumedStep)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var kept = new StringBuilder(header).Append('\n');
        var info = new FileInfo(path);
        if (Directory.Exists(path)) throw new UnsafePathException($"{flag} {path}: is a folder; give a file name");
        if (info.Exists && info.Length > 0)
        {
            ResourceBudget.Require(info.Length, $"{flag} {path}", "reading the existing log");
            string[] lines;
            try { lines = File.ReadAllLines(path); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new UnsafePathException($"{flag} {path}: cannot read the existing file ({e.Message})");
            }
            if (lines.Length == 0 || lines[0].TrimEnd('\r') != header)
                throw new UnsafePathException($"{flag} {path}: exists and is not a log of this command (its first line is not the CSV header \"{header[..Math.Min(header.Length, 40)]}…\"); refusing to overwrite it");
            if (resumedStep is long last)
                foreach (string line in lines.Skip(1))
                {
                    int comma = line.IndexOf(',', StringComparison.Ordinal);
                    if (comma > 0 && long.TryParse(line.AsSpan(0, comma), NumberStyles.None, CultureInfo.InvariantCulture, out long step) && step <= last)
                        kept.Append(line.TrimEnd('\r')).Append('\n');
                }
        }
        AtomicFile.WriteAllText(path, kept.ToString());
        var stream = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read);
        return new CsvLog(new StreamWriter(stream, new UTF8Encoding(false)) { NewLine = "\n" }, path);
    }

    /// <summary>Appends one row and flushes it (a killed run keeps every finished row).</summary>
    public void WriteRow(string row)
    {
        _writer.WriteLine(row);
        _writer.Flush();
    }

    public void Dispose() => _writer.Dispose();
}

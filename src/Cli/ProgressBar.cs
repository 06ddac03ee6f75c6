using System.Diagnostics;

namespace WhereToEdit.Cli;

/// <summary>
/// A one-line progress bar on stderr: redrawn in place on a terminal, a plain line every few seconds when
/// stderr is redirected (logs, CI).
/// </summary>
internal sealed class ProgressBar(TextWriter stderr, string title)
{
    private readonly Stopwatch _sinceLine = Stopwatch.StartNew();
    private readonly bool _interactive = !Console.IsErrorRedirected && ReferenceEquals(stderr, Console.Error);

    public void Report(long done, long total, double perSecond, TimeSpan eta, string details, bool force = false)
    {
        double fraction = total > 0 ? Math.Clamp((double)done / total, 0, 1) : 0;
        const int width = 24;
        int filled = (int)Math.Round(fraction * width);
        string line = $"{title} [{new string('#', filled)}{new string('.', width - filled)}] {fraction,4:P0} {done}/{total} " +
                      $"{perSecond:F2}/s ETA {Format(eta)} {details}";
        if (_interactive)
        {
            stderr.Write("\r" + line.PadRight(Math.Max(line.Length, Console.WindowWidth > 0 ? Math.Min(Console.WindowWidth - 1, 160) : 0)));
            if (done >= total) stderr.WriteLine();
        }
        else if (force || done >= total || _sinceLine.Elapsed.TotalSeconds >= 5)
        {
            stderr.WriteLine(line);
            _sinceLine.Restart();
        }
    }

    private static string Format(TimeSpan t) => t.TotalHours >= 1 ? $"{(int)t.TotalHours}:{t.Minutes:D2}:{t.Seconds:D2}" : $"{t.Minutes:D2}:{t.Seconds:D2}";
}

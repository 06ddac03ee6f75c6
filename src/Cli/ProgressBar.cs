using System.Diagnostics;
using WhereToEdit.Engine.Jobs;

namespace WhereToEdit.Cli;

/// <summary>
/// The CLI's view of a job's progress: a one-line bar on stderr, redrawn in place on a terminal, a plain line every few
/// seconds (and at milestones and the end) when stderr is redirected (logs, CI); notes are printed as lines.
/// Rate and ETA count from the first step reported, so a resumed run shows its own speed.
/// </summary>
internal sealed class ProgressBar(TextWriter stderr) : IJobProgress
{
    private readonly Stopwatch _sinceLine = Stopwatch.StartNew();
    private readonly Stopwatch _clock = new();
    private readonly bool _interactive = !Console.IsErrorRedirected && ReferenceEquals(stderr, Console.Error);
    private string? _stage;
    private long _firstStep;
    private bool _open;

    public void Note(string message)
    {
        EndLine();
        stderr.WriteLine(message);
    }

    public void Report(JobProgress p)
    {
        if (p.Stage != _stage)
        {
            EndLine();
            _stage = p.Stage;
            _firstStep = p.Step;   // the first report only starts the clock: a rate needs a second one
            _clock.Restart();
        }
        double fraction = p.Total > 0 ? Math.Clamp((double)p.Step / p.Total, 0, 1) : 0;
        double rate = (p.Step - _firstStep) / Math.Max(1e-9, _clock.Elapsed.TotalSeconds);
        var eta = TimeSpan.FromSeconds(Math.Min(1e8, Math.Max(0, p.Total - p.Step) / Math.Max(rate, 1e-9)));
        const int width = 24;
        int filled = (int)Math.Round(fraction * width);
        string speed = p.Step > _firstStep ? $"{rate:F2}/s ETA {Format(eta)} " : "";
        string line = $"{p.Stage} [{new string('#', filled)}{new string('.', width - filled)}] {fraction,4:P0} {p.Step}/{p.Total} {speed}{p.Message}";
        bool done = p.Step >= p.Total;
        if (_interactive)
        {
            stderr.Write("\r" + line.PadRight(Math.Max(line.Length, Console.WindowWidth > 0 ? Math.Min(Console.WindowWidth - 1, 160) : 0)));
            _open = !done;
            if (done) stderr.WriteLine();
        }
        else if (p.Milestone || done || _sinceLine.Elapsed.TotalSeconds >= 5)
        {
            stderr.WriteLine(line);
            _sinceLine.Restart();
        }
    }

    /// <summary>Ends an in-place bar so that the next line starts on its own.</summary>
    private void EndLine()
    {
        if (!_open) return;
        stderr.WriteLine();
        _open = false;
    }

    private static string Format(TimeSpan t) => t.TotalHours >= 1 ? $"{(int)t.TotalHours}:{t.Minutes:D2}:{t.Seconds:D2}" : $"{t.Minutes:D2}:{t.Seconds:D2}";
}

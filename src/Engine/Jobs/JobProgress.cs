namespace WhereToEdit.Engine.Jobs;

/// <summary>
/// One progress report of a job: <see cref="Step"/> of <see cref="Total"/> in a named stage, a short human message and
/// the step's numbers (losses, rates) for machine readers. <see cref="Milestone"/> marks a report worth keeping in a log
/// (an epoch's end, a test accuracy).
/// </summary>
public sealed record JobProgress(string Stage, long Step, long Total, string Message = "", IReadOnlyDictionary<string, double>? Metrics = null)
{
    public bool Milestone { get; init; }
}

/// <summary>
/// Where a job reports how far it is: a CLI progress bar, a server's event stream, an MPI rank's log. Called on the
/// job's thread; an implementation must not throw (except to cancel, by throwing <see cref="OperationCanceledException"/>).
/// </summary>
public interface IJobProgress
{
    /// <summary>A step of a stage is done.</summary>
    void Report(JobProgress progress);

    /// <summary>A one-off line worth showing a person: what the job is about to do, a warning about the inputs.</summary>
    void Note(string message);
}

/// <summary>Discards every report.</summary>
public sealed class NullJobProgress : IJobProgress
{
    public static readonly NullJobProgress Instance = new();

    private NullJobProgress() { }

    public void Report(JobProgress progress) { }

    public void Note(string message) { }
}

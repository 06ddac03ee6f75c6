using System.Diagnostics;
using Microsoft.Extensions.Logging;
using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Jobs;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Server;

/// <summary>An edit the server has applied.</summary>
public sealed record AppliedEdit(string Id, int Seq, int Version, EditPatch Patch)
{
    public EditResult? Record => Patch.Info.Result;
}

/// <summary>What an edit request asks for (already validated and preprocessed): the engine's <see cref="LoadedEdit"/>.</summary>
public sealed record EditRequest(LoadedEdit Edit);

/// <summary>
/// The model being served and its edits. Edits and reverts run one at a time (a lock) on a private copy of the
/// weights on their own backend while the <see cref="ModelHost"/> keeps answering predictions from the current
/// version; a change is journaled and made durable first, then swapped into the host as a new version.
/// </summary>
public sealed class EditService : IDisposable
{
    private readonly SemaphoreSlim _lock = new(1, 1);
    private readonly IBackend _editBackend, _predictBackend;
    private readonly VitModel _editModel, _servingModel;
    private readonly VitModel? _baseModel;
    private readonly LoadedHypernet? _hypernet;
    private readonly Dictionary<string, ModelEditor> _editors = [];
    private readonly EditJournal? _journal;
    private readonly ServerMetrics _metrics;
    private readonly List<AppliedEdit> _active = [];
    private int _seq, _version;
    private string _fingerprint;

    public EditService(ServeOptions options, ServerMetrics metrics, ILogger log)
    {
        _metrics = metrics;
        Loaded = ModelFolder.Load(options.ModelPath);
        _predictBackend = BackendFactory.Create(options.Device, options.PredictThreads());
        _editBackend = BackendFactory.Create(options.Device, options.Threads);
        try
        {
            _editModel = VitCheckpoint.Load(_editBackend, Loaded);
            BaseFingerprint = _fingerprint = VitCheckpoint.Fingerprint(_editModel);
            if (options.HypernetPath is { } h)
            {
                // HPRD masks come from the ORIGINAL model's features, whatever edits are applied.
                _baseModel = VitCheckpoint.Load(_editBackend, Loaded);
                _hypernet = HypernetFile.Load(_editBackend, h, _baseModel, BaseFingerprint);
            }
            if (options.JournalPath is { } j)
            {
                _journal = EditJournal.Open(j, BaseFingerprint);
                foreach (string note in _journal.Notes) log.LogWarning("journal {Folder}: {Note}", _journal.Folder, note);
                Replay(_journal);
                log.LogInformation("journal {Folder}: replayed {Entries} entries, {Active} edits active, weights {Fingerprint}",
                    _journal.Folder, _journal.Entries.Count, _active.Count, _fingerprint);
            }
            else log.LogWarning("no --journal: edits live in memory only and are lost when the server stops");
            _servingModel = VitCheckpoint.Load(_predictBackend, Loaded);
            foreach (var p in _editModel.Parameters) _servingModel[p.Name].Value.CopyFrom(p.Value.ToArray());
            Host = new ModelHost(_servingModel, Loaded.Labels, CurrentVersion(), options, metrics);
            metrics.ModelVersion.Set(_version);
            metrics.ActiveEdits.Set(_active.Count);
        }
        catch
        {
            DisposeModels();
            throw;
        }
    }

    public LoadedModel Loaded { get; }
    public ModelHost Host { get; }
    public string BaseFingerprint { get; }
    public bool HasHypernet => _hypernet is not null;
    public VitConfig Config => _editModel.Config;

    private WeightsVersion CurrentVersion() => new(_version, _fingerprint, _active.Select(a => a.Id).ToArray());

    /// <summary>The latest acknowledged state (edits and reverts included).</summary>
    public WeightsVersion State
    {
        get { lock (_active) return CurrentVersion(); }
    }

    public IReadOnlyList<AppliedEdit> ActiveEdits()
    {
        lock (_active) return _active.ToArray();
    }

    /// <summary>Replays the journal onto the base weights, checking every fingerprint; any mismatch stops startup.</summary>
    private void Replay(EditJournal journal)
    {
        var patches = new Dictionary<string, AppliedEdit>(StringComparer.Ordinal);
        foreach (var e in journal.Entries)
        {
            string where = $"--journal {journal.Folder}: entry {e.Seq} ({e.Op} {e.Id})";
            try
            {
                if (e.Op == JournalEntry.EditOp)
                {
                    var patch = journal.LoadPatch(e);
                    patch.Apply(_editModel, 1f, _fingerprint);
                    var applied = new AppliedEdit(e.Id, e.Seq, e.Seq, patch);
                    patches[e.Id] = applied;
                    _active.Add(applied);
                }
                else
                {
                    var applied = patches[e.Id];
                    PatchStack.RevertUnits(_editModel, applied.Patch);
                    _active.Remove(applied);
                }
            }
            catch (Exception ex) when (ex is InvalidOperationException or CheckpointFormatException or KeyNotFoundException)
            {
                throw new ArgumentException($"{where}: cannot be replayed: {ex.Message}");
            }
            string now = VitCheckpoint.Fingerprint(_editModel);
            if (now != e.After)
                throw new ArgumentException($"{where}: replay gives weights {now}, but the journal recorded {e.After}");
            _fingerprint = now;
            _seq = _version = e.Seq;
        }
    }

    /// <summary>
    /// Runs an edit from the current weights through the engine's edit job (<see cref="EditJob.Edit"/>, the path
    /// `wte edit` takes, so the record is the one `wte edit --json` prints); journals it, then swaps it in. 422 when it
    /// does not fix the images.
    /// </summary>
    public async Task<AppliedEdit> EditAsync(EditRequest request, CancellationToken cancel)
    {
        var edit = request.Edit;
        if (edit.Method == EditMethod.Hprd && _hypernet is null)
            throw ApiError.BadRequest("method: hprd needs a hypernetwork; start the server with --hypernet, or choose ft-l1, ft-l2 or random");
        await _lock.WaitAsync(cancel);
        _metrics.EditRunning.Set(1);
        var clock = Stopwatch.StartNew();
        string outcome = "error";
        try
        {
            // A dedicated thread, not a thread-pool one: an edit computes for up to seconds, and holding a pool thread that
            // long starves the timers and continuations that time out and answer the other requests on a small machine.
            var done = await Task.Factory.StartNew(
                () => EditJob.Edit(_editModel, _fingerprint, edit, _hypernet is null ? null : new MaskSource(_baseModel!, _hypernet), Editor),
                CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            var (result, patch, editor) = (done.Result, done.Patch, done.Editor);
            if (!result.Success)
            {
                editor.Revert();
                outcome = "not_fixed";
                throw new ApiError(422, $"edit: not fixed within max_steps {done.Options.MaxSteps} (p(label) {string.Join(", ", result.TargetProbAfter)}); nothing was changed", new { record = result });
            }
            int seq = _seq + 1;
            string id = $"e{seq}";
            var entry = new JournalEntry { Seq = seq, Op = JournalEntry.EditOp, Id = id, Before = _fingerprint, After = patch.Info.EditedFingerprint };
            try
            {
                _journal?.AppendEdit(entry, patch);
            }
            catch
            {
                editor.Revert();
                throw;
            }
            var applied = new AppliedEdit(id, seq, seq, patch);
            await CommitAsync(seq, patch.Info.EditedFingerprint, () => _active.Add(applied), patch.Units.Select(u => u.Parameter));
            outcome = "applied";
            return applied;
        }
        finally
        {
            _metrics.EditDuration.WithLabels(edit.Method.Name(), outcome).Observe(clock.Elapsed.TotalSeconds);
            _metrics.EditRunning.Set(0);
            _lock.Release();
        }
    }

    /// <summary>Reverts an edit bit for bit; 404 unknown, 409 when a later edit changed the same units.</summary>
    public async Task<WeightsVersion> RevertAsync(string id, CancellationToken cancel)
    {
        await _lock.WaitAsync(cancel);
        _metrics.EditRunning.Set(1);
        var clock = Stopwatch.StartNew();
        try
        {
            int at = _active.FindIndex(a => a.Id == id);
            if (at < 0) throw new ApiError(404, $"id: no applied edit '{id}'");
            var edit = _active[at];
            for (int later = at + 1; later < _active.Count; later++)
            {
                var shared = PatchStack.SharedUnits(edit.Patch, _active[later].Patch);
                if (shared.Count > 0)
                    throw new ApiError(409, $"id: edit {id} cannot be reverted: the later edit {_active[later].Id} changed the same units ({string.Join(", ", shared.Select(s => $"{s.Parameter}: {s.Units}"))}); revert {_active[later].Id} first");
            }
            PatchStack.RevertUnits(_editModel, edit.Patch);
            string after = VitCheckpoint.Fingerprint(_editModel);
            int seq = _seq + 1;
            try
            {
                _journal?.AppendRevert(new JournalEntry { Seq = seq, Op = JournalEntry.RevertOp, Id = id, Before = _fingerprint, After = after });
            }
            catch
            {
                PatchStack.ReapplyUnits(_editModel, edit.Patch);   // back to the acknowledged state
                throw;
            }
            await CommitAsync(seq, after, () => _active.Remove(edit), edit.Patch.Units.Select(u => u.Parameter));
            _metrics.RevertDuration.Observe(clock.Elapsed.TotalSeconds);
            return State;
        }
        finally
        {
            _metrics.EditRunning.Set(0);
            _lock.Release();
        }
    }

    private async Task CommitAsync(int seq, string fingerprint, Action change, IEnumerable<string> parameters)
    {
        WeightsVersion version;
        lock (_active)
        {
            change();
            _seq = _version = seq;
            _fingerprint = fingerprint;
            version = CurrentVersion();
        }
        _metrics.ActiveEdits.Set(version.EditIds.Count);
        var weights = parameters.Distinct().Select(n => (n, _editModel[n].Value.ToArray())).ToList();
        await Host.SwapAsync(version, weights);
    }

    /// <summary>The editor for a target (kept between edits), its originals taken from the current weights.</summary>
    private ModelEditor Editor(EditTarget target)
    {
        string key = string.Join(",", target.Blocks);
        if (_editors.TryGetValue(key, out var editor)) editor.SnapshotOriginal();
        else _editors[key] = editor = new ModelEditor(_editModel, target);
        return editor;
    }

    private void DisposeModels()
    {
        foreach (var e in _editors.Values) e.Dispose();
        _hypernet?.Dispose();
        _baseModel?.Dispose();
        _editModel?.Dispose();
        _servingModel?.Dispose();
        _journal?.Dispose();
        _editBackend.Dispose();
        _predictBackend.Dispose();
    }

    public void Dispose()
    {
        Host?.Dispose();
        DisposeModels();
    }
}

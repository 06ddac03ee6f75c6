using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using WhereToEdit.Engine.Editing;

namespace WhereToEdit.Server;

/// <summary>One journal line: an edit (with its patch file) or the revert of an earlier edit.</summary>
public sealed record JournalEntry
{
    [JsonPropertyName("seq")] public required int Seq { get; init; }
    [JsonPropertyName("op")] public required string Op { get; init; }
    [JsonPropertyName("id")] public required string Id { get; init; }
    /// <summary>Weights fingerprint before and after the entry: replay checks both.</summary>
    [JsonPropertyName("before")] public required string Before { get; init; }
    [JsonPropertyName("after")] public required string After { get; init; }
    /// <summary>SHA-256 of the patch file (edits only).</summary>
    [JsonPropertyName("patch_sha256")] public string? PatchSha256 { get; init; }

    public const string EditOp = "edit", RevertOp = "revert";
}

/// <summary>
/// The durable history of a served model: <c>base.json</c> (the base model's fingerprint), <c>patches/NNNNNN.safetensors</c>
/// (one edit patch per edit entry) and <c>journal.jsonl</c> (ordered entries, each line followed by a tab and the
/// SHA-256 of the line). An entry is acknowledged only after its patch file (temporary file, fsync, rename, folder
/// fsync) and its journal line are both fsynced. File names come from sequence numbers, never from a request.
/// </summary>
public sealed class EditJournal : IDisposable
{
    public const string BaseFile = "base.json", JournalFile = "journal.jsonl", PatchFolder = "patches";
    private const string Format = "wte-journal/1";
    private static readonly JsonSerializerOptions Json = new() { DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    private readonly string _folder;
    private FileStream? _log;

    private EditJournal(string folder, IReadOnlyList<JournalEntry> entries, IReadOnlyList<string> notes)
    {
        _folder = folder;
        Entries = entries;
        Notes = notes;
    }

    public string Folder => _folder;
    /// <summary>The entries found when the journal was opened, in order.</summary>
    public IReadOnlyList<JournalEntry> Entries { get; }
    /// <summary>What opening repaired (an unacknowledged torn last line, orphan patch files), for the log.</summary>
    public IReadOnlyList<string> Notes { get; }
    public bool Broken { get; private set; }

    public string PatchPath(int seq) => Path.Combine(_folder, PatchFolder, $"{seq:D6}.safetensors");

    /// <summary>
    /// Opens (or creates) the journal for the base model with <paramref name="baseFingerprint"/>. Refuses a journal of
    /// another base model and any corrupt entry; only a final line cut short by a crash (never acknowledged: the
    /// newline is part of the fsynced append) is dropped, and said so in <see cref="Notes"/>.
    /// </summary>
    public static EditJournal Open(string folder, string baseFingerprint)
    {
        folder = Path.GetFullPath(folder);
        var notes = new List<string>();
        string basePath = Path.Combine(folder, BaseFile), logPath = Path.Combine(folder, JournalFile);
        if (File.Exists(folder)) throw new ArgumentException($"--journal {folder}: is a file; give a folder");
        if (!File.Exists(basePath))
        {
            // Check before creating anything: a folder that is not ours is left exactly as it was.
            string patches = Path.Combine(folder, PatchFolder);
            if (File.Exists(logPath) || (Directory.Exists(patches) && Directory.EnumerateFiles(patches, "*.safetensors").Any()))
                throw new ArgumentException($"--journal {folder}: corrupt journal: {BaseFile} is missing but entries exist");
            if (Directory.Exists(folder) && Directory.EnumerateFileSystemEntries(folder).Any(e => Path.GetFileName(e) != PatchFolder))
                throw new ArgumentException($"--journal {folder}: the folder holds other files and is not a journal; give an empty or new folder");
            Directory.CreateDirectory(patches);
            Durable.WriteAllText(basePath, JsonSerializer.Serialize(new { format = Format, base_fingerprint = baseFingerprint }));
            Durable.SyncFolder(Path.GetDirectoryName(folder)!);
        }
        else
        {
            Directory.CreateDirectory(Path.Combine(folder, PatchFolder));
            string stored;
            try
            {
                using var doc = JsonDocument.Parse(File.ReadAllText(basePath));
                if (doc.RootElement.GetProperty("format").GetString() != Format) throw new JsonException($"format is not {Format}");
                stored = doc.RootElement.GetProperty("base_fingerprint").GetString() ?? throw new JsonException("base_fingerprint is null");
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                throw new ArgumentException($"--journal {folder}: corrupt journal: {BaseFile}: {e.Message}");
            }
            if (!string.Equals(stored, baseFingerprint, StringComparison.OrdinalIgnoreCase))
                throw new ArgumentException($"--journal {folder}: the journal belongs to base model {stored}, but MODEL's fingerprint is {baseFingerprint}; point --journal at this model's journal or a new folder");
        }

        var entries = ReadEntries(folder, logPath, baseFingerprint, notes);
        // Patch files past the last entry were written by an edit whose journal line never landed: never acknowledged.
        foreach (string f in Directory.EnumerateFiles(Path.Combine(folder, PatchFolder)))
        {
            string name = Path.GetFileName(f);
            bool temp = name.StartsWith('.') && name.EndsWith(".tmp", StringComparison.Ordinal);
            int seq = 0;
            bool patch = name.EndsWith(".safetensors", StringComparison.Ordinal) && int.TryParse(name[..^".safetensors".Length], out seq);
            if (temp || (patch && !(seq >= 1 && seq <= entries.Count && entries[seq - 1].Op == JournalEntry.EditOp)))
            {
                File.Delete(f);
                notes.Add($"removed {PatchFolder}/{name}: written by an edit that was never acknowledged");
            }
        }
        foreach (var e in entries.Where(e => e.Op == JournalEntry.EditOp))
            if (!File.Exists(Path.Combine(folder, PatchFolder, $"{e.Seq:D6}.safetensors")))
                throw new ArgumentException($"--journal {folder}: corrupt journal: entry {e.Seq} ({e.Id}) has no patch file {PatchFolder}/{e.Seq:D6}.safetensors");
        return new EditJournal(folder, entries, notes);
    }

    private static List<JournalEntry> ReadEntries(string folder, string logPath, string baseFingerprint, List<string> notes)
    {
        var entries = new List<JournalEntry>();
        if (!File.Exists(logPath)) return entries;
        byte[] bytes = File.ReadAllBytes(logPath);
        int end = Array.LastIndexOf(bytes, (byte)'\n') + 1;
        if (end < bytes.Length)
        {
            // A crash during the append: the line never got its newline, so it was never acknowledged.
            using (var fs = new FileStream(logPath, FileMode.Open, FileAccess.Write)) { fs.SetLength(end); fs.Flush(true); }
            notes.Add($"dropped an incomplete last journal line ({bytes.Length - end} bytes) left by a crash before it was acknowledged");
        }
        string text = Encoding.UTF8.GetString(bytes, 0, end);
        string expectedBefore = baseFingerprint;
        var ids = new HashSet<string>(StringComparer.Ordinal);
        int lineNo = 0;
        foreach (string line in text.Split('\n', StringSplitOptions.None)[..^1])
        {
            lineNo++;
            string where = $"--journal {folder}: corrupt journal: {JournalFile} line {lineNo}";
            int tab = line.LastIndexOf('\t');
            if (tab < 0 || Checksum(line[..tab]) != line[(tab + 1)..]) throw new ArgumentException($"{where}: checksum mismatch");
            JournalEntry entry;
            try { entry = JsonSerializer.Deserialize<JournalEntry>(line[..tab], Json) ?? throw new JsonException("null"); }
            catch (JsonException e) { throw new ArgumentException($"{where}: {e.Message}"); }
            if (entry.Seq != lineNo) throw new ArgumentException($"{where}: sequence number {entry.Seq}, expected {lineNo}");
            if (!string.Equals(entry.Before, expectedBefore, StringComparison.OrdinalIgnoreCase))
                throw new ArgumentException($"{where}: starts from weights {entry.Before}, but the entry before ends at {expectedBefore}");
            if (entry.Op == JournalEntry.EditOp)
            {
                if (entry.Id != $"e{entry.Seq}" || entry.PatchSha256 is null) throw new ArgumentException($"{where}: malformed edit entry");
                ids.Add(entry.Id);
            }
            else if (entry.Op == JournalEntry.RevertOp)
            {
                if (!ids.Remove(entry.Id)) throw new ArgumentException($"{where}: reverts {entry.Id}, which is not an applied edit");
            }
            else throw new ArgumentException($"{where}: unknown op '{entry.Op}'");
            expectedBefore = entry.After;
            entries.Add(entry);
        }
        return entries;
    }

    private static string Checksum(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..32];

    public static string FileSha256(string path)
    {
        using var fs = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(fs));
    }

    /// <summary>Loads the patch of an edit entry, checking the file's hash against the journal.</summary>
    public EditPatch LoadPatch(JournalEntry entry)
    {
        string path = PatchPath(entry.Seq);
        if (FileSha256(path) != entry.PatchSha256)
            throw new ArgumentException($"--journal {_folder}: corrupt journal: {PatchFolder}/{entry.Seq:D6}.safetensors does not match the hash its entry {entry.Seq} recorded");
        return EditPatch.Load(path);
    }

    /// <summary>Makes an edit durable: patch file (temp, fsync, rename, folder fsync), then the fsynced journal line.</summary>
    public void AppendEdit(JournalEntry entry, EditPatch patch)
    {
        EnsureWritable();
        string path = PatchPath(entry.Seq);
        try
        {
            patch.Save(path);   // temporary file + fsync + rename
            Durable.SyncFolder(Path.GetDirectoryName(path)!);
            Append(entry with { PatchSha256 = FileSha256(path) });
        }
        catch
        {
            // Not acknowledged: remove the patch so the folder holds nothing the journal does not name.
            if (!Broken) try { File.Delete(path); } catch (IOException) { }
            throw;
        }
    }

    public void AppendRevert(JournalEntry entry)
    {
        EnsureWritable();
        Append(entry);
    }

    private void Append(JournalEntry entry)
    {
        string json = JsonSerializer.Serialize(entry, Json);
        byte[] line = Encoding.UTF8.GetBytes($"{json}\t{Checksum(json)}\n");
        _log ??= OpenLog();
        try
        {
            _log.Write(line);
            _log.Flush(flushToDisk: true);
        }
        catch
        {
            // Whether the line reached the disk is unknown: refuse further changes until a restart re-reads the journal.
            Broken = true;
            throw;
        }
    }

    private FileStream OpenLog()
    {
        string path = Path.Combine(_folder, JournalFile);
        bool created = !File.Exists(path);
        var fs = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read);
        if (created) Durable.SyncFolder(_folder);
        return fs;
    }

    private void EnsureWritable()
    {
        if (Broken) throw new ApiError(503, "journal: an earlier write failed; restart the server to re-read the journal");
    }

    public void Dispose() => _log?.Dispose();
}

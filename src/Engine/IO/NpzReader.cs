using System.IO.Compression;

namespace WhereToEdit.Engine.IO;

/// <summary>
/// Reads a NumPy .npz (a ZIP of .npy members, stored or deflated) such as Google's AugReg ViT checkpoints.
/// Member names lose their ".npy" suffix. Parameters saved under a <c>params/</c> or <c>opt/target/</c> prefix
/// (Flax train states) are taken without it; when an <c>opt/target/</c> tree is present, the members outside it
/// (optimizer state) are skipped and counted in the metadata key <c>npz.skipped_members</c>.
/// </summary>
internal static class NpzReader
{
    /// <summary>Prefixes stripped from member names, checked in this order.</summary>
    public static readonly IReadOnlyList<string> ToleratedPrefixes = ["opt/target/", "params/"];

    /// <summary>Most members an archive may hold.</summary>
    public const int MaxMembers = 100_000;

    public static TensorFile Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        PathSafety.RequireInputFile(path, ".npz file");
        FileStream fs;
        try
        {
            fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointFormatException(path, $"cannot open .npz file: {e.Message}", e);
        }
        using (fs)
        {
            if (fs.Length == 0)
                throw new CheckpointFormatException(path, "file is empty (0 bytes), not a .npz archive");
            ZipArchive zip;
            try
            {
                zip = new ZipArchive(fs, ZipArchiveMode.Read, leaveOpen: true);
            }
            catch (InvalidDataException e)
            {
                throw new CheckpointFormatException(path, $"not a valid .npz (ZIP) archive or truncated: {e.Message}", e);
            }
            using (zip)
            {
                try
                {
                    return ReadArchive(zip, path);
                }
                catch (InvalidDataException e)
                {
                    throw new CheckpointFormatException(path, $"corrupt .npz (ZIP) archive: {e.Message}", e);
                }
            }
        }
    }

    private static TensorFile ReadArchive(ZipArchive zip, string path)
    {
        if (zip.Entries.Count > MaxMembers) throw new CheckpointFormatException(path, $"{zip.Entries.Count} ZIP members; more than {MaxMembers} is not a checkpoint");
        var entries = zip.Entries.Where(e => !(e.FullName.EndsWith('/') && e.Length == 0)).ToList();
        // The declared sizes bound what is inflated (Npy.Read refuses a member longer than declared); check their float32 total first.
        long declared = 0;
        foreach (var e in entries)
        {
            if (e.FullName.Length > 4096) throw new CheckpointFormatException(path, $"a ZIP member name is {e.FullName.Length} characters long");
            declared = ResourceBudget.Add(declared, ResourceBudget.Bytes(Math.Max(e.Length, 1), 2));   // f2 → f4 doubles at most
        }
        ResourceBudget.Require(declared, path, $"the {entries.Count} members' declared sizes");
        bool hasOptTarget = entries.Any(e => e.FullName.StartsWith("opt/target/", StringComparison.Ordinal));
        var tensors = new List<NamedTensor>(entries.Count);
        var names = new Dictionary<string, string>(StringComparer.Ordinal); // tensor name → member
        int skipped = 0;
        foreach (var entry in entries)
        {
            string member = entry.FullName;
            if (hasOptTarget && !member.StartsWith("opt/target/", StringComparison.Ordinal))
            {
                skipped++;
                continue;
            }
            if (!member.EndsWith(".npy", StringComparison.Ordinal))
                throw new CheckpointFormatException(path, $"member '{member}' is not a .npy array (an .npz holds only .npy members)");
            string name = member[..^4];
            foreach (var prefix in ToleratedPrefixes)
            {
                if (name.StartsWith(prefix, StringComparison.Ordinal))
                {
                    name = name[prefix.Length..];
                    break;
                }
            }
            if (name.Length == 0)
                throw new CheckpointFormatException(path, $"member '{member}' has an empty tensor name");
            if (!names.TryAdd(name, member))
                throw new CheckpointFormatException(path, $"duplicate tensor name '{name}' (members '{names[name]}' and '{member}')");

            string where = $"tensor '{name}' (member '{member}')";
            Stream s;
            try
            {
                s = entry.Open();
            }
            catch (InvalidDataException e)
            {
                throw new CheckpointFormatException(path, $"{where}: cannot open ZIP member: {e.Message}", e);
            }
            using (s)
            {
                try
                {
                    // A corrupted deflate stream can decode to the right length with the wrong values: check the member's CRC-32.
                    var checkedStream = new Crc32Stream(s);
                    tensors.Add(Npy.Read(checkedStream, name, path, where, entry.Length));
                    checkedStream.CopyTo(Stream.Null);
                    if (checkedStream.Crc32 != entry.Crc32)
                        throw new CheckpointFormatException(path, $"{where}: corrupt ZIP member: CRC-32 {checkedStream.Crc32:x8} does not match the recorded {entry.Crc32:x8}");
                }
                catch (InvalidDataException e)
                {
                    throw new CheckpointFormatException(path, $"{where}: corrupt ZIP member: {e.Message}", e);
                }
                catch (IOException e) when (e is not FileNotFoundException)
                {
                    throw new CheckpointFormatException(path, $"{where}: cannot read ZIP member: {e.Message}", e);
                }
            }
        }
        var metadata = new Dictionary<string, string>();
        if (skipped > 0)
            metadata["npz.skipped_members"] = $"{skipped} member(s) outside opt/target/ (optimizer state) were not read";
        return new TensorFile(tensors, metadata, path, CheckpointFormat.Npz);
    }
}

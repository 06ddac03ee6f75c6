using WhereToEdit.Engine.IO;
using System.Globalization;

namespace WhereToEdit.Engine.Jobs;

/// <summary>Checks and expansions of the paths and names a job is given, shared by the jobs.</summary>
public static class JobInputs
{
    /// <summary>Files as given; folders expand to their image files (recursively, sorted).</summary>
    public static List<string> ExpandImages(IEnumerable<string> inputs)
    {
        var files = new List<string>();
        foreach (string input in inputs)
        {
            if (Directory.Exists(input))
            {
                var found = FolderWalk.Files(input, ImageLoader.HasImageExtension);
                if (found.Count == 0) throw new ArgumentException($"{input}: folder holds no images ({string.Join(", ", ImageLoader.Extensions)})");
                files.AddRange(found);
            }
            else if (File.Exists(input)) files.Add(input);
            else throw new FileNotFoundException($"{input}: no such file or folder", input);
        }
        return files;
    }

    /// <summary>A class given as an index or as one of the model's label names (case-insensitive).</summary>
    public static int ParseLabel(string text, int classes, IReadOnlyList<string>? labels)
    {
        if (int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int index))
            return index >= 0 && index < classes ? index : throw new ArgumentException($"--label {index}: the model has classes 0..{classes - 1}");
        if (labels is not null)
            for (int i = 0; i < labels.Count; i++)
                if (string.Equals(labels[i], text, StringComparison.OrdinalIgnoreCase)) return i;
        throw new ArgumentException($"--label '{text}': not a class index or one of the model's label names");
    }
}

using System.Globalization;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Reports;

/// <summary>
/// The pictures people look at instead of tables: an edit's mask over blocks × hidden units, an edit's
/// before/after prediction panel, and training curves from the CSV logs. PNG and SVG (ScottPlot), each written
/// to a temporary name and renamed.
/// </summary>
public static class Figures
{
    /// <summary>Selected hidden units per edited matrix (rows: blk7.fc1, blk7.fc2, …; columns: unit index).</summary>
    public static IReadOnlyList<string> MaskHeatmap(EditPatch patch, string stem)
    {
        ArgumentNullException.ThrowIfNull(patch);
        var units = patch.Units.OrderBy(u => u.Index).ToList();
        int hidden = patch.Info.MlpHidden;
        var data = new double[units.Count, hidden];
        for (int r = 0; r < units.Count; r++)
            foreach (int j in units[r].Indices) data[r, j] = 1;
        var plot = new ScottPlot.Plot();
        var map = plot.Add.Heatmap(data);
        map.Colormap = new ScottPlot.Colormaps.Grayscale();
        map.FlipVertically = true;
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            [.. Enumerable.Range(0, units.Count).Select(r => (double)r)], [.. units.Select(u => ShortName(u.Parameter))]);
        long kept = units.Sum(u => (long)u.Indices.Length);
        plot.Title($"edit mask ({patch.Info.Method}, keep {patch.Info.Keep.ToString("0.###", CultureInfo.InvariantCulture)}): {kept:N0} of {(long)units.Count * hidden:N0} units, white = edited");
        plot.XLabel("hidden unit");
        return Save(plot, stem, Math.Clamp(hidden * 2, 720, 1600), 120 + 40 * units.Count);
    }

    /// <summary>The edit image beside its top classes' probabilities before and after the edit.</summary>
    public static IReadOnlyList<string> BeforeAfter(DecodedImage image, IReadOnlyList<ClassScore> before, IReadOnlyList<ClassScore> after,
                                                    string title, string stem)
    {
        ArgumentNullException.ThrowIfNull(image);
        var classes = before.Concat(after).Select(s => s.Index).Distinct().ToList();
        string Label(int index) => before.Concat(after).First(s => s.Index == index).Label;
        double P(IReadOnlyList<ClassScore> scores, int index) => scores.FirstOrDefault(s => s.Index == index)?.Probability ?? 0;
        classes = [.. classes.OrderByDescending(c => P(after, c))];

        var plot = new ScottPlot.Plot();
        // Bars to the right of x = 0; the image sits in [-1.1, -0.1] × [row span], in the same axes.
        var beforeBars = new List<ScottPlot.Bar>();
        var afterBars = new List<ScottPlot.Bar>();
        for (int k = 0; k < classes.Count; k++)
        {
            double y = classes.Count - 1 - k;
            beforeBars.Add(new ScottPlot.Bar { Position = y + 0.2, Value = P(before, classes[k]), Size = 0.35, FillColor = ScottPlot.Colors.Gray });
            afterBars.Add(new ScottPlot.Bar { Position = y - 0.2, Value = P(after, classes[k]), Size = 0.35, FillColor = ScottPlot.Colors.SteelBlue });
        }
        var b1 = plot.Add.Bars(beforeBars);
        b1.Horizontal = true;
        b1.LegendText = "before";
        var b2 = plot.Add.Bars(afterBars);
        b2.Horizontal = true;
        b2.LegendText = "after";
        plot.Add.ImageRect(ToScottImage(image), new ScottPlot.CoordinateRect(-1.1, -0.1, -0.5, classes.Count - 0.5));
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            [.. Enumerable.Range(0, classes.Count).Select(k => (double)(classes.Count - 1 - k))], [.. classes.Select(Label)]);
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            [0, 0.2, 0.4, 0.6, 0.8, 1.0], ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        plot.Axes.SetLimits(-1.15, 1.05, -0.6, classes.Count - 0.4);
        plot.Title(title);
        plot.XLabel("probability");
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        return Save(plot, stem, 800, 120 + 50 * classes.Count);
    }

    /// <summary>One point of a trade-off plot: its series (legend), its name (the setting) and where it lies.</summary>
    public sealed record ParetoPoint(string Series, string Label, double X, double Y);

    /// <summary>
    /// A trade-off plot where more is better on both axes: one line of markers per series, the Pareto front (points no
    /// other point beats on both axes) as a dashed line, and every front point labelled with its name.
    /// </summary>
    public static IReadOnlyList<string> Pareto(IReadOnlyList<ParetoPoint> points, string title, string xLabel, string yLabel, string stem)
    {
        var plot = new ScottPlot.Plot();
        // A series' family is its first word (HPRD, RANDOM, FT-L1, FT-L2): one colour and one legend entry per family, so
        // that a swept learning rate (one curve per keep / coefficient) does not multiply the legend.
        var palette = new ScottPlot.Palettes.Category10();
        var families = new List<string>();
        foreach (var series in points.GroupBy(p => p.Series))
        {
            string family = series.Key.Split(' ')[0];
            bool first = !families.Contains(family);
            if (first) families.Add(family);
            var ordered = series.OrderBy(p => p.X).ToList();
            var scatter = plot.Add.Scatter(ordered.Select(p => p.X).ToArray(), ordered.Select(p => p.Y).ToArray());
            scatter.Color = palette.GetColor(families.IndexOf(family));
            scatter.LegendText = first ? (family == series.Key ? family : family + " (a line per setting)") : "";
            scatter.MarkerSize = 7;
        }
        var front = ParetoFront(points);
        if (front.Count > 0)
        {
            var line = plot.Add.Scatter(front.Select(p => p.X).ToArray(), front.Select(p => p.Y).ToArray());
            line.LegendText = "Pareto front";
            line.Color = ScottPlot.Colors.Black;
            line.LinePattern = ScottPlot.LinePattern.Dashed;
            line.LineWidth = 1.5f;
            line.MarkerSize = 0;
            double middle = (points.Min(p => p.X) + points.Max(p => p.X)) / 2;
            foreach (var p in front)
            {
                // Above the point, towards the middle of the plot, so that no label runs off an edge.
                bool right = p.X > middle;
                var text = plot.Add.Text(p.Label, p.X, p.Y);
                text.LabelFontSize = 11;
                text.LabelAlignment = right ? ScottPlot.Alignment.LowerRight : ScottPlot.Alignment.LowerLeft;
                text.LabelOffsetX = right ? -5 : 5;
                text.LabelOffsetY = -4;
            }
        }
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.ShowLegend(ScottPlot.Alignment.LowerLeft);
        return Save(plot, stem, 720, 480);
    }

    /// <summary>The points no other point beats on both axes (ties kept once), by increasing X.</summary>
    public static List<ParetoPoint> ParetoFront(IEnumerable<ParetoPoint> points)
    {
        var list = points.Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y)).ToList();
        return list.Where(p => !list.Any(q => q.X >= p.X && q.Y >= p.Y && (q.X > p.X || q.Y > p.Y)))
            .DistinctBy(p => (p.X, p.Y)).OrderBy(p => p.X).ToList();
    }

    /// <summary>
    /// One plot per numeric column of a CSV training log against its first column (iteration/step), with a
    /// moving average over noisy series. Columns that are only timings are left out unless asked for.
    /// </summary>
    public static IReadOnlyList<string> Curves(string csvPath, string folder, IReadOnlyList<string>? columns = null)
    {
        var lines = File.ReadAllLines(csvPath).Where(l => l.Length > 0).ToList();
        if (lines.Count < 2) throw new InvalidDataException($"{csvPath}: no rows (expected a header and one line per step)");
        var header = lines[0].Split(',');
        var wanted = columns ?? header.Skip(1).Where(h => h is not ("seconds" or "epoch") && !h.EndsWith("_s", StringComparison.Ordinal)).ToList();
        foreach (string c in wanted)
            if (!header.Contains(c)) throw new ArgumentException($"--columns: {csvPath} has no column '{c}' (it has: {string.Join(", ", header)})");
        var rows = lines.Skip(1).Select(l => l.Split(',')).ToList();
        double Parse(string s) => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? v : double.NaN;
        var x = rows.Select(r => Parse(r[0])).ToArray();
        Directory.CreateDirectory(folder);
        var files = new List<string>();
        foreach (string column in wanted)
        {
            int c = Array.IndexOf(header, column);
            var points = rows.Select((r, i) => (X: x[i], Y: c < r.Length ? Parse(r[c]) : double.NaN)).Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y)).ToList();
            if (points.Count == 0) continue;   // e.g. test_accuracy, filled only at epoch ends, may be empty in a short log
            var plot = new ScottPlot.Plot();
            var raw = plot.Add.Scatter(points.Select(p => p.X).ToArray(), points.Select(p => p.Y).ToArray());
            raw.LegendText = column;
            raw.MarkerSize = points.Count < 50 ? 5 : 0;
            raw.LineWidth = 1;
            int window = Math.Max(1, points.Count / 50);
            if (window > 1)
            {
                var smooth = MovingAverage(points.Select(p => p.Y).ToArray(), window);
                var s = plot.Add.Scatter(points.Select(p => p.X).ToArray(), smooth);
                s.LegendText = $"{column} (mean of {window})";
                s.MarkerSize = 0;
                s.LineWidth = 2.5f;
                raw.Color = raw.Color.WithAlpha(0.35);
            }
            plot.Title($"{Path.GetFileName(csvPath)}: {column}");
            plot.XLabel(header[0]);
            plot.YLabel(column);
            plot.ShowLegend(ScottPlot.Alignment.UpperRight);
            files.AddRange(Save(plot, Path.Combine(folder, Sanitise(column)), 720, 420));
        }
        if (files.Count == 0) throw new InvalidDataException($"{csvPath}: none of the columns {string.Join(", ", wanted)} has numbers");
        return files;
    }

    private static double[] MovingAverage(double[] y, int window)
    {
        var r = new double[y.Length];
        double sum = 0;
        for (int i = 0; i < y.Length; i++)
        {
            sum += y[i];
            if (i >= window) sum -= y[i - window];
            r[i] = sum / Math.Min(i + 1, window);
        }
        return r;
    }

    private static ScottPlot.Image ToScottImage(DecodedImage image)
    {
        using var rgb = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(image.Width, image.Height);
        for (int y = 0; y < image.Height; y++)
            for (int x = 0; x < image.Width; x++)
            {
                int o = (y * image.Width + x) * image.Channels;
                rgb[x, y] = image.Channels == 1
                    ? new(image.Pixels[o], image.Pixels[o], image.Pixels[o])
                    : new(image.Pixels[o], image.Pixels[o + 1], image.Pixels[o + 2]);
            }
        using var png = new MemoryStream();
        SixLabors.ImageSharp.ImageExtensions.SaveAsPng(rgb, png);
        return new ScottPlot.Image(png.ToArray());
    }

    private static string ShortName(string parameter) =>
        parameter.Replace("blocks.", "blk", StringComparison.Ordinal).Replace(".mlp.", ".", StringComparison.Ordinal).Replace(".weight", "", StringComparison.Ordinal);

    private static string Sanitise(string s) => new([.. s.Select(ch => char.IsLetterOrDigit(ch) || ch is '_' or '-' ? ch : '_')]);

    private static IReadOnlyList<string> Save(ScottPlot.Plot plot, string stem, int width, int height)
    {
        OutputPaths.CreateParentFolder(stem);
        var files = new List<string>();
        foreach (string ext in new[] { ".png", ".svg" })
        {
            string path = stem + ext, temp = stem + ".tmp" + ext;   // ScottPlot picks the format from the extension
            try
            {
                if (ext == ".png") plot.SavePng(temp, width, height);
                else plot.SaveSvg(temp, width, height);
                File.Move(temp, path, overwrite: true);
            }
            finally
            {
                if (File.Exists(temp)) File.Delete(temp);
            }
            files.Add(path);
        }
        return files;
    }
}

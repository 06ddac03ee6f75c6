using System.Globalization;
using System.Text;
using System.Text.Json;
using WhereToEdit.Engine.Reports;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Evaluation;

/// <summary>Mean SR / GR / LR of a set of edit records.</summary>
public sealed record MetricRow(string Subset, string Group, string Method, string Setting, double Keep, float Coefficient, int Edits, double Sr, double Gr, double Lr, double MeanSteps)
{
    /// <summary>Mean LR on the broad locality set (NaN when the run had none).</summary>
    public double LrBroad { get; init; } = double.NaN;
    /// <summary>Half-widths of the 95 % confidence intervals of the mean GR, LR and broad LR over edits (1.96·sd/√n; NaN below 2 edits).</summary>
    public double GrCi { get; init; } = double.NaN;
    public double LrCi { get; init; } = double.NaN;
    public double LrBroadCi { get; init; } = double.NaN;
    /// <summary>The edits' RMSprop learning rate.</summary>
    public float LearningRate { get; init; }
}

/// <summary>Mean pairwise IoU of HPRD masks within the same group and across groups of one subset.</summary>
public sealed record MaskOverlap(string Subset, string Setting, double WithinGroups, int WithinPairs, double AcrossGroups, int AcrossPairs);

/// <summary>
/// Mean difference <see cref="Setting"/> − <see cref="Baseline"/> over edits of the same images (same subset, group and
/// edit images), with 95 % half-widths of the paired differences: the learned-vs-random comparison of the paper's
/// second claim, resolved far more finely than two unpaired means.
/// </summary>
public sealed record PairedDifference(string Subset, string Setting, string Baseline, int Pairs,
    double Gr, double GrCi, double Lr, double LrCi, double LrBroad, double LrBroadCi);

/// <summary>
/// How far a setting's mean GR lies above (+) or below (−) the Pareto front of a family of settings (fine-tuning, or
/// random masks) at the setting's own mean LR, the front taken as straight lines between its points: the paper's first
/// two claims as one number each. <see cref="Low"/>–<see cref="High"/> is a 95 % percentile interval from resampling
/// edits (the same resample for every setting, so the comparison stays paired); <see cref="Coverage"/> the share of
/// resamples in which the setting's LR fell within the front's LR range (the gap is undefined outside it: NaN).
/// </summary>
public sealed record FrontGap(string Subset, string Locality, string Setting, string Front, double Gap, double Low, double High, double Coverage);

/// <summary>Tables, mask-overlap analysis, JSON lines and Pareto plots of an evaluation.</summary>
public static class EvalReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    private static double Mean(IEnumerable<double> values)
    {
        var list = values.Where(v => !double.IsNaN(v)).ToList();
        return list.Count == 0 ? double.NaN : list.Average();
    }

    /// <summary>Half-width of the normal-approximation 95 % interval of the mean: 1.96·s/√n over the non-NaN values.</summary>
    public static double Ci95(IEnumerable<double> values)
    {
        var list = values.Where(v => !double.IsNaN(v)).ToList();
        if (list.Count < 2) return double.NaN;
        double mean = list.Average(), ss = list.Sum(v => (v - mean) * (v - mean));
        return 1.96 * Math.Sqrt(ss / (list.Count - 1) / list.Count);
    }

    /// <summary>Per (subset, setting) means; with <paramref name="perGroup"/> also per group.</summary>
    public static List<MetricRow> Summarise(IEnumerable<EditRecord> records, bool perGroup = false) =>
        records.GroupBy(r => (r.Subset, Group: perGroup ? r.Group : "all", r.Method, r.Setting))
            .Select(g => new MetricRow(g.Key.Subset, g.Key.Group, g.Key.Method, g.Key.Setting, g.First().Keep, g.First().Coefficient, g.Count(),
                Mean(g.Select(r => r.Sr)), Mean(g.Select(r => r.Gr)), Mean(g.Select(r => r.Lr)), g.Average(r => (double)r.Steps))
            {
                LrBroad = Mean(g.Select(r => r.LrBroad)), LearningRate = g.First().LearningRate,
                GrCi = Ci95(g.Select(r => r.Gr)), LrCi = Ci95(g.Select(r => r.Lr)), LrBroadCi = Ci95(g.Select(r => r.LrBroad)),
            })
            .OrderBy(r => r.Subset, StringComparer.Ordinal).ThenBy(r => r.Group, StringComparer.Ordinal)
            .ThenBy(r => MethodOrder(r.Method)).ThenByDescending(r => r.Keep).ThenByDescending(r => r.Coefficient).ThenBy(r => r.LearningRate).ToList();

    private static int MethodOrder(string m) => m switch { "hprd" => 0, "random" => 1, "ft-l1" => 2, "ft-l2" => 3, _ => 4 };

    public static List<MaskOverlap> Overlaps(IEnumerable<EditRecord> records)
    {
        var result = new List<MaskOverlap>();
        foreach (var bySetting in records.Where(r => r.MaskGates is not null).GroupBy(r => (r.Subset, r.Setting)))
        {
            var list = bySetting.ToList();
            double within = 0, across = 0;
            int nw = 0, na = 0;
            for (int i = 0; i < list.Count; i++)
                for (int j = i + 1; j < list.Count; j++)
                {
                    double iou = IoU(list[i].MaskGates!, list[j].MaskGates!);
                    if (list[i].Group == list[j].Group) { within += iou; nw++; }
                    else { across += iou; na++; }
                }
            result.Add(new MaskOverlap(bySetting.Key.Subset, bySetting.Key.Setting, nw > 0 ? within / nw : double.NaN, nw, na > 0 ? across / na : double.NaN, na));
        }
        return result.OrderBy(o => o.Subset, StringComparer.Ordinal).ThenBy(o => o.Setting, StringComparer.Ordinal).ToList();
    }

    /// <summary>
    /// Every HPRD setting against the random-mask setting of the same keep fraction and learning rate, paired over the
    /// edits both ran (matched by subset, group and edit images; an edit missing from either side is left out).
    /// </summary>
    public static List<PairedDifference> LearnedVsRandom(IEnumerable<EditRecord> records)
    {
        var list = records.ToList();
        static string Key(EditRecord r) => r.Group + "\n" + string.Join("\n", r.EditImages);
        var result = new List<PairedDifference>();
        foreach (var hprd in list.Where(r => r.Method == "hprd").GroupBy(r => (r.Subset, r.Setting, r.Keep, r.LearningRate)))
        {
            var random = list.Where(r => r.Method == "random" && r.Subset == hprd.Key.Subset && r.Keep == hprd.Key.Keep && r.LearningRate == hprd.Key.LearningRate)
                .GroupBy(Key).ToDictionary(g => g.Key, g => g.First());
            if (random.Count == 0) continue;
            var pairs = hprd.GroupBy(Key).Where(g => random.ContainsKey(g.Key)).Select(g => (A: g.First(), B: random[g.Key])).ToList();
            if (pairs.Count == 0) continue;
            List<double> D(Func<EditRecord, double> f) =>
                pairs.Select(p => f(p.A) - f(p.B)).Where(v => !double.IsNaN(v)).ToList();
            var gr = D(r => r.Gr); var lr = D(r => r.Lr); var broad = D(r => r.LrBroad);
            result.Add(new PairedDifference(hprd.Key.Subset, hprd.Key.Setting, pairs[0].B.Setting, pairs.Count,
                Mean(gr), Ci95(gr), Mean(lr), Ci95(lr), Mean(broad), Ci95(broad)));
        }
        return result.OrderBy(d => d.Subset, StringComparer.Ordinal).ThenBy(d => d.Setting, StringComparer.Ordinal).ToList();
    }

    private static readonly (string Name, Func<string, bool> Member, Func<string, bool> Compared)[] Fronts =
    [
        ("fine-tuning", m => m is "ft-l1" or "ft-l2", m => m is "hprd" or "random"),
        ("random masks", m => m == "random", m => m == "hprd"),
    ];

    /// <summary>
    /// Every HPRD and random-mask setting against the fine-tuning front, and every HPRD setting against the random-mask
    /// front, on each locality set the run measured (<see cref="FrontGap"/>). A front needs two settings of its family.
    /// </summary>
    public static List<FrontGap> FrontGaps(IEnumerable<EditRecord> records, int resamples = 1000, ulong seed = 0)
    {
        static string Key(EditRecord r) => r.Group + "\n" + string.Join("\n", r.EditImages);
        var result = new List<FrontGap>();
        foreach (var subset in records.GroupBy(r => r.Subset).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var settings = subset.GroupBy(r => r.Setting).Select(g => (Name: g.Key, g.First().Method,
                ByEdit: g.GroupBy(Key).ToDictionary(e => e.Key, e => e.First()))).ToList();
            string[] edits = subset.Select(Key).Distinct().Order(StringComparer.Ordinal).ToArray();
            foreach (bool broad in new[] { true, false })
            {
                if (broad && subset.All(r => double.IsNaN(r.LrBroad))) continue;
                foreach (var front in Fronts)
                {
                    var members = settings.Where(s => front.Member(s.Method)).ToList();
                    var compared = settings.Where(s => front.Compared(s.Method)).ToList();
                    if (members.Count < 2 || compared.Count == 0) continue;
                    // Mean (LR, GR) of a setting over a sample of edits (with repeats; edits it lacks are skipped).
                    (double X, double Y) Point((string Name, string Method, Dictionary<string, EditRecord> ByEdit) s, IEnumerable<string> sample)
                    {
                        double x = 0, y = 0; int nx = 0, ny = 0;
                        foreach (string e in sample)
                            if (s.ByEdit.TryGetValue(e, out var r))
                            {
                                x += broad ? r.LrBroad : r.Lr; nx++;
                                if (!double.IsNaN(r.Gr)) { y += r.Gr; ny++; }
                            }
                        return (nx > 0 ? x / nx : double.NaN, ny > 0 ? y / ny : double.NaN);
                    }
                    double[] Gaps(IReadOnlyList<string> sample)
                    {
                        var line = Figures.ParetoFront(members.Select(m => { var p = Point(m, sample); return new Figures.ParetoPoint("", "", p.X, p.Y); }));
                        return compared.Select(c => { var p = Point(c, sample); return p.Y - Interpolate(line, p.X); }).ToArray();
                    }
                    double[] point = Gaps(edits);
                    var draws = compared.Select(_ => new List<double>()).ToArray();
                    var rng = new Rng(seed ^ Rng.StableHash(subset.Key + front.Name + broad));
                    var sample = new string[edits.Length];
                    for (int b = 0; b < resamples; b++)
                    {
                        for (int i = 0; i < sample.Length; i++) sample[i] = edits[rng.NextInt(0, edits.Length)];
                        var gaps = Gaps(sample);
                        for (int c = 0; c < gaps.Length; c++) if (!double.IsNaN(gaps[c])) draws[c].Add(gaps[c]);
                    }
                    for (int c = 0; c < compared.Count; c++)
                    {
                        var d = draws[c]; d.Sort();
                        bool enough = d.Count >= 40 && !double.IsNaN(point[c]);   // no interval around an undefined point
                        result.Add(new FrontGap(subset.Key, broad ? "broad" : "sensitive", compared[c].Name, front.Name, point[c],
                            enough ? d[(int)(0.025 * d.Count)] : double.NaN, enough ? d[(int)Math.Ceiling(0.975 * d.Count) - 1] : double.NaN,
                            resamples > 0 ? d.Count / (double)resamples : double.NaN));
                    }
                }
            }
        }
        return result;
    }

    /// <summary>The front's GR at LR <paramref name="x"/>, straight between its points (sorted by LR); NaN outside its range.</summary>
    private static double Interpolate(IReadOnlyList<Figures.ParetoPoint> front, double x)
    {
        if (front.Count == 0 || double.IsNaN(x) || x < front[0].X || x > front[^1].X) return double.NaN;
        if (front.Count == 1) return front[0].Y;
        for (int i = 1; i < front.Count; i++)
            if (x <= front[i].X)
            {
                var (a, b) = (front[i - 1], front[i]);
                return b.X > a.X ? a.Y + (b.Y - a.Y) * (x - a.X) / (b.X - a.X) : Math.Max(a.Y, b.Y);
            }
        return front[^1].Y;
    }

    public static string FrontGapTable(IEnumerable<FrontGap> gaps)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| subset | locality set | setting | front | GR − front's GR at the same LR | 95 % interval | LR within the front's range |");
        sb.AppendLine("|---|---|---|---|---|---|---|");
        foreach (var g in gaps)
            sb.AppendLine($"| {g.Subset} | {g.Locality} | {g.Setting} | {g.Front} | {FSigned(g.Gap, double.NaN)} | " +
                          (double.IsNaN(g.Low) ? "–" : $"{FSigned(g.Low, double.NaN)} … {FSigned(g.High, double.NaN)}") + $" | {g.Coverage.ToString("P0", Inv)} |");
        return sb.ToString();
    }

    public static string PairedTable(IEnumerable<PairedDifference> differences)
    {
        var list = differences.ToList();
        bool broad = list.Any(d => !double.IsNaN(d.LrBroad));
        var sb = new StringBuilder();
        sb.AppendLine("| subset | setting − baseline | pairs | ΔGR | ΔLR |" + (broad ? " ΔLR broad |" : ""));
        sb.AppendLine("|---|---|---|---|---|" + (broad ? "---|" : ""));
        foreach (var d in list)
            sb.AppendLine($"| {d.Subset} | {d.Setting} − {d.Baseline} | {d.Pairs} | {FSigned(d.Gr, d.GrCi)} | {FSigned(d.Lr, d.LrCi)} |"
                + (broad ? $" {FSigned(d.LrBroad, d.LrBroadCi)} |" : ""));
        return sb.ToString();
    }

    private static string FSigned(double v, double ci) =>
        double.IsNaN(v) ? "–" : Signed(v, minus: "−") + (double.IsNaN(ci) ? "" : $" ± {F(ci)}");

    /// <summary>
    /// Signed to 3 decimals (the console passes "-", markdown "−"); rounded first, because a format section would print a
    /// tiny negative as "-+0.000".
    /// </summary>
    public static string Signed(double v, string minus = "-") => (Math.Round(v, 3) + 0.0).ToString($"+0.000;{minus}0.000;0.000", Inv);

    private static double IoU(int[] a, int[] b)
    {
        var set = new HashSet<int>(a);
        int inter = b.Count(set.Contains);
        int union = a.Length + b.Length - inter;
        return union == 0 ? 1 : (double)inter / union;
    }

    private static string F(double v) => double.IsNaN(v) ? "–" : v.ToString("F3", Inv);

    public static string MarkdownTable(IEnumerable<MetricRow> rows, bool withGroup = false)
    {
        var list = rows.ToList();
        bool broad = list.Any(r => !double.IsNaN(r.LrBroad));
        var sb = new StringBuilder();
        sb.AppendLine((withGroup ? "| subset | group | setting | edits | SR | GR | LR |" : "| subset | setting | edits | SR | GR | LR |") + (broad ? " LR broad |" : "") + " steps |");
        sb.AppendLine((withGroup ? "|---|---|---|---|---|---|---|" : "|---|---|---|---|---|---|") + (broad ? "---|" : "") + "---|");
        foreach (var r in list)
            sb.AppendLine((withGroup
                ? $"| {r.Subset} | {r.Group} | {r.Setting} | {r.Edits} | {F(r.Sr)} | {FCi(r.Gr, r.GrCi)} | {FCi(r.Lr, r.LrCi)} |"
                : $"| {r.Subset} | {r.Setting} | {r.Edits} | {F(r.Sr)} | {FCi(r.Gr, r.GrCi)} | {FCi(r.Lr, r.LrCi)} |")
                + (broad ? $" {FCi(r.LrBroad, r.LrBroadCi)} |" : "") + $" {r.MeanSteps.ToString("F1", Inv)} |");
        return sb.ToString();
    }

    private static string FCi(double v, double ci) => double.IsNaN(ci) ? F(v) : $"{F(v)} ± {F(ci)}";

    public static string OverlapTable(IEnumerable<MaskOverlap> overlaps)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| subset | setting | IoU within groups (pairs) | IoU across groups (pairs) |");
        sb.AppendLine("|---|---|---|---|");
        foreach (var o in overlaps)
            sb.AppendLine($"| {o.Subset} | {o.Setting} | {F(o.WithinGroups)} ({o.WithinPairs}) | {F(o.AcrossGroups)} ({o.AcrossPairs}) |");
        return sb.ToString();
    }

    /// <summary>A fixed-width console table.</summary>
    public static string ConsoleTable(IEnumerable<MetricRow> rows)
    {
        var sb = new StringBuilder();
        var list = rows.ToList();
        bool broad = list.Any(r => !double.IsNaN(r.LrBroad));
        int width = Math.Max(20, list.Select(r => r.Setting.Length).DefaultIfEmpty(0).Max());
        sb.AppendLine($"{"subset",-14} {"setting".PadRight(width)} {"edits",6} {"SR",7} {"GR",7} {"LR",7}" + (broad ? $" {"LR broad",9}" : "") + $" {"steps",7}");
        foreach (var r in list)
            sb.AppendLine($"{r.Subset,-14} {r.Setting.PadRight(width)} {r.Edits,6} {F(r.Sr),7} {F(r.Gr),7} {F(r.Lr),7}" + (broad ? $" {F(r.LrBroad),9}" : "") + $" {r.MeanSteps.ToString("F1", Inv),7}");
        return sb.ToString();
    }

    /// <summary>Files an evaluation writes in its output folder (relative, '/'-separated).</summary>
    public static bool IsOutputName(string relative) => relative is "edits.jsonl" or "summary.md" || relative.StartsWith("plots/", StringComparison.Ordinal);

    public static string JsonLine(EditRecord r) => JsonSerializer.Serialize(r, new JsonSerializerOptions { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals });

    /// <summary>
    /// GR (y) against LR (x) per subset (and on the broad locality set when the run has one): one line per method
    /// through its sweep points, the Pareto front dashed and its points labelled with their settings
    /// (<see cref="Figures.Pareto"/>); PNG and SVG. Returns the files written.
    /// </summary>
    public static List<string> ParetoPlots(IEnumerable<MetricRow> summary, string folder, string title)
    {
        var files = new List<string>();
        var rows = summary.ToList();
        foreach (bool broad in new[] { false, true })
        foreach (var subset in rows.GroupBy(r => r.Subset))
        {
            if (broad && subset.All(r => double.IsNaN(r.LrBroad))) continue;
            double Lr(MetricRow r) => broad ? r.LrBroad : r.Lr;
            // With the learning rate swept, each keep / coefficient is its own curve through the rates.
            bool lrSwept = subset.Select(r => r.LearningRate).Distinct().Count() > 1;
            string Series(MetricRow r) => lrSwept ? r.Method.ToUpperInvariant() + EvalSetting.WithoutRate(r.Setting)[r.Method.Length..] : r.Method.ToUpperInvariant();
            var points = subset.Where(r => !double.IsNaN(r.Gr) && !double.IsNaN(Lr(r))).OrderBy(r => MethodOrder(r.Method))
                .Select(r => new Figures.ParetoPoint(Series(r), r.Setting, Lr(r), r.Gr)).ToList();
            if (points.Count == 0) continue;
            files.AddRange(Figures.Pareto(points, $"{title}: {subset.Key}" + (broad ? " (broad locality set)" : ""),
                broad ? "locality LR (share of broad-set images unchanged)" : "locality LR (share of sensitive images unchanged)", "generalisation GR",
                Path.Combine(folder, $"pareto_{(broad ? "broad_" : "")}{Sanitise(subset.Key)}")));
        }
        return files;
    }

    private static string Sanitise(string s) => new(s.Select(ch => char.IsLetterOrDigit(ch) ? ch : '_').ToArray());
}

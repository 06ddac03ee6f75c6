using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Evaluation;

/// <summary>Within- vs across-group IoU of gradient-saliency masks for one subset.</summary>
public sealed record SaliencyOverlap(string Subset, int Images, double WithinGroups, int WithinPairs, double AcrossGroups, int AcrossPairs)
{
    public double Difference => WithinGroups - AcrossGroups;
}

/// <summary>
/// The pre-check of issue 10: does the model have group-specific "where" at all? For each failure image, the
/// saliency of hidden unit j of edited matrix r is the norm of the cross-entropy gradient (to the true label) on the
/// weights its gate frees: ‖∇W_r[j, :]‖ for fc1 (row j), ‖∇W_r[:, j]‖ for fc2 (column j). With W' = W + m⊙Δ and a
/// gradient-step Δ = −∇W, ∂ℓ/∂m_j = −‖∇W_j‖², so these are the units the first step of stage A (or of a masked
/// edit) would value most. The top keep·N units of the image (one global top-k, as an edit mask) form its saliency
/// mask; the mean pairwise IoU of masks within groups vs across groups says whether failures of one group share
/// their "where". A learned hypernetwork cannot beat this structure; if within ≈ across, no mask predictor can
/// give group-specific masks on this model.
/// </summary>
internal sealed class GradientSaliency : IDisposable
{
    private readonly VitModel _model;
    private readonly EditTarget _target;
    private readonly VitWorkspace _ws;
    private readonly Tensor _image, _label;
    private readonly Parameter[] _params;
    private readonly BackwardOptions _backward;
    private readonly float[][] _gradHost;

    public GradientSaliency(VitModel model, EditTarget target)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _target = target ?? throw new ArgumentNullException(nameof(target));
        var c = model.Config;
        _ws = model.CreateWorkspace(1);
        _image = model.Backend.Allocate("saliency.image", 1, c.InChans, c.ImageSize, c.ImageSize);
        _label = model.Backend.Allocate("saliency.label", 1);
        _params = target.Units.Select(u => model[u.Parameter]).ToArray();
        _backward = BackwardOptions.Truncated(target.FirstBlock, target.ParameterNames);
        _gradHost = _params.Select(p => new float[p.Length]).ToArray();
    }

    /// <summary>Per-unit saliency of one image [R·H] in unit order (the layout of an <see cref="EditMask"/>).</summary>
    public float[] Scores(float[] image, int label)
    {
        var c = _model.Config;
        if (label < 0 || label >= c.NumClasses) throw new ArgumentOutOfRangeException(nameof(label), label, $"the model has {c.NumClasses} classes");
        var be = _model.Backend;
        _image.CopyFrom(image);
        _label.CopyFrom([label]);
        _model.Forward(_ws, _image, 1);
        be.CrossEntropy(_ws.Logits, _label, _ws.Losses, _ws.DLogits, 1, c.NumClasses, 1f);
        foreach (var p in _params) be.Fill(p.Grad, 0f);
        _model.Backward(_ws, 1, _backward);
        int h = _target.UnitSize;
        var scores = new float[_target.TotalGates];
        for (int r = 0; r < _params.Length; r++)
        {
            var g = _gradHost[r];
            _params[r].Grad.CopyTo(g);
            int rows = _params[r].Shape[0], cols = _params[r].Shape[1];
            var unit = scores.AsSpan(r * h, h);
            if (_target.Units[r].Axis == MaskAxis.Rows)
                for (int j = 0; j < rows; j++)
                {
                    double s = 0;
                    for (int k = 0; k < cols; k++) { double v = g[j * cols + k]; s += v * v; }
                    unit[j] = (float)Math.Sqrt(s);
                }
            else
            {
                var acc = new double[cols];
                for (int i = 0; i < rows; i++)
                    for (int j = 0; j < cols; j++) { double v = g[i * cols + j]; acc[j] += v * v; }
                for (int j = 0; j < cols; j++) unit[j] = (float)Math.Sqrt(acc[j]);
            }
        }
        return scores;
    }

    /// <summary>
    /// Saliency masks at keep <paramref name="keep"/> for every image of every group of a subset, and their mean
    /// pairwise IoU within and across groups.
    /// </summary>
    public SaliencyOverlap Overlap(string subset, IReadOnlyList<(string Group, int Label, float[] Image)> images, double keep)
    {
        var masks = images.Select(x => EditMask.TopK(_target, Scores(x.Image, x.Label), keep)).ToList();
        double within = 0, across = 0;
        int nw = 0, na = 0;
        for (int i = 0; i < masks.Count; i++)
            for (int j = i + 1; j < masks.Count; j++)
            {
                double iou = masks[i].IoU(masks[j]);
                if (images[i].Group == images[j].Group) { within += iou; nw++; }
                else { across += iou; na++; }
            }
        return new SaliencyOverlap(subset, masks.Count, nw > 0 ? within / nw : double.NaN, nw, na > 0 ? across / na : double.NaN, na);
    }

    public void Dispose()
    {
        _ws.Dispose();
        _image.Dispose();
        _label.Dispose();
    }
}

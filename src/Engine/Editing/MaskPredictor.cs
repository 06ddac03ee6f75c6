using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Editing;

/// <summary>
/// WHERE to edit (method.md §5.1): the hypernetwork's soft scores for the edit images' final [CLS] features
/// from the ORIGINAL, unedited model, averaged over the images, then one global top-k.
/// </summary>
public sealed class MaskPredictor(VitModel originalModel, Hypernetwork hypernetwork, EditTarget target)
{
    /// <summary>Mean soft scores [units · unitSize] over the images ([n, C, H, W] on the host).</summary>
    public float[] Scores(float[] images, int n)
    {
        var c = originalModel.Config;
        var hc = hypernetwork.Config;
        if (hc.Units != target.Units.Count || hc.UnitSize != target.UnitSize)
            throw new ArgumentException($"the hypernetwork predicts {hc.Units}×{hc.UnitSize} gates, the edit target has {target.Units.Count}×{target.UnitSize}");
        var be = originalModel.Backend;
        using var ws = originalModel.CreateWorkspace(n);
        using var x = be.FromHost("mask.images", images, n, c.InChans, c.ImageSize, c.ImageSize);
        originalModel.Forward(ws, x, n);
        using var hws = hypernetwork.CreateWorkspace(n);
        hypernetwork.Forward(hws, ws.ClsFeature, n);
        var all = hws.Scores.ToArray();
        int per = hc.Units * hc.UnitSize;
        var mean = new float[per];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < per; j++) mean[j] += all[i * per + j];
        for (int j = 0; j < per; j++) mean[j] /= n;
        return mean;
    }

    public EditMask Predict(float[] images, int n, double keep) => EditMask.TopK(target, Scores(images, n), keep);
}

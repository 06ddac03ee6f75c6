using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Editing;

/// <summary>
/// WHERE to edit (method.md §5.1): the hypernetwork's soft scores for the edit images' final [CLS] features
/// from the ORIGINAL, unedited model, averaged over the images, then one global top-k.
/// </summary>
public sealed class MaskPredictor(VitModel originalModel, Hypernetwork hypernetwork, EditTarget target)
{
    /// <summary>The model whose [CLS] features feed the hypernetwork (the original, unedited one).</summary>
    internal VitModel Model => originalModel;

    /// <summary>Mean soft scores [units · unitSize] over the images ([n, C, H, W] on the host).</summary>
    public float[] Scores(float[] images, int n)
    {
        var c = originalModel.Config;
        using var ws = originalModel.CreateWorkspace(n);
        using var x = originalModel.Backend.FromHost("mask.images", images, n, c.InChans, c.ImageSize, c.ImageSize);
        return Scores(ws, x, n);
    }

    /// <summary>
    /// <see cref="Scores(float[], int)"/> with the model's full forward in a given workspace (on images already on the
    /// backend): <see cref="ModelEditor.MaskScores"/> runs it in the editor's own workspace, whose block inputs and
    /// activations the edit then starts from instead of running the same forward again.
    /// </summary>
    internal float[] Scores(VitWorkspace ws, Tensor images, int n)
    {
        var hc = hypernetwork.Config;
        if (hc.Units != target.Units.Count || hc.UnitSize != target.UnitSize)
            throw new ArgumentException($"the hypernetwork predicts {hc.Units}×{hc.UnitSize} gates, the edit target has {target.Units.Count}×{target.UnitSize}");
        originalModel.Forward(ws, images, n);
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

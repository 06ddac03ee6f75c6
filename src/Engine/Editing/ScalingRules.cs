namespace WhereToEdit.Engine.Editing;

/// <summary>
/// How the reference's ViT-B/16 learning rates carry over to a model of another width (docs/SCALING.md).
/// <para>A step ΔW on a Linear layer y = W·x changes each output by Σ_k ΔW_jk·x_k. With LayerNorm'd inputs every
/// x_k is O(1), and both RMSprop (|ΔW_jk| ≈ lr) and SGD on a rank-1 gradient (ΔW = −lr·δ·xᵀ, so Δy = −lr·δ·‖x‖²)
/// move the outputs by lr × fan-in. Keeping the per-step change of the function the reference's therefore means
/// lr ∝ 1/fan-in: fc1's fan-in is the embedding width D, fc2's the hidden width 4D, so for the standard MLP ratio
/// both give the same factor D_ref/D = 768/D.</para>
/// </summary>
internal static class ScalingRules
{
    /// <summary>ViT-B/16's embedding width and MLP hidden width: the widths the reference's numbers were tuned at.</summary>
    public const int ReferenceEmbedDim = 768, ReferenceMlpHidden = 3072;

    /// <summary>The reference's edit learning rate (RMSprop, edit_natural.py) and inner meta-training lr (meta_train.py --elr).</summary>
    public const double ReferenceEditLr = 2e-5, ReferenceInnerLr = 1e-3;

    /// <summary>The reference's hypernetwork RMSprop learning rate (meta_train.py --lr) for its width-768 hypernetwork.</summary>
    public const double ReferenceHypernetLr = 1e-4;

    /// <summary><paramref name="referenceLr"/> (tuned at width 768) scaled to embedding width <paramref name="embedDim"/>: × 768/D.</summary>
    public static double ScaleLearningRate(double referenceLr, int embedDim)
    {
        if (embedDim <= 0) throw new ArgumentOutOfRangeException(nameof(embedDim), embedDim, "embedding width must be positive");
        return referenceLr * ReferenceEmbedDim / embedDim;
    }

    /// <summary>The default edit learning rate for a model of width <paramref name="embedDim"/> (2e-5 at ViT-B, 2.4e-4 at width 64).</summary>
    public static double EditLearningRate(int embedDim) => ScaleLearningRate(ReferenceEditLr, embedDim);
}

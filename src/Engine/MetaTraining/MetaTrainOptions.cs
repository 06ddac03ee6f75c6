using System.Text.Json;
using System.Text.Json.Serialization;
using WhereToEdit.Engine.Editing;

namespace WhereToEdit.Engine.MetaTraining;

/// <summary>The values of <see cref="MetaTrainOptions.SparsityNorm"/>.</summary>
internal static class SparsityNormalization
{
    public const string PerGate = "per-gate", ReferenceWidth = "reference-width";
}

/// <summary>
/// Every knob of meta-training (method.md §4) with the reference's defaults. Serialised into checkpoints, so a
/// resumed run continues with exactly the settings it started with.
/// </summary>
public sealed record MetaTrainOptions
{
    /// <summary>B: edit samples per iteration (2B images are drawn: B bases, B donors).</summary>
    [JsonPropertyName("batch")] public int Batch { get; init; } = 8;
    /// <summary>Outer steps on the free mask logits z per iteration.</summary>
    [JsonPropertyName("outer_steps")] public int OuterSteps { get; init; } = 10;
    /// <summary>Inner first-order SGD steps on Δ per outer step.</summary>
    [JsonPropertyName("inner_steps")] public int InnerSteps { get; init; } = 5;
    /// <summary>RMSprop learning rate on z (fresh optimizer state every iteration).</summary>
    [JsonPropertyName("mask_lr")] public float MaskLr { get; init; } = 0.1f;
    /// <summary>Inner learning rate elr: Δ ← Δ − elr·∇_{W'}ℓ.</summary>
    [JsonPropertyName("inner_lr")] public float InnerLr { get; init; } = 1e-3f;
    /// <summary>λ of the penalty λ·mean(m).</summary>
    [JsonPropertyName("sparsity_weight")] public float SparsityWeight { get; init; } = 1f;
    /// <summary>
    /// How λ reaches each gate (docs/SCALING.md): <see cref="SparsityNormalization.PerGate"/> divides by the B·R·H gates
    /// of this model (λ·mean(m), the reference's formula); <see cref="SparsityNormalization.ReferenceWidth"/> divides by
    /// B·R·H_ref with H_ref = 3072, so every gate feels the per-gate strength it has in the reference's ViT-B setting.
    /// Missing in old checkpoints, where it reads as per-gate (what they were trained with).
    /// </summary>
    [JsonPropertyName("sparsity_norm")] public string SparsityNorm { get; init; } = SparsityNormalization.PerGate;
    /// <summary>Run the costly diagnostics (label stability, probe-mask input dependence) every N iterations (0: never).</summary>
    [JsonPropertyName("diagnostics_every")] public int DiagnosticsEvery { get; init; }
    /// <summary>Distillation temperature T of ℓ = T²·KL(p ‖ softmax(z/T)).</summary>
    [JsonPropertyName("temperature")] public float Temperature { get; init; } = 5f;
    /// <summary>m = sigmoid(MaskScale·z).</summary>
    [JsonPropertyName("mask_scale")] public float MaskScale { get; init; } = 10f;
    /// <summary>Stage-B labels y = sigmoid(LabelScale·z).</summary>
    [JsonPropertyName("label_scale")] public float LabelScale { get; init; } = 3f;
    /// <summary>Stage-B loss = BceWeight·BCE.</summary>
    [JsonPropertyName("bce_weight")] public float BceWeight { get; init; } = 0.1f;
    /// <summary>Base learning rate of the hypernetwork's RMSprop.</summary>
    [JsonPropertyName("hypernet_lr")] public double HypernetLr { get; init; } = 1e-4;
    /// <summary>CosineAnnealingLR T_max (stepped once per iteration, η_min = 0).</summary>
    [JsonPropertyName("cosine_t_max")] public double CosineTMax { get; init; } = 2e4;
    /// <summary>RMSprop steps on the hypernetwork per iteration.</summary>
    [JsonPropertyName("stage_b_steps")] public int StageBSteps { get; init; } = 4;
    [JsonPropertyName("iterations")] public int Iterations { get; init; } = 10000;
    /// <summary>Write a checkpoint every N iterations (0: never; only when a checkpoint folder is given).</summary>
    [JsonPropertyName("checkpoint_every")] public int CheckpointEvery { get; init; } = 500;
    /// <summary>Transformer blocks of the hypernetwork (the paper's README runs 3; the reference default is 5).</summary>
    [JsonPropertyName("hypernet_depth")] public int HypernetDepth { get; init; } = 3;
    [JsonPropertyName("seed")] public ulong Seed { get; init; }
    /// <summary>Edited blocks; null = <see cref="Editing.EditTarget.DefaultBlocks"/> (7, 8, 9 of 12).</summary>
    [JsonPropertyName("edit_blocks")] public int[]? EditBlocks { get; init; }
    /// <summary>The reference's CutMix corner draw randint(0, G − h), which never touches the last row/column.</summary>
    [JsonPropertyName("cutmix_reference_bounds")] public bool CutMixReferenceBounds { get; init; }
    [JsonPropertyName("crop_scale_min")] public double CropScaleMin { get; init; } = 0.25;
    [JsonPropertyName("crop_scale_max")] public double CropScaleMax { get; init; } = 1.0;

    public MetaTrainOptions Validate()
    {
        static void Positive(int v, string option) { if (v <= 0) throw new ArgumentException($"{option} {v}: must be positive"); }
        static void PositiveF(double v, string option) { if (!(v > 0) || !double.IsFinite(v)) throw new ArgumentException($"{option} {v}: must be a positive number"); }
        static void NonNegative(double v, string option) { if (!(v >= 0) || !double.IsFinite(v)) throw new ArgumentException($"{option} {v}: must be ≥ 0"); }
        Positive(Batch, "--batch");
        Positive(OuterSteps, "--outer-steps");
        if (InnerSteps < 0) throw new ArgumentException($"--inner-steps {InnerSteps}: must be ≥ 0");
        PositiveF(MaskLr, "--mask-lr");
        NonNegative(InnerLr, "--inner-lr");
        NonNegative(SparsityWeight, "--sparsity-weight");
        PositiveF(Temperature, "--temperature");
        PositiveF(MaskScale, "mask_scale");
        PositiveF(LabelScale, "label_scale");
        PositiveF(BceWeight, "bce_weight");
        PositiveF(HypernetLr, "--hypernet-lr");
        PositiveF(CosineTMax, "--t-max");
        Positive(StageBSteps, "--stage-b-steps");
        if (Iterations < 0) throw new ArgumentException($"--iterations {Iterations}: must be ≥ 0");
        if (CheckpointEvery < 0) throw new ArgumentException($"--checkpoint-every {CheckpointEvery}: must be ≥ 0");
        Positive(HypernetDepth, "--hypernet-depth");
        if (HypernetDepth > Models.HypernetConfig.MaxDepth) throw new ArgumentException($"--hypernet-depth {HypernetDepth}: at most {Models.HypernetConfig.MaxDepth}");
        if (SparsityNorm is not (SparsityNormalization.PerGate or SparsityNormalization.ReferenceWidth))
            throw new ArgumentException($"--sparsity-norm '{SparsityNorm}': expected {SparsityNormalization.PerGate} or {SparsityNormalization.ReferenceWidth}");
        if (DiagnosticsEvery < 0) throw new ArgumentException($"--diagnostics-every {DiagnosticsEvery}: must be ≥ 0");
        if (!(CropScaleMin > 0 && CropScaleMin <= CropScaleMax && CropScaleMax <= 1))
            throw new ArgumentException($"--crop-scale {CropScaleMin},{CropScaleMax}: must satisfy 0 < min ≤ max ≤ 1");
        return this;
    }

    /// <summary>
    /// The penalty's gradient on one gate, ∂(λ·mean(m))/∂m_j under <see cref="SparsityNorm"/>, for
    /// <paramref name="gates"/> = B·R·H gates of hidden width <paramref name="hidden"/>.
    /// </summary>
    public float PenaltyGradPerGate(int gates, int hidden) => SparsityNorm == SparsityNormalization.ReferenceWidth
        ? (float)(SparsityWeight * (double)hidden / (ScalingRules.ReferenceMlpHidden * (double)gates))
        : SparsityWeight / gates;

    /// <summary>
    /// The defaults for a model of embedding width <paramref name="embedDim"/>: the reference's values with the width
    /// rules of <see cref="ScalingRules"/> applied (docs/SCALING.md). At ViT-B width these are the reference's numbers.
    /// </summary>
    public static MetaTrainOptions ForWidth(int embedDim) => new()
    {
        InnerLr = (float)ScalingRules.ScaleLearningRate(ScalingRules.ReferenceInnerLr, embedDim),
        // The hypernetwork is as wide as the model (HypernetConfig.For): its RMSprop lr follows the same fan-in rule.
        HypernetLr = ScalingRules.ScaleLearningRate(ScalingRules.ReferenceHypernetLr, embedDim),
        SparsityNorm = SparsityNormalization.PerGate,
        CutMixReferenceBounds = true,
        DiagnosticsEvery = 25,
    };

    /// <summary>The stage-B learning rate at (0-based) iteration t: torch's CosineAnnealingLR(T_max, η_min 0), closed form.</summary>
    public double HypernetLrAt(int iteration) => HypernetLr * (1 + Math.Cos(Math.PI * iteration / CosineTMax)) / 2;

    public string ToJson() => JsonSerializer.Serialize(this);

    public static MetaTrainOptions FromJson(string json)
        => (JsonSerializer.Deserialize<MetaTrainOptions>(json) ?? throw new ArgumentException("meta-training options JSON is null")).Validate();
}

using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Engine.Jobs;

/// <summary>What `wte edit` is asked to do.</summary>
public sealed record EditJobOptions
{
    /// <summary>The model to edit (file or hub folder; may already carry patches).</summary>
    public required string ModelPath { get; init; }
    /// <summary>The hypernetwork file (required for HPRD).</summary>
    public string? HypernetPath { get; init; }
    /// <summary>Failure images or folders of images.</summary>
    public required IReadOnlyList<string> Images { get; init; }
    /// <summary>The correct class: an index or one of the model's label names.</summary>
    public required string Label { get; init; }
    /// <summary>hprd, ft-l1, ft-l2 or random.</summary>
    public string Method { get; init; } = "hprd";
    /// <summary>Fraction of hidden units the mask keeps (HPRD, random).</summary>
    public double Keep { get; init; } = 0.1;
    /// <summary>RMSprop learning rate; null: the paper's 2e-5 at width 768 scaled by 768/width (<see cref="ScalingRules"/>).</summary>
    public float? LearningRate { get; init; }
    public int MaxSteps { get; init; } = 100;
    /// <summary>FT-L1/L2 penalty coefficient c.</summary>
    public float Coefficient { get; init; }
    /// <summary>Seed of the random mask.</summary>
    public ulong Seed { get; init; }
    /// <summary>The original model the hypernetwork was trained for, when <see cref="ModelPath"/> already carries patches.</summary>
    public string? BasePath { get; init; }
    /// <summary>Where the edit patch is written.</summary>
    public required string OutPath { get; init; }
    public BackendChoice Backend { get; init; } = new();
}

/// <summary>What `wte edit` did: the edit's record, the patch written, and the names needed to print it.</summary>
public sealed record EditJobResult
{
    public required EditResult Edit { get; init; }
    public required string PatchPath { get; init; }
    public required int Label { get; init; }
    /// <summary>The image files edited on (folders expanded).</summary>
    public required IReadOnlyList<string> Images { get; init; }
    /// <summary>The model's class names, if it has them.</summary>
    public IReadOnlyList<string>? ClassNames { get; init; }
    /// <summary>The edit options in force (the learning rate after the width rule).</summary>
    public EditOptions? Options { get; init; }
}

/// <summary>
/// An edit of a model that is already in memory, its images preprocessed and its label resolved: the part of an edit
/// that `wte edit` (<see cref="EditJob.Run"/>) and `wte serve` share.
/// </summary>
public sealed record LoadedEdit
{
    /// <summary>The images, [n, C, H, W] on the host, preprocessed as the model asks.</summary>
    public required float[] Pixels { get; init; }
    /// <summary>The images' names as the patch records them.</summary>
    public required IReadOnlyList<string> ImageNames { get; init; }
    public required int Label { get; init; }
    public EditMethod Method { get; init; } = EditMethod.Hprd;
    public double Keep { get; init; } = 0.1;
    /// <summary>RMSprop learning rate; null: the width rule (<see cref="ScalingRules.EditLearningRate"/>).</summary>
    public float? LearningRate { get; init; }
    public int MaxSteps { get; init; } = 100;
    public float Coefficient { get; init; }
    public ulong Seed { get; init; }
}

/// <summary>The hypernetwork (HPRD) and the model whose features its masks come from: the ORIGINAL, unedited one.</summary>
public sealed record MaskSource(VitModel Reference, LoadedHypernet Hypernet);

/// <summary>What an edit of a loaded model did: its record, its patch (not yet written) and the editor that holds the originals.</summary>
public sealed record EditOutcome(EditResult Result, EditPatch Patch, EditOptions Options, ModelEditor Editor);

/// <summary>
/// One edit: loads the model and images, picks the mask (<see cref="EditMaskPolicy"/>; HPRD from the ORIGINAL model's
/// features), runs <see cref="ModelEditor"/> and writes the edit patch.
/// </summary>
public static class EditJob
{
    public static EditJobResult Run(EditJobOptions o, IJobProgress? progress = null, CancellationToken cancel = default)
    {
        progress ??= NullJobProgress.Instance;
        var method = EditMethods.Parse(o.Method);
        if (!(o.Keep > 0 && o.Keep <= 1)) throw new ArgumentException($"--keep {o.Keep.ToString(System.Globalization.CultureInfo.InvariantCulture)}: must be in (0, 1]");
        new EditOptions { Method = method, LearningRate = o.LearningRate ?? (float)ScalingRules.ReferenceEditLr, MaxSteps = o.MaxSteps, Coefficient = o.Coefficient }
            .Validate();   // option errors before any loading; the width rule sets the default lr in Edit
        if (method == EditMethod.Hprd && o.HypernetPath is null) throw new ArgumentException("--method hprd needs --hypernet");
        new CommandPaths().Input(o.ModelPath, "MODEL").Input(o.HypernetPath, "--hypernet").Inputs(o.Images, "--image").Input(o.BasePath, "--base").Output(o.OutPath, "--out").Check();

        var loaded = ModelFolder.Load(o.ModelPath);
        int y = JobInputs.ParseLabel(o.Label, loaded.Architecture.NumClasses, loaded.Labels);
        var files = JobInputs.ExpandImages(o.Images);
        var loader = new ImageLoader();
        var pixels = files.SelectMany(f => loader.Load(f, loaded.Preprocessing)).ToArray();
        cancel.ThrowIfCancellationRequested();

        using var backend = o.Backend.Create();
        using var vit = VitCheckpoint.Load(backend, loaded);
        string fingerprint = VitCheckpoint.Fingerprint(vit);
        using var original = method == EditMethod.Hprd && o.BasePath is { } b ? VitCheckpoint.Load(backend, ModelFolder.Load(b)) : null;
        if (original is not null && original.Config != vit.Config) throw new ArgumentException($"--base {o.BasePath}: its architecture differs from {o.ModelPath}");
        using var net = method == EditMethod.Hprd ? HypernetFile.Load(backend, o.HypernetPath!, original ?? vit, original is null ? fingerprint : null) : null;
        cancel.ThrowIfCancellationRequested();

        progress.Note($"edit: {files.Count} image(s) → class {y} with {method.Name()}; {backend.Name}");
        ModelEditor? editor = null;
        try
        {
            var outcome = Edit(vit, fingerprint, new LoadedEdit
            {
                Pixels = pixels, ImageNames = files.Select(f => Path.GetFileName(f)).ToArray(), Label = y, Method = method, Keep = o.Keep,
                LearningRate = o.LearningRate, MaxSteps = o.MaxSteps, Coefficient = o.Coefficient, Seed = o.Seed,
            }, net is null ? null : new MaskSource(original ?? vit, net), target => editor = new ModelEditor(vit, target));
            progress.Report(new JobProgress("edit", 1, 1, outcome.Result.Success ? "fixed" : "not fixed"));
            outcome.Patch.Save(o.OutPath);
            return new EditJobResult { Edit = outcome.Result, PatchPath = o.OutPath, Label = y, Images = files, ClassNames = loaded.Labels, Options = outcome.Options };
        }
        finally
        {
            editor?.Dispose();
        }
    }

    /// <summary>
    /// Edits <paramref name="vit"/> in place from its current weights: the target and mask by method (HPRD's from
    /// <paramref name="masks"/>), the masked optimisation, and the edit patch against <paramref name="fingerprint"/>
    /// (the weights before). <paramref name="editorFor"/> gives the editor for the target, its originals snapshotted at
    /// the current weights; the edit stays in the model whether or not it fixed the images (<see cref="ModelEditor.Revert"/>
    /// undoes it).
    /// </summary>
    public static EditOutcome Edit(VitModel vit, string fingerprint, LoadedEdit edit, MaskSource? masks, Func<EditTarget, ModelEditor> editorFor)
    {
        ArgumentNullException.ThrowIfNull(vit);
        ArgumentNullException.ThrowIfNull(edit);
        ArgumentNullException.ThrowIfNull(editorFor);
        var method = edit.Method;
        if (!(edit.Keep > 0 && edit.Keep <= 1)) throw new ArgumentException($"--keep {edit.Keep.ToString(System.Globalization.CultureInfo.InvariantCulture)}: must be in (0, 1]");
        var options = new EditOptions
        {
            Method = method, LearningRate = edit.LearningRate ?? (float)ScalingRules.EditLearningRate(vit.Config.EmbedDim),
            MaxSteps = edit.MaxSteps, Coefficient = edit.Coefficient,
        };
        options.Validate();
        int n = edit.ImageNames.Count, per = vit.Config.InChans * vit.Config.ImageSize * vit.Config.ImageSize;
        if (n < 1 || edit.Pixels.Length != n * per)
            throw new ArgumentException($"an edit needs at least one image and {per} values per image; got {n} image name(s) and {edit.Pixels.Length} values");
        EditTarget target;
        float[]? scores = null;
        if (method == EditMethod.Hprd)
        {
            if (masks is null) throw new ArgumentException("--method hprd needs --hypernet");
            if (masks.Reference.Config != vit.Config) throw new ArgumentException("the hypernetwork's reference model has another architecture than the model edited");
            target = new EditTarget(vit.Config, masks.Hypernet.EditBlocks);
        }
        else target = EditTarget.Default(vit.Config);
        var editor = editorFor(target);
        // Through the editor: when the reference is the edited model, the edit starts from this forward.
        if (method == EditMethod.Hprd) scores = editor.MaskScores(new MaskPredictor(masks!.Reference, masks.Hypernet.Network, target), edit.Pixels, n);
        var mask = EditMaskPolicy.For(method, target, edit.Keep, scores, edit.Seed);
        var labels = Enumerable.Repeat(edit.Label, n).ToArray();
        var result = editor.Edit(edit.Pixels, labels, mask, options);
        var patch = EditPatch.FromEdit(vit, target, method.IsFineTuning() ? null : mask, target.Units.Select(u => editor.OriginalValues(u.Index)).ToList(),
            fingerprint, method.Name(), method.IsFineTuning() ? 1.0 : edit.Keep, labels, edit.ImageNames.ToArray(), result);
        return new EditOutcome(result, patch, options, editor);
    }
}

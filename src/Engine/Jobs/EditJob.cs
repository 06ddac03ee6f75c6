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
        var options = new EditOptions { Method = method, LearningRate = o.LearningRate ?? (float)ScalingRules.ReferenceEditLr, MaxSteps = o.MaxSteps, Coefficient = o.Coefficient };
        options.Validate();   // option errors before any loading; the width rule sets the default lr below
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
        if (o.LearningRate is null) options = options with { LearningRate = (float)ScalingRules.EditLearningRate(vit.Config.EmbedDim) };
        EditTarget target;
        float[]? scores = null;
        if (method == EditMethod.Hprd)
        {
            using var original = o.BasePath is { } b ? VitCheckpoint.Load(backend, ModelFolder.Load(b)) : null;
            var reference = original ?? vit;
            if (reference.Config != vit.Config) throw new ArgumentException($"--base {o.BasePath}: its architecture differs from {o.ModelPath}");
            using var net = HypernetFile.Load(backend, o.HypernetPath!, reference, original is null ? fingerprint : null);
            target = new EditTarget(vit.Config, net.EditBlocks);
            scores = new MaskPredictor(reference, net.Network, target).Scores(pixels, files.Count);
        }
        else target = EditTarget.Default(vit.Config);
        var mask = EditMaskPolicy.For(method, target, o.Keep, scores, o.Seed);
        cancel.ThrowIfCancellationRequested();

        progress.Note($"edit: {files.Count} image(s) → class {y} with {method.Name()}; {backend.Name}");
        using var editor = new ModelEditor(vit, target);
        var labels = Enumerable.Repeat(y, files.Count).ToArray();
        var result = editor.Edit(pixels, labels, mask, options);
        progress.Report(new JobProgress("edit", 1, 1, result.Success ? "fixed" : "not fixed"));
        var patch = EditPatch.FromEdit(vit, target, method.IsFineTuning() ? null : mask, target.Units.Select(u => editor.OriginalValues(u.Index)).ToList(),
            fingerprint, method.Name(), method.IsFineTuning() ? 1.0 : o.Keep, labels, files.Select(Path.GetFileName).ToArray()!, result);
        patch.Save(o.OutPath);
        return new EditJobResult { Edit = result, PatchPath = o.OutPath, Label = y, Images = files, ClassNames = loaded.Labels, Options = options };
    }
}

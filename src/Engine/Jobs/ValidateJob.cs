using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Engine.Jobs;

/// <summary>What `wte validate` is asked to do: a model, labelled images and patches (<see cref="ValidationOptions"/>), where to write.</summary>
public sealed record ValidateJobOptions
{
    public required string ModelPath { get; init; }
    public required ValidationOptions Validation { get; init; }
    /// <summary>Folder for validation.json and validation.csv (null: none).</summary>
    public string? OutDir { get; init; }
    public BackendChoice Backend { get; init; } = new();
}

/// <summary>Loads the model, measures top-1/top-5 and per-class accuracy before and after the patches, writes the report.</summary>
public static class ValidateJob
{
    public static ValidationResult Run(ValidateJobOptions o, IJobProgress? progress = null, CancellationToken cancel = default)
    {
        var v = o.Validation;
        new CommandPaths().Input(o.ModelPath, "MODEL").Input(v.Folder, "FOLDER").Input(v.IdxImages, "--idx").Input(v.IdxLabels, "--idx-labels")
            .Inputs(v.Patches, "--patch").OutputFolder(o.OutDir, "--out", name => name is "validation.json" or "validation.csv").Check();
        var loaded = ModelFolder.Load(o.ModelPath);
        cancel.ThrowIfCancellationRequested();
        using var backend = o.Backend.Create();
        using var vit = VitCheckpoint.Load(backend, loaded);
        var result = ModelValidation.Run(vit, loaded, o.Validation);
        if (o.OutDir is { } dir) ModelValidation.Write(result, dir);
        return result;
    }
}

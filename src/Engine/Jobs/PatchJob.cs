using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Engine.Jobs;

/// <summary>What `wte patch apply` / `wte patch revert` is asked to do.</summary>
public sealed record PatchJobOptions
{
    /// <summary>The model to change (apply: the patch's base; revert: a model the patch was applied to).</summary>
    public required string ModelPath { get; init; }
    public required string PatchPath { get; init; }
    /// <summary>Where the changed model is written (never over an input).</summary>
    public required string OutPath { get; init; }
    /// <summary>True: remove the patch; false: apply it.</summary>
    public bool Revert { get; init; }
    /// <summary>Apply original + scale·delta (apply only).</summary>
    public float Scale { get; init; } = 1f;
    /// <summary>wte's own file, or a timm / Hugging Face hub folder.</summary>
    public ExportFormat Format { get; init; } = ExportFormat.Wte;
}

/// <summary>The model written, its fingerprint, and what the output format could not express.</summary>
public sealed record PatchJobResult(string OutPath, string Fingerprint, IReadOnlyList<string> Notes);

/// <summary>Applies or reverts an edit patch on the CPU and writes the result as a new model file.</summary>
public static class PatchJob
{
    public static PatchJobResult Run(PatchJobOptions o, IJobProgress? progress = null, CancellationToken cancel = default)
    {
        // A folder export refuses any non-empty --out, so it can never hold an input.
        if (o.Format == ExportFormat.Wte) new CommandPaths().Input(o.ModelPath, "MODEL").Input(o.PatchPath, "PATCH").Output(o.OutPath, "--out").Check();
        var patch = EditPatch.Load(o.PatchPath);
        var loaded = ModelFolder.Load(o.ModelPath);
        cancel.ThrowIfCancellationRequested();
        using var backend = new CpuBackend();
        using var vit = VitCheckpoint.Load(backend, loaded);
        if (o.Revert) patch.Revert(vit);
        else patch.Apply(vit, o.Scale);
        var notes = ModelExport.Write(o.OutPath, o.Format, VitCheckpoint.ToTensorFile(vit), vit.Config, loaded.Preprocessing, loaded.Labels);
        return new PatchJobResult(o.OutPath, VitCheckpoint.Fingerprint(vit), notes);
    }
}

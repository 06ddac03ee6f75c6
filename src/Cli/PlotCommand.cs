using System.CommandLine;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Jobs;
using WhereToEdit.Engine.Reports;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command PlotCommand(CliOutput io)
    {
        var command = new Command("plot", "Pictures: training curves from a CSV log, an edit's mask, an edit's before/after prediction panel, GR-vs-LR plots over several eval runs (PNG + SVG).");

        var log = new Argument<string>("LOG") { Description = "a CSV log written by wte meta-train --log or wte pretrain --log" };
        var curvesOut = new Option<string>("--out") { Description = "folder for one PNG + SVG per column", Required = true };
        var columns = new Option<string?>("--columns") { Description = "comma-separated columns (default: every numeric column but timings)" };
        var curves = new Command("curves", "One plot per column of a training log against its first column.") { log, curvesOut, columns };
        curves.SetAction(parse =>
        {
            var wanted = parse.GetValue(columns)?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            return Files(io, parse, Figures.Curves(parse.GetValue(log)!, parse.GetValue(curvesOut)!, wanted));
        });

        var maskPatch = new Argument<string>("PATCH") { Description = "an edit patch written by wte edit" };
        var maskOut = new Option<string>("--out") { Description = "output path without extension (writes .png and .svg)", Required = true };
        var mask = new Command("mask", "The edited hidden units as a heat map over the edited matrices.") { maskPatch, maskOut };
        mask.SetAction(parse =>
        {
            return Files(io, parse, Figures.MaskHeatmap(EditPatch.Load(parse.GetValue(maskPatch)!), parse.GetValue(maskOut)!));
        });

        var editModel = new Argument<string>("MODEL") { Description = "the model the patch was made for" };
        var editPatch = new Argument<string>("PATCH") { Description = "an edit patch" };
        var image = new Option<string>("--image") { Description = "the image to show (default: the patch's first edit image)" };
        var topK = new Option<int>("--top-k") { Description = "classes shown before and after", DefaultValueFactory = _ => 5 };
        var editOut = new Option<string>("--out") { Description = "output path without extension (writes .png and .svg)", Required = true };
        var edit = new Command("edit", "The image beside its top classes' probabilities before and after the patch.") { editModel, editPatch, image, topK, editOut };
        edit.SetAction(parse =>
        {
            return Files(io, parse, PlotJob.EditPanel(new EditPanelJobOptions
            {
                ModelPath = parse.GetValue(editModel)!, PatchPath = parse.GetValue(editPatch)!, ImagePath = parse.GetValue(image),
                TopK = parse.GetValue(topK), OutStem = parse.GetValue(editOut)!,
            }));
        });

        var evalEdits = new Argument<string[]>("EDITS") { Description = "edits.jsonl files written by wte eval (one or more runs: an lr sweep beside a keep / coefficient sweep, several seeds)", Arity = ArgumentArity.OneOrMore };
        var evalOut = new Option<string>("--out") { Description = "output folder: the merged edits.jsonl, summary.md, plots/", Required = true };
        var evalTitle = new Option<string>("--title") { Description = "heading of summary.md and the plots", DefaultValueFactory = _ => "wte eval (merged)" };
        var evalReport = new Command("eval", "One summary.md and one set of GR-vs-LR plots (with the front gaps) over the records of several wte eval runs.") { evalEdits, evalOut, evalTitle };
        evalReport.SetAction(parse =>
        {
            var result = EvalMergeJob.Run(new EvalMergeJobOptions { EditsPaths = parse.GetValue(evalEdits)!, OutDir = parse.GetValue(evalOut)!, Title = parse.GetValue(evalTitle)! }, io.Progress());
            return io.Print(parse, result, stdout => PrintEvaluation(stdout, result));
        });

        command.Subcommands.Add(curves);
        command.Subcommands.Add(mask);
        command.Subcommands.Add(edit);
        command.Subcommands.Add(evalReport);
        return command;
    }

    /// <summary>The files written, one per line (under --json: {"files": [...]}).</summary>
    private static int Files(CliOutput io, ParseResult parse, IReadOnlyList<string> files) =>
        io.Print(parse, new { Files = files }, stdout => { foreach (string f in files) stdout.WriteLine(f); });
}

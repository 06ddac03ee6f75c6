using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using WhereToEdit.Engine.Backends;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command EditCommand(TextWriter stdout, TextWriter stderr)
    {
        var model = new Argument<string>("MODEL") { Description = "the model to edit (file or hub folder; may already carry patches)" };
        var hypernet = new Option<string?>("--hypernet") { Description = "hypernetwork file (required for --method hprd)" };
        var images = new Option<string[]>("--image") { Description = "failure image(s) to fix (repeat for several)", Required = true, AllowMultipleArgumentsPerToken = true };
        var label = new Option<string>("--label") { Description = "correct class: an index or a label name", Required = true };
        var keep = new Option<double>("--keep") { Description = "fraction of hidden units the mask keeps (HPRD, random)", DefaultValueFactory = _ => 0.1 };
        var method = new Option<string>("--method") { Description = "hprd, ft-l1, ft-l2 or random", DefaultValueFactory = _ => "hprd" };
        var lr = new Option<float?>("--lr") { Description = "RMSprop learning rate (default: the paper's 2e-5 at width 768 scaled by 768/width, docs/SCALING.md: 2.4e-4 for the shipped width-64 model)" };
        var maxSteps = new Option<int>("--max-steps") { Description = "at most this many update steps", DefaultValueFactory = _ => 100 };
        var coef = new Option<float>("--coef") { Description = "FT-L1/L2 penalty coefficient c", DefaultValueFactory = _ => 0f };
        var seed = new Option<ulong>("--seed") { Description = "seed of the random mask", DefaultValueFactory = _ => 0UL };
        var baseModel = new Option<string?>("--base") { Description = "the original model the hypernetwork was trained for, when MODEL already carries patches" };
        var output = new Option<string>("--out") { Description = "where to write the edit patch (.safetensors)", Required = true };
        var json = new Option<bool>("--json") { Description = "print the result record as JSON" };
        var device = DeviceOption();
        var threads = ThreadsOption();
        var command = new Command("edit", "Fix a model's mistake on the given image(s) by editing a few MLP weights; writes an edit patch.")
        {
            model, hypernet, images, label, keep, method, lr, maxSteps, coef, seed, baseModel, output, json, device, threads,
        };
        command.SetAction(parse =>
        {
            string modelPath = parse.GetValue(model)!, outPath = parse.GetValue(output)!;
            var m = EditMethods.Parse(parse.GetValue(method)!);
            double k = parse.GetValue(keep);
            if (!(k > 0 && k <= 1)) throw new ArgumentException($"--keep {k.ToString(CultureInfo.InvariantCulture)}: must be in (0, 1]");
            var options = new EditOptions { Method = m, LearningRate = parse.GetValue(lr) ?? (float)ScalingRules.ReferenceEditLr, MaxSteps = parse.GetValue(maxSteps), Coefficient = parse.GetValue(coef) };
            options.Validate();   // option errors before any loading; the width rule sets the default lr below
            if (m == EditMethod.Hprd && parse.GetValue(hypernet) is null) throw new ArgumentException("--method hprd needs --hypernet");
            RefuseOverwritingInput(outPath, modelPath);

            var loaded = ModelFolder.Load(modelPath);
            int y = ParseLabel(parse.GetValue(label)!, loaded.Architecture.NumClasses, loaded.Labels);
            var files = ExpandImages(parse.GetValue(images)!);
            var loader = new ImageLoader();
            var pixels = files.SelectMany(f => loader.Load(f, loaded.Preprocessing)).ToArray();

            using var backend = BackendFactory.Create(parse.GetValue(device)!, parse.GetValue(threads));
            using var vit = VitCheckpoint.Load(backend, loaded);
            string fingerprint = VitCheckpoint.Fingerprint(vit);
            if (parse.GetValue(lr) is null) options = options with { LearningRate = (float)ScalingRules.EditLearningRate(vit.Config.EmbedDim) };
            EditTarget target;
            EditMask? mask = null;
            if (m == EditMethod.Hprd)
            {
                using var original = parse.GetValue(baseModel) is { } b ? VitCheckpoint.Load(backend, ModelFolder.Load(b)) : null;
                var reference = original ?? vit;
                if (reference.Config != vit.Config) throw new ArgumentException($"--base {parse.GetValue(baseModel)}: its architecture differs from {modelPath}");
                using var net = HypernetFile.Load(backend, parse.GetValue(hypernet)!, reference, original is null ? fingerprint : null);
                target = new EditTarget(vit.Config, net.EditBlocks);
                mask = new MaskPredictor(reference, net.Network, target).Predict(pixels, files.Count, k);
            }
            else
            {
                target = EditTarget.Default(vit.Config);
                if (m == EditMethod.Random) mask = EditMask.Random(target, k, parse.GetValue(seed));
            }
            using var editor = new ModelEditor(vit, target);
            var labels = Enumerable.Repeat(y, files.Count).ToArray();
            var result = editor.Edit(pixels, labels, mask ?? EditMask.Full(target), options);
            var patch = EditPatch.FromEdit(vit, target, mask, target.Units.Select(u => editor.OriginalValues(u.Index)).ToList(),
                fingerprint, m.Name(), m.IsFineTuning() ? 1.0 : k, labels, files.Select(Path.GetFileName).ToArray()!, result);
            patch.Save(outPath);
            if (parse.GetValue(json)) stdout.WriteLine(JsonSerializer.Serialize(result));
            else
            {
                string Name(int c) => loaded.Labels is { } l && c < l.Count ? $"{c} ({l[c]})" : c.ToString(CultureInfo.InvariantCulture);
                stdout.WriteLine($"{(result.Success ? "fixed" : "NOT fixed")}: {files.Count} image(s) → {Name(y)} with {result.Method}, {result.Steps} steps, {result.WallMs:F0} ms");
                stdout.WriteLine($"  prediction  {string.Join(", ", result.PredictionsBefore.Select(Name))} → {string.Join(", ", result.PredictionsAfter.Select(Name))}");
                stdout.WriteLine($"  p(label)    {string.Join(", ", result.TargetProbBefore.Select(p => p.ToString("F4", CultureInfo.InvariantCulture)))} → {string.Join(", ", result.TargetProbAfter.Select(p => p.ToString("F4", CultureInfo.InvariantCulture)))}");
                stdout.WriteLine($"  loss        {result.InitialLoss:F4} → {result.FinalLoss:F4}");
                stdout.WriteLine($"  mask        {result.KeptGates} of {result.TotalGates} hidden units; {result.WeightsChanged:N0} of {result.WeightsEditable:N0} editable weights changed");
                stdout.WriteLine($"  patch       {outPath}");
            }
            if (!result.Success)
            {
                string lrText = options.LearningRate.ToString("G3", CultureInfo.InvariantCulture);
                stderr.WriteLine($"wte: the edit did not fix every image within {options.MaxSteps} steps (lr {lrText}); the patch was written anyway. " +
                                 $"Raise --max-steps (now {options.MaxSteps}) or --lr (now {lrText})" +
                                 (m is EditMethod.Hprd or EditMethod.Random ? $", or --keep (now {k.ToString(CultureInfo.InvariantCulture)})." : m.IsFineTuning() && options.Coefficient > 0 ? $", or lower --coef (now {options.Coefficient.ToString(CultureInfo.InvariantCulture)})." : "."));
                return 2;
            }
            return 0;
        });
        return command;
    }

    internal static int ParseLabel(string text, int classes, IReadOnlyList<string>? labels)
    {
        if (int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int index))
            return index >= 0 && index < classes ? index : throw new ArgumentException($"--label {index}: the model has classes 0..{classes - 1}");
        if (labels is not null)
            for (int i = 0; i < labels.Count; i++)
                if (string.Equals(labels[i], text, StringComparison.OrdinalIgnoreCase)) return i;
        throw new ArgumentException($"--label '{text}': not a class index or one of the model's label names");
    }

    /// <summary>Never write over a user's input: the output must be another file.</summary>
    internal static void RefuseOverwritingInput(string output, params string?[] inputs)
    {
        string full = Path.GetFullPath(output);
        foreach (string? input in inputs)
        {
            if (input is null) continue;
            string inFull = Path.GetFullPath(input);
            if (full == inFull || (Directory.Exists(inFull) && full.StartsWith(inFull + Path.DirectorySeparatorChar, StringComparison.Ordinal) && Path.GetFileName(full) == "model.safetensors"))
                throw new ArgumentException($"--out {output}: would overwrite the input {input}; write to another file");
        }
        if (Directory.Exists(full)) throw new ArgumentException($"--out {output}: is a folder; give a file name");
    }
}

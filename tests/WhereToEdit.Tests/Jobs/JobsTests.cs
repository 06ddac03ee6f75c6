using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Jobs;
using WhereToEdit.Engine.MetaTraining;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Jobs;

public sealed class JobsTests
{
    private static readonly VitConfig Config = new()
    {
        ImageSize = 16, PatchSize = 4, InChans = 3, EmbedDim = 16, Depth = 4, NumHeads = 2, MlpHidden = 32, NumClasses = 5,
    };

    private sealed class Recorder : IJobProgress
    {
        public readonly List<JobProgress> Reports = [];
        public readonly List<string> Notes = [];
        public void Report(JobProgress progress) => Reports.Add(progress);
        public void Note(string message) => Notes.Add(message);
    }

    /// <summary>A small model with a large head (so an edit can reach the stop rule), its hypernetwork, and a random image it gets wrong.</summary>
    internal static (string Model, string Hypernet, string Image, int Label) Files(TempDir dir)
    {
        string modelPath = dir.File("model.safetensors"), hyperPath = dir.File("hyper.safetensors"), image = dir.File("img.png");
        var pre = new Preprocessing(ResizeMode.Direct, 16, 16, Interpolation.Bilinear, [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]);
        using (var img = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(16, 16))
        {
            var r = new System.Random(3);
            for (int row = 0; row < 16; row++) for (int col = 0; col < 16; col++) img[col, row] = new((byte)r.Next(256), (byte)r.Next(256), (byte)r.Next(256));
            SixLabors.ImageSharp.ImageExtensions.SaveAsPng(img, image);
        }
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var model = new VitModel(be, Config);
        TestModels.Randomise(model, 1);
        VitCheckpoint.Save(model, modelPath, pre, ["a", "b", "c", "d", "e"]);
        var target = EditTarget.Default(Config);
        using var net = new Hypernetwork(be, HypernetConfig.For(Config, target.Units.Count, depth: 1));
        net.InitializeRandom(4);
        HypernetFile.Save(hyperPath, net, target.Blocks, VitCheckpoint.Fingerprint(model));
        using var ws = model.CreateWorkspace(1);
        using var x = be.FromHost("x", new ImageLoader().Load(image, pre), 1, 3, 16, 16);
        model.Forward(ws, x, 1);
        var logits = ws.Logits.ToArray();
        return (modelPath, hyperPath, image, (Array.IndexOf(logits, logits.Max()) + 1) % 5);
    }

    [Fact]
    public void Edit_job_edits_writes_the_patch_reports_progress_and_honours_cancellation()
    {
        using var dir = new TempDir();
        var (model, hypernet, image, label) = Files(dir);
        var options = new EditJobOptions
        {
            ModelPath = model, HypernetPath = hypernet, Images = [image], Label = "abcde"[label].ToString(), Keep = 0.5, LearningRate = 0.01f,
            OutPath = dir.File("edit.safetensors"), Backend = new BackendChoice { Threads = 2 },
        };
        var recorder = new Recorder();
        var result = EditJob.Run(options, recorder);
        Assert.Equal(label, result.Label);   // the label given by name
        Assert.True(result.Edit.Success);
        Assert.Equal([label], result.Edit.PredictionsAfter);
        Assert.NotEqual([label], result.Edit.PredictionsBefore);
        Assert.Equal(EditMask.KeepCount(result.Edit.TotalGates, 0.5), result.Edit.KeptGates);
        var patch = EditPatch.Load(options.OutPath);
        Assert.Equal("hprd", patch.Info.Method);
        Assert.Equal(result.Edit.Steps, patch.Info.Result!.Steps);
        Assert.Single(recorder.Reports);
        Assert.Equal((1L, 1L), (recorder.Reports[0].Step, recorder.Reports[0].Total));
        Assert.Single(recorder.Notes);

        // The options and the result are plain records: they go through JSON and back.
        var back = JobJson.Deserialize<EditJobOptions>(JobJson.Serialize(options));
        Assert.Equal((options.ModelPath, options.Label, options.Keep, options.LearningRate, options.OutPath, options.Backend),
                     (back.ModelPath, back.Label, back.Keep, back.LearningRate, back.OutPath, back.Backend));
        Assert.Equal(options.Images, back.Images);
        string json = JobJson.Serialize(result);
        Assert.Contains("\"patch_path\"", json);
        Assert.Contains("\"predictions_after\":[" + label + "]", json);

        // Cancelled before it starts: an OperationCanceledException and no patch.
        using var cancel = new CancellationTokenSource();
        cancel.Cancel();
        string other = dir.File("cancelled.safetensors");
        Assert.Throws<OperationCanceledException>(() => EditJob.Run(options with { OutPath = other }, null, cancel.Token));
        Assert.False(File.Exists(other));
    }

    [Fact]
    public void Mask_policy_takes_the_top_k_for_hprd_a_seeded_random_mask_and_every_unit_for_fine_tuning()
    {
        var target = EditTarget.Default(Config);
        var scores = Enumerable.Range(0, target.TotalGates).Select(i => (float)((i * 37) % target.TotalGates)).ToArray();
        var hprd = EditMaskPolicy.For(EditMethod.Hprd, target, 0.25, scores, seed: 0);
        Assert.Equal(EditMask.TopK(target, scores, 0.25).Gates, hprd.Gates);
        int k = EditMask.KeepCount(target.TotalGates, 0.25);
        float threshold = scores.OrderDescending().ElementAt(k - 1);
        Assert.All(Enumerable.Range(0, target.TotalGates), i => Assert.Equal(scores[i] >= threshold, hprd.Gates[i]));

        var random = EditMaskPolicy.For(EditMethod.Random, target, 0.25, null, seed: 5);
        Assert.Equal(k, random.Kept);
        Assert.Equal(random.Gates, EditMaskPolicy.For(EditMethod.Random, target, 0.25, null, seed: 5).Gates);
        Assert.NotEqual(random.Gates, EditMaskPolicy.For(EditMethod.Random, target, 0.25, null, seed: 6).Gates);

        Assert.Equal(target.TotalGates, EditMaskPolicy.For(EditMethod.FtL2, target, 1, null, seed: 0).Kept);
        Assert.Throws<ArgumentException>(() => EditMaskPolicy.For(EditMethod.Hprd, target, 0.25, null, seed: 0));
    }

    [Fact]
    public void Evaluate_options_expand_to_the_sweep_in_method_order_and_survive_json()
    {
        var demo = DemoSetup.Options("assets", "out/demo", 3);
        // The demo's reduced sweep is an explicit list: learned vs random masks at keep 0.1 (+ HPRD 0.25) and FT-L2.
        Assert.Equal(["hprd keep=0.25", "hprd keep=0.1", "random keep=0.1", "ft-l2 c=0.001"], demo.Settings().Select(s => s.Key));
        var grid = new EvaluateJobOptions { ModelPath = "m", OutDir = "o", Methods = ["hprd", "random", "ft-l1", "ft-l2"], Keeps = [0.25, 0.1], Coefficients = [0.01, 0.001] };
        Assert.Equal(
            ["hprd keep=0.25", "hprd keep=0.1", "random keep=0.25", "random keep=0.1", "ft-l1 c=0.01", "ft-l1 c=0.001", "ft-l2 c=0.01", "ft-l2 c=0.001"],
            grid.Settings().Select(s => s.Key));
        Assert.Equal(0.001f, demo.Settings()[^1].Coefficient);
        Assert.Equal(2 * 5 + 2 * 7, new EvaluateJobOptions { ModelPath = "m", OutDir = "o" }.Settings().Count);   // the paper's sweep: hprd, random × 5 keeps; FT-L1, FT-L2 × 7 coefficients
        var back = JobJson.Deserialize<EvaluateJobOptions>(JobJson.Serialize(demo));
        Assert.Equal(demo.Settings(), back.Settings());
        Assert.Equal(demo.Protocol, back.Protocol);
        Assert.Equal(DemoSetup.LearningRate, back.Protocol.LearningRate);
        Assert.Throws<ArgumentException>(() => (grid with { Keeps = [0.5, 1.5] }).Settings());
        Assert.Throws<ArgumentException>(() => (grid with { Methods = ["hprd", "sgd"] }).Settings());
    }

    [Fact]
    public void Meta_train_overrides_change_only_what_was_given()
    {
        var defaults = new MetaTrainOptions();
        Assert.Equal(defaults.ToJson(), new MetaTrainOverrides().Apply(defaults).ToJson());
        var changed = new MetaTrainOverrides { Iterations = 7, InnerLr = 0.5f, EditBlocks = [1, 2], CutMixReferenceBounds = true }.Apply(defaults);
        Assert.Equal((7, 0.5f, true), (changed.Iterations, changed.InnerLr, changed.CutMixReferenceBounds));
        Assert.Equal([1, 2], changed.EditBlocks!);
        Assert.Equal((defaults.Batch, defaults.OuterSteps, defaults.Seed), (changed.Batch, changed.OuterSteps, changed.Seed));
    }
}

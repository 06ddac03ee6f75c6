using WhereToEdit.Cli;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Editing;

public sealed class EditingTests
{
    private static readonly VitConfig Config = new()
    {
        ImageSize = 16, PatchSize = 4, InChans = 3, EmbedDim = 16, Depth = 4, NumHeads = 2, MlpHidden = 32, NumClasses = 5,
    };

    private static VitModel Model(CpuBackend be, ulong seed = 1)
    {
        var m = new VitModel(be, Config);
        TestModels.Randomise(m, seed);
        return m;
    }

    private static float[] Images(int n, ulong seed)
    {
        var rng = new Rng(seed);
        return Enumerable.Range(0, n * 3 * 16 * 16).Select(_ => (float)rng.NextNormal()).ToArray();
    }

    private static int Predict(VitModel m, float[] image)
    {
        using var ws = m.CreateWorkspace(1);
        using var x = m.Backend.FromHost("x", image, 1, 3, 16, 16);
        m.Forward(ws, x, 1);
        var logits = ws.Logits.ToArray();
        return Array.IndexOf(logits, logits.Max());
    }

    [Fact]
    public void Hprd_edit_changes_only_masked_units_and_follows_the_stop_rule()
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var model = Model(be);
        var target = EditTarget.Default(Config);
        Assert.Equal([2, 3], target.Blocks.Take(2));
        var image = Images(1, 7);
        int wrong = Predict(model, image), label = (wrong + 1) % 5;
        var before = model.Parameters.ToDictionary(p => p.Name, p => p.Value.ToArray());
        var mask = EditMask.Random(target, 0.25, seed: 3);
        using var editor = new ModelEditor(model, target);
        var result = editor.Edit(image, [label], mask, new EditOptions { LearningRate = 1e-2f, MaxSteps = 100 });

        Assert.True(result.Success);
        Assert.Equal(label, Predict(model, image));
        Assert.True(result.Steps > 0 && result.Steps < 100, $"steps {result.Steps}, losses {string.Join(",", result.LossHistory.Select(l => l.ToString("F3")))}");
        Assert.True(result.FinalLoss <= 0.01f);
        Assert.Equal(result.Steps, result.LossHistory.Length);
        Assert.True(result.LossHistory.Last() > 0.01f, $"the rule stops before a step once done: {string.Join(",", result.LossHistory)} final {result.FinalLoss}");
        Assert.NotEqual(result.HashesBefore.Values, result.HashesAfter.Values);
        long changed = 0;
        foreach (var p in model.Parameters)
        {
            var now = p.Value.ToArray();
            var unit = target.Units.FirstOrDefault(u => u.Parameter == p.Name);
            for (int i = 0; i < now.Length; i++)
            {
                bool same = BitConverter.SingleToInt32Bits(now[i]) == BitConverter.SingleToInt32Bits(before[p.Name][i]);
                if (same) continue;
                changed++;
                Assert.NotNull(unit);
                int j = unit!.Axis == MaskAxis.Rows ? i / Config.EmbedDim : i % Config.MlpHidden;
                Assert.True(mask.Unit(unit.Index)[j], $"{p.Name}[{i}] changed outside the mask");
            }
        }
        Assert.Equal(result.WeightsChanged, changed);

        // Already fixed: the stop rule is checked before the first step, so nothing moves.
        editor.SnapshotOriginal();
        var again = editor.Edit(image, [label], mask, new EditOptions { LearningRate = 1e-2f });
        Assert.Equal(0, again.Steps);
        Assert.Equal(0, again.WeightsChanged);
    }

    [Fact]
    public void Top_k_keeps_exactly_k_and_random_masks_match_the_keep_fraction()
    {
        var target = EditTarget.Default(Config);
        var scores = new float[target.TotalGates];
        for (int i = 0; i < scores.Length; i++) scores[i] = (i % 7) / 7f;   // many ties
        var mask = EditMask.TopK(target, scores, 0.1);
        Assert.Equal((int)(0.1 * target.TotalGates), mask.Kept);
        Assert.Equal(mask.Kept, EditMask.Random(target, 0.1, 1).Kept);
        Assert.Throws<ArgumentOutOfRangeException>(() => EditMask.TopK(target, scores, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => EditMask.TopK(target, scores, 1.5));
        Assert.Equal(1.0, mask.IoU(mask));
    }

    [Fact]
    public void Patch_apply_then_revert_is_bit_identical_and_other_bases_are_refused()
    {
        using var dir = new TempDir();
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var model = Model(be);
        var target = EditTarget.Default(Config);
        string baseFp = VitCheckpoint.Fingerprint(model);
        var baseWeights = model.Parameters.Select(p => p.Value.ToArray()).ToList();
        var image = Images(1, 7);
        int label = (Predict(model, image) + 2) % 5;
        var mask = EditMask.Random(target, 0.3, 5);
        using var editor = new ModelEditor(model, target);
        var result = editor.Edit(image, [label], mask, new EditOptions { LearningRate = 1e-2f });
        var patch = EditPatch.FromEdit(model, target, mask, target.Units.Select(u => editor.OriginalValues(u.Index)).ToList(),
            baseFp, "hprd", 0.3, [label], ["x.png"], result);
        patch.Save(dir.File("p.safetensors"));
        var editedWeights = model.Parameters.Select(p => p.Value.ToArray()).ToList();
        var loadedPatch = EditPatch.Load(dir.File("p.safetensors"));
        Assert.Equal(patch.WeightCount, loadedPatch.WeightCount);

        editor.Revert();
        Assert.Equal(baseFp, VitCheckpoint.Fingerprint(model));
        loadedPatch.Apply(model);
        Assert.Equal(editedWeights, model.Parameters.Select(p => p.Value.ToArray()).ToList());
        loadedPatch.Revert(model);
        Assert.Equal(baseWeights, model.Parameters.Select(p => p.Value.ToArray()).ToList());

        using var other = Model(be, seed: 2);
        Assert.Contains("fingerprint", Assert.Throws<InvalidOperationException>(() => loadedPatch.Apply(other)).Message);
        var otherBefore = other.Parameters.Select(p => p.Value.ToArray()).ToList();
        Assert.Throws<InvalidOperationException>(() => loadedPatch.Revert(other));
        Assert.Equal(otherBefore, other.Parameters.Select(p => p.Value.ToArray()).ToList());   // refused = untouched

        loadedPatch.Apply(model, scale: 0.5f);
        loadedPatch.Revert(model);
        Assert.Equal(baseWeights, model.Parameters.Select(p => p.Value.ToArray()).ToList());
    }

    [Fact]
    public void Wte_edit_and_patch_commands_end_to_end_with_clear_errors()
    {
        using var dir = new TempDir();
        string modelPath = dir.File("model.safetensors"), hyperPath = dir.File("hyper.safetensors");
        var pre = new Preprocessing(ResizeMode.Direct, 16, 16, Interpolation.Bilinear, [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]);
        string image = dir.File("img.png");
        using (var img = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(16, 16))
        {
            var r = new System.Random(3);
            for (int y = 0; y < 16; y++) for (int x = 0; x < 16; x++) img[x, y] = new((byte)r.Next(256), (byte)r.Next(256), (byte)r.Next(256));
            SixLabors.ImageSharp.ImageExtensions.SaveAsPng(img, image);
        }
        int label;
        using (var be = new CpuBackend(new CpuBackendOptions { Threads = 2 }))
        using (var model = Model(be))
        {
            VitCheckpoint.Save(model, modelPath, pre, ["a", "b", "c", "d", "e"]);
            var target = EditTarget.Default(Config);
            using var net = new Hypernetwork(be, HypernetConfig.For(Config, target.Units.Count, depth: 1));
            net.InitializeRandom(4);
            HypernetFile.Save(hyperPath, net, target.Blocks, VitCheckpoint.Fingerprint(model));
            label = (Predict(model, new ImageLoader().Load(image, pre)) + 1) % 5;
        }
        int Run(out string stdout, out string stderr, params string[] args)
        {
            var o = new StringWriter(); var e = new StringWriter();
            int code = WteCommands.Run(args, o, e);
            (stdout, stderr) = (o.ToString(), e.ToString());
            return code;
        }
        string patch = dir.File("edit.safetensors");
        int rc = Run(out var outText, out var err, "edit", modelPath, "--hypernet", hyperPath, "--image", image, "--label", label.ToString(),
            "--keep", "0.5", "--lr", "0.01", "--out", patch);
        Assert.True(rc == 0, err);
        Assert.Contains("fixed", outText);
        Assert.True(File.Exists(patch));
        Assert.Equal(0, Run(out outText, out err, "patch", "info", patch));
        Assert.Contains("method hprd, keep 0.5", outText);
        Assert.Equal(0, Run(out _, out err, "patch", "apply", modelPath, patch, "--out", dir.File("patched.safetensors")));
        Assert.Equal(0, Run(out _, out err, "patch", "revert", dir.File("patched.safetensors"), patch, "--out", dir.File("restored.safetensors")));
        var original = SafeTensors.Read(modelPath);
        var restored = SafeTensors.Read(dir.File("restored.safetensors"));
        foreach (var t in original.Tensors) Assert.Equal(t.Data, restored[t.Name].Data);
        Assert.NotEqual(0, Run(out _, out err, "patch", "apply", dir.File("patched.safetensors"), patch, "--out", dir.File("twice.safetensors")));
        Assert.Contains("fingerprint", err);

        // Each bad input: exit code ≠ 0, one line naming the problem, nothing written.
        string bad = dir.File("bad.safetensors");
        void Refused(string expect, params string[] args)
        {
            int code = Run(out var so, out var se, args);
            Assert.True(code != 0, $"{string.Join(" ", args)} succeeded: {so}");
            Assert.Contains(expect, se);
            Assert.False(File.Exists(bad), "a refused edit wrote its output");
        }
        Refused("--keep", "edit", modelPath, "--hypernet", hyperPath, "--image", image, "--label", "1", "--keep", "0", "--out", bad);
        Refused("--keep", "edit", modelPath, "--hypernet", hyperPath, "--image", image, "--label", "1", "--keep", "1.5", "--out", bad);
        Refused("--label 7", "edit", modelPath, "--hypernet", hyperPath, "--image", image, "--label", "7", "--out", bad);
        Refused("zebra", "edit", modelPath, "--hypernet", hyperPath, "--image", image, "--label", "zebra", "--out", bad);
        File.WriteAllBytes(dir.File("broken.png"), [1, 2, 3]);
        Refused("broken.png", "edit", modelPath, "--hypernet", hyperPath, "--image", dir.File("broken.png"), "--label", "1", "--out", bad);
        Refused("trained on base model", "edit", dir.File("patched.safetensors"), "--hypernet", hyperPath, "--image", image, "--label", "1", "--out", bad);
        Refused("cuda", "edit", modelPath, "--hypernet", hyperPath, "--image", image, "--label", "1", "--device", "cuda", "--out", bad);
        Refused("overwrite", "edit", modelPath, "--hypernet", hyperPath, "--image", image, "--label", "1", "--out", modelPath);

        // Stacking: editing the patched model with --base (the original the hypernetwork was trained for).
        rc = Run(out _, out err, "edit", dir.File("patched.safetensors"), "--base", modelPath, "--hypernet", hyperPath, "--image", image,
            "--label", ((label + 1) % 5).ToString(), "--lr", "0.01", "--keep", "0.5", "--out", dir.File("edit2.safetensors"));
        Assert.True(rc == 0, err);
        Assert.Equal(0, Run(out _, out err, "patch", "apply", dir.File("patched.safetensors"), dir.File("edit2.safetensors"), "--out", dir.File("stacked.safetensors")));
    }
}

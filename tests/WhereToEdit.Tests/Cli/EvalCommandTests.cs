using WhereToEdit.Cli;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Cli;

/// <summary>`wte eval` end to end on a tiny benchmark in the paper's folder layout.</summary>
public sealed class EvalCommandTests
{
    [Fact]
    public void Eval_on_the_paper_layout_writes_records_tables_and_plots()
    {
        using var dir = new TempDir();
        var config = new VitConfig { ImageSize = 16, PatchSize = 4, InChans = 3, EmbedDim = 16, Depth = 4, NumHeads = 2, MlpHidden = 32, NumClasses = 4 };
        var pre = new Preprocessing(ResizeMode.Direct, 16, 16, Interpolation.Bilinear, [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]);
        string modelPath = dir.File("m.safetensors");
        var loader = new ImageLoader();
        using (var be = new CpuBackend(new CpuBackendOptions { Threads = 2 }))
        using (var model = new VitModel(be, config))
        {
            TestModels.Randomise(model, 3);
            VitCheckpoint.Save(model, modelPath, pre, ["a", "b", "c", "d"]);
            // Failures of class 2 and a locality folder, as PNGs classified by this model.
            Directory.CreateDirectory(dir.File("failures/2_c"));
            Directory.CreateDirectory(dir.File("locality"));
            var random = new System.Random(5);
            int failures = 0;
            using var ws = model.CreateWorkspace(1);
            for (int i = 0; i < 60 && failures < 4; i++)
            {
                using var img = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(16, 16);
                for (int y = 0; y < 16; y++) for (int x = 0; x < 16; x++) img[x, y] = new((byte)random.Next(256), (byte)random.Next(256), (byte)random.Next(256));
                string tmp = dir.File($"tmp{i}.png");
                SixLabors.ImageSharp.ImageExtensions.SaveAsPng(img, tmp);
                using var input = be.FromHost("x", loader.Load(tmp, pre), 1, 3, 16, 16);
                model.Forward(ws, input, 1);
                int pred = HostMath.ArgMax(ws.Logits.ToArray().AsSpan(0, 4));
                if (pred != 2 && failures < 4) File.Move(tmp, dir.File($"failures/2_c/f{failures++}.png"));
                else if (i < 30) File.Move(tmp, dir.File($"locality/l{i}.png"));
            }
            Assert.Equal(4, failures);
        }
        var o = new StringWriter(); var e = new StringWriter();
        int code = WteCommands.Run(["eval", "--model", modelPath, "--failures", dir.File("failures"), "--locality", dir.File("locality"),
            "--methods", "ft-l2,random", "--keeps", "0.5", "--coefs", "0.01", "--lr", "0.01", "--max-steps", "20", "--out", dir.File("out")], o, e);
        Assert.True(code == 0, e.ToString());
        Assert.Equal(8, File.ReadAllLines(dir.File("out/edits.jsonl")).Length);   // 4 edits × 2 settings
        string summary = File.ReadAllText(dir.File("out/summary.md"));
        Assert.Contains("ft-l2 c=0.01", summary);
        Assert.Contains("random keep=0.5", summary);
        Assert.True(File.Exists(dir.File("out/plots/pareto_natural.png")) || Directory.GetFiles(dir.File("out/plots"), "*.png").Length == 1);
        // summary.md shows the plots it sits beside (relative links that resolve).
        var links = System.Text.RegularExpressions.Regex.Matches(summary, @"!\[[^\]]*\]\((?<link>[^)]+)\)").Select(m => m.Groups["link"].Value).ToList();
        Assert.NotEmpty(links);
        Assert.All(links, l => Assert.True(!Path.IsPathRooted(l) && File.Exists(Path.Combine(dir.File("out"), l)), l));
        Assert.Contains("SR", o.ToString());

        // Without --lr every edit uses the width rule, as `wte edit` does: 2e-5 · 768 / width.
        Assert.Equal(0, WteCommands.Run(["eval", "--model", modelPath, "--failures", dir.File("failures"), "--locality", dir.File("locality"),
            "--methods", "ft-l2", "--coefs", "0", "--max-steps", "2", "--out", dir.File("out-default-lr")], o, e = new StringWriter()));
        float widthRule = (float)WhereToEdit.Engine.Editing.ScalingRules.EditLearningRate(config.EmbedDim);
        Assert.NotEqual(2e-5f, widthRule);
        Assert.Contains($"lr {widthRule.ToString(System.Globalization.CultureInfo.InvariantCulture)},", File.ReadAllText(dir.File("out-default-lr/summary.md")));
        Assert.NotEqual(0, WteCommands.Run(["eval", "--model", modelPath, "--failures", dir.File("failures"), "--locality", dir.File("locality"),
            "--methods", "ft-l2", "--lr", "-1", "--out", dir.File("out-bad-lr")], o, e = new StringWriter()));
        Assert.Contains("--lr", e.ToString());

        // Bad requests: one line, exit code ≠ 0.
        Assert.NotEqual(0, WteCommands.Run(["eval", "--model", modelPath, "--failures", dir.File("failures"), "--locality", dir.File("locality"),
            "--methods", "hprd", "--out", dir.File("out2")], o, e = new StringWriter()));
        Assert.Contains("hypernet", e.ToString());
        Assert.NotEqual(0, WteCommands.Run(["eval", "--model", modelPath, "--benchmark", dir.File("nope.json"), "--out", dir.File("out3")], o, e = new StringWriter()));
        Assert.Contains("nope.json", e.ToString());
    }
}

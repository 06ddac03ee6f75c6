using System.Text.Json;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Parity;

/// <summary>The hypernetwork and the edit methods against tests/reference/fixtures/method_tiny.safetensors (float64 PyTorch).</summary>
public sealed class MethodParityTests(ITestOutputHelper output)
{
    private static readonly Lazy<ReferenceFixture> Fixture = new(() => ReferenceFixture.Load("method_tiny"));

    private static Dictionary<string, (int[], float[])> Params(string prefix) =>
        Fixture.Value.Tensors.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value);

    [Theory]
    [InlineData(GemmKind.OpenBlas)]
    [InlineData(GemmKind.Managed)]
    public void Hypernetwork_scores_and_gradients_match(GemmKind gemm)
    {
        var fx = Fixture.Value;
        using var be = Backends.Cpu(gemm);
        using var net = new Hypernetwork(be, HypernetConfig.FromJson(fx.Metadata["hyper_config"]));
        net.LoadWeights(Params("hyper/param/"), "method_tiny");
        int batch = fx.ShapeOf("hyper/input_cls")[0];
        using var ws = net.CreateWorkspace(batch);
        using var cls = be.FromHost("cls", fx["hyper/input_cls"], fx.ShapeOf("hyper/input_cls"));
        net.ZeroGrad();
        net.Forward(ws, cls, batch);
        Compare.Check(output, "hyper/scores", ws.Scores.ToArray(), fx["hyper/scores"]);
        ws.DScores.CopyFrom(fx["hyper/dscores"]);
        net.Backward(ws, batch);
        foreach (var p in net.Parameters)
            Compare.Check(output, "hyper/grad/" + p.Name, p.Grad.ToArray(), fx["hyper/grad/" + p.Name]);
    }

    [Theory]
    [InlineData("hprd")]
    [InlineData("ft_l1")]
    [InlineData("ft_l2")]
    public void Edit_methods_match_four_reference_steps(string method)
    {
        var fx = Fixture.Value;
        var hp = JsonDocument.Parse(fx.Metadata["edit_hparams"]).RootElement.GetProperty(method);
        using var be = Backends.Cpu(GemmKind.Managed);
        using var model = new VitModel(be, VitConfig.FromJson(fx.Metadata["config"]));
        model.LoadWeights(Params("vit/param/"), "method_tiny");
        var target = new EditTarget(model.Config, JsonSerializer.Deserialize<int[]>(fx.Metadata["edit_blocks"])!);
        var gates = target.Units.SelectMany(u => fx["edit/mask/" + u.Parameter[..^".weight".Length]].Select(v => v != 0)).ToArray();
        var mask = new EditMask(target, gates);
        using var editor = new ModelEditor(model, target);
        var options = new EditOptions
        {
            Method = method switch { "hprd" => EditMethod.Hprd, "ft_l1" => EditMethod.FtL1, _ => EditMethod.FtL2 },
            LearningRate = hp.GetProperty("lr").GetSingle(),
            Coefficient = method == "hprd" ? 0 : hp.GetProperty("c").GetSingle(),
            MaxSteps = 4,
            StopLoss = -1,   // the fixture runs 4 steps with no stop rule
        };
        var labels = fx["edit/labels"].Select(v => (int)v).ToArray();
        var result = editor.Edit(fx["edit/images"], labels, mask, options);
        Assert.Equal(4, result.Steps);
        if (method == "hprd") Compare.Check(output, "edit/hprd_losses", result.LossHistory, fx["edit/hprd_losses"]);
        foreach (var u in target.Units)
            Compare.Check(output, $"edit/{method}/{u.Parameter}", model[u.Parameter].Value.ToArray(), fx[$"edit/{method}/{u.Parameter}"]);
        if (method == "hprd")
        {
            // Exactly sparse: only masked rows of fc1 / columns of fc2 changed.
            Assert.True(result.WeightsChanged <= mask.Kept * target.WeightsPerGate);
            Assert.True(result.WeightsChanged > 0);
        }
        editor.Revert();
        foreach (var u in target.Units)
            Assert.Equal(fx["vit/param/" + u.Parameter], model[u.Parameter].Value.ToArray());
    }
}

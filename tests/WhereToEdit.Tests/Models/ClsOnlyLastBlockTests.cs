using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Models;

/// <summary>
/// The last block run for [CLS] only (<see cref="TransformerBlock.ForwardCls"/>, <see cref="TransformerBlock.BackwardCls"/>:
/// the CPU backend's default) against every token through it (<see cref="VitModel.LastBlockClsOnly"/> = false): the same
/// logits, the same [CLS] output, and the same gradient of every parameter and of the input, for the backward plans that
/// take the [CLS]-only backward's different exits.
/// </summary>
public sealed class ClsOnlyLastBlockTests(ITestOutputHelper output)
{
    private static readonly VitConfig WithBias = TestModels.Small with { Depth = 3 };
    private static readonly VitConfig NoBias = TestModels.SmallNoBias with { Depth = 2 };

    public static TheoryData<string, string> Cases => new()
    {
        { "bias", "full" },            // every parameter and the input gradient
        { "nobias", "full" },
        { "bias", "last-mlp" },        // the last block's MLP only: the backward ends before its attention
        { "bias", "last-norms" },      // norm1/norm2 of the last block: the attention branch without qkv gradients
        { "bias", "last-qkv" },        // the qkv gradient reads the zeroed dq of the other tokens
        { "nobias", "below" },         // a lower block only: the last block passes the input gradient down
    };

    private static BackwardOptions Plan(string plan, VitConfig c)
    {
        string last = $"blocks.{c.Depth - 1}.";
        return plan switch
        {
            "full" => BackwardOptions.Full,
            "last-mlp" => BackwardOptions.Truncated(c.Depth - 1, [last + "mlp.fc1.weight", last + "mlp.fc2.weight", last + "mlp.fc1.bias"]),
            "last-norms" => BackwardOptions.Truncated(c.Depth - 1, [last + "norm1.weight", last + "norm1.bias", last + "norm2.weight"]),
            "last-qkv" => BackwardOptions.Truncated(c.Depth - 1, c.QkvBias ? [last + "attn.qkv.weight", last + "attn.qkv.bias"] : [last + "attn.qkv.weight"]),
            "below" => BackwardOptions.Truncated(0, ["blocks.0.mlp.fc1.weight", "blocks.0.attn.proj.weight", "blocks.0.norm1.bias"]),
            _ => throw new ArgumentException(plan),
        };
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Cls_only_last_block_matches_every_token_through_it(string configName, string plan)
    {
        var c = configName == "bias" ? WithBias : NoBias;
        const int batch = 3;
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });
        using var model = TestModels.Randomise(new VitModel(be, c), seed: 21, lnStd: 0.1);
        var rng = new Rng(5);
        using var images = be.FromHost("x", Enumerable.Range(0, batch * c.InChans * c.ImageSize * c.ImageSize)
            .Select(_ => (float)rng.NextNormal()).ToArray(), batch, c.InChans, c.ImageSize, c.ImageSize);
        using var labels = be.FromHost("y", [1f, 4f, 0f], batch);
        var options = Plan(plan, c);
        bool input = plan == "full";

        // One workspace for both runs: the [CLS]-only pass must not rely on scratch the other left behind.
        using var ws = model.CreateWorkspace(batch);
        (float[] Logits, float[] Cls, Dictionary<string, float[]> Grads, float[] DInput) Run(bool clsOnly)
        {
            model.LastBlockClsOnly = clsOnly;
            foreach (var p in model.Parameters) be.Fill(p.Grad, 0.5f);   // gradients accumulate onto what is there
            model.Forward(ws, images, batch);
            Assert.Equal(clsOnly, ws.LastBlockRanClsOnly);
            be.CrossEntropy(ws.Logits, labels, ws.Losses, ws.DLogits, batch, c.NumClasses, 1f / batch);
            model.Backward(ws, batch, options);
            var tokens = ws.BlockInput[c.Depth].ToArray();
            var cls = Enumerable.Range(0, batch).SelectMany(b => tokens.Skip(b * c.Tokens * c.EmbedDim).Take(c.EmbedDim)).ToArray();
            return (ws.Logits.ToArray()[..(batch * c.NumClasses)], cls,
                    model.Parameters.ToDictionary(p => p.Name, p => p.Grad.ToArray()), input ? ws.DInput.ToArray() : []);
        }

        var all = Run(clsOnly: false);
        var fast = Run(clsOnly: true);
        Close("logits", all.Logits, fast.Logits);
        Close("last block output [CLS]", all.Cls, fast.Cls);
        int moved = 0;
        foreach (var (name, expected) in all.Grads)
        {
            Close("grad/" + name, expected, fast.Grads[name]);
            if (expected.Any(v => v != 0.5f)) moved++;
        }
        Assert.True(moved >= 2, $"plan {plan}: only {moved} gradients were computed (the test would prove little)");
        if (input)
        {
            Assert.True(all.DInput.Any(v => v != 0), "the input gradient is zero");
            Close("grad/input", all.DInput, fast.DInput);
        }
    }

    private void Close(string name, float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        float err = 0, scale = 1e-6f;
        for (int i = 0; i < expected.Length; i++)
        {
            err = Math.Max(err, Math.Abs(expected[i] - actual[i]));
            scale = Math.Max(scale, Math.Abs(expected[i]));
        }
        output.WriteLine($"{name,-36} max |cls-only − all tokens| = {err:E2} (max {scale:E2})");
        Assert.True(err <= 1e-5f * scale, $"{name}: max error {err} > 1e-5 × {scale}");
    }
}

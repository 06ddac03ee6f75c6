using System.Text.Json;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Parity;

/// <summary>
/// Parity with the float64 PyTorch reference (tests/reference/make_fixtures.py): forward, [CLS] feature,
/// both losses, every gradient, the truncated backward and the optimizer steps, on both GEMMs.
/// </summary>
public sealed class VitParityTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Cases()
    {
        foreach (string fixture in new[] { "vit_rgb", "vit_gray" })
            foreach (var gemm in new[] { GemmKind.OpenBlas, GemmKind.Managed })
                yield return [fixture, gemm];
    }

    private sealed class Setup : IDisposable
    {
        public required ReferenceFixture Fixture;
        public required CpuBackend Backend;
        public required VitModel Model;
        public required VitWorkspace Workspace;
        public required Tensor Input, Labels, TeacherProbs;
        public required int Batch;
        public required int[] EditBlocks;

        public void Dispose()
        {
            Workspace.Dispose();
            Model.Dispose();
            Backend.Dispose();
        }

        public IEnumerable<string> EditMatrices() =>
            EditBlocks.SelectMany(i => new[] { $"blocks.{i}.mlp.fc1.weight", $"blocks.{i}.mlp.fc2.weight" });

        /// <summary>Forward + mean CE + logit gradient; returns the loss.</summary>
        public float ForwardCe()
        {
            Model.Forward(Workspace, Input, Batch);
            Backend.CrossEntropy(Workspace.Logits, Labels, Workspace.Losses, Workspace.DLogits, Batch, Model.Config.NumClasses, 1f / Batch);
            return Workspace.Losses.ToArray().Take(Batch).Average();
        }
    }

    private static Setup Create(string name, GemmKind gemm)
    {
        var fx = ReferenceFixture.Load(name);
        var config = VitConfig.FromJson(fx.Metadata["config"]);
        var backend = Backends.Cpu(gemm);
        var model = new VitModel(backend, config);
        var weights = fx.Tensors.Where(kv => kv.Key.StartsWith("param/", StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key["param/".Length..], kv => kv.Value);
        model.LoadWeights(weights, name);
        int batch = int.Parse(fx.Metadata["batch"]);
        return new Setup
        {
            Fixture = fx, Backend = backend, Model = model, Workspace = model.CreateWorkspace(batch), Batch = batch,
            Input = backend.FromHost("input", fx["input"], fx.ShapeOf("input")),
            Labels = backend.FromHost("labels", fx["labels"], batch),
            TeacherProbs = backend.FromHost("teacher_probs", fx["teacher_probs"], fx.ShapeOf("teacher_probs")),
            EditBlocks = JsonSerializer.Deserialize<int[]>(fx.Metadata["edit_blocks"])!,
        };
    }

    [Theory, MemberData(nameof(Cases))]
    public void Forward_logits_and_cls_feature_match(string fixture, GemmKind gemm)
    {
        using var s = Create(fixture, gemm);
        s.Model.Forward(s.Workspace, s.Input, s.Batch);
        Compare.Check(output, "logits", s.Workspace.Logits.ToArray(), s.Fixture["logits"]);
        Compare.Check(output, "cls_feature", s.Workspace.ClsFeature.ToArray(), s.Fixture["cls_feature"]);
    }

    [Theory, MemberData(nameof(Cases))]
    public void Cross_entropy_and_kl_losses_and_gradients_match(string fixture, GemmKind gemm)
    {
        using var s = Create(fixture, gemm);
        int k = s.Model.Config.NumClasses, b = s.Batch;
        float ce = s.ForwardCe();
        Compare.Check(output, "ce_losses", s.Workspace.Losses.ToArray().AsSpan(0, b), s.Fixture["ce_losses"]);
        Compare.Check(output, "ce_loss", [ce], s.Fixture["ce_loss"]);
        Compare.Check(output, "ce_dlogits", s.Workspace.DLogits.ToArray().AsSpan(0, b * k), s.Fixture["ce_dlogits"]);
        float t = float.Parse(s.Fixture.Metadata["temperature"], System.Globalization.CultureInfo.InvariantCulture);
        s.Backend.KlDivergence(s.Workspace.Logits, s.TeacherProbs, s.Workspace.Losses, s.Workspace.DLogits, b, k, t, 1f / b);
        var kl = s.Workspace.Losses.ToArray().AsSpan(0, b);
        Compare.Check(output, "kl_losses", kl, s.Fixture["kl_losses"]);
        Compare.Check(output, "kl_loss", [kl.ToArray().Average()], s.Fixture["kl_loss"]);
        Compare.Check(output, "kl_dlogits", s.Workspace.DLogits.ToArray().AsSpan(0, b * k), s.Fixture["kl_dlogits"]);
    }

    [Theory, MemberData(nameof(Cases))]
    public void Full_backward_matches_every_parameter_and_input_gradient(string fixture, GemmKind gemm)
    {
        using var s = Create(fixture, gemm);
        s.Model.ZeroGrad();
        s.ForwardCe();
        s.Model.Backward(s.Workspace, s.Batch, BackwardOptions.Full);
        foreach (var p in s.Model.Parameters)
            Compare.Check(output, "grad/" + p.Name, p.Grad.ToArray(), s.Fixture["grad/" + p.Name]);
        Compare.Check(output, "grad/input", s.Workspace.DInput.ToArray(), s.Fixture["grad/input"]);
    }

    [Theory, MemberData(nameof(Cases))]
    public void Truncated_backward_matches_and_touches_only_the_named_parameters(string fixture, GemmKind gemm)
    {
        using var s = Create(fixture, gemm);
        var names = s.EditMatrices().ToList();
        s.Model.ZeroGrad();
        s.ForwardCe();
        s.Model.Backward(s.Workspace, s.Batch, BackwardOptions.Truncated(s.EditBlocks.Min(), names));
        foreach (string n in names) Compare.Check(output, "truncated grad/" + n, s.Model[n].Grad.ToArray(), s.Fixture["grad/" + n]);
        foreach (var p in s.Model.Parameters.Where(p => !names.Contains(p.Name)))
            Assert.True(p.Grad.ToArray().All(v => v == 0), $"{p.Name} got a gradient in a truncated backward");

        // Restarting at the first edit block from the cached block input gives the same logits and gradients.
        var logits = s.Workspace.Logits.ToArray();
        s.Model.ZeroGrad();
        s.Model.ForwardFrom(s.Workspace, s.EditBlocks.Min(), s.Batch);
        Assert.Equal(logits, s.Workspace.Logits.ToArray());
        s.Backend.CrossEntropy(s.Workspace.Logits, s.Labels, s.Workspace.Losses, s.Workspace.DLogits, s.Batch, s.Model.Config.NumClasses, 1f / s.Batch);
        s.Model.Backward(s.Workspace, s.Batch, BackwardOptions.Truncated(s.EditBlocks.Min(), names));
        foreach (string n in names) Compare.Check(output, "cached truncated grad/" + n, s.Model[n].Grad.ToArray(), s.Fixture["grad/" + n]);
    }

    [Theory, MemberData(nameof(Cases))]
    public void Three_masked_optimizer_steps_match(string fixture, GemmKind gemm)
    {
        foreach (string optimizer in new[] { "sgd", "rmsprop", "adam" })
        {
            using var s = Create(fixture, gemm);
            var names = s.EditMatrices().ToList();
            var masks = names.ToDictionary(n => n, n =>
            {
                string key = "mask/" + n[..^".weight".Length];
                var p = s.Model[n];
                var mask = s.Backend.FromHost(key, s.Fixture[key], s.Fixture.ShapeOf(key));
                return n.Contains("fc1") ? UpdateMask.RowMask(mask, p.Shape[0], p.Shape[1]) : UpdateMask.ColumnMask(mask, p.Shape[0], p.Shape[1]);
            });
            var state1 = names.ToDictionary(n => n, n => s.Backend.Allocate(n + ".state1", s.Model[n].Shape));
            var state2 = names.ToDictionary(n => n, n => s.Backend.Allocate(n + ".state2", s.Model[n].Shape));
            var before = names.ToDictionary(n => n, n => s.Model[n].Value.ToArray());
            var losses = new float[3];
            for (int step = 1; step <= 3; step++)
            {
                s.Model.ZeroGrad(names);
                losses[step - 1] = s.ForwardCe();
                s.Model.Backward(s.Workspace, s.Batch, BackwardOptions.Truncated(s.EditBlocks.Min(), names));
                foreach (string n in names)
                {
                    var p = s.Model[n];
                    switch (optimizer)
                    {
                        case "sgd": s.Backend.SgdStep(p.Value, p.Grad, 0.1f, 0f, masks[n]); break;
                        case "rmsprop": s.Backend.RmsPropStep(p.Value, p.Grad, state1[n], 1e-3f, 0.99f, 1e-8f, 0f, masks[n]); break;
                        default: s.Backend.AdamStep(p.Value, p.Grad, state1[n], state2[n], 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, false, step, masks[n]); break;
                    }
                }
            }
            Compare.Check(output, optimizer + "_losses", losses, s.Fixture[optimizer + "_losses"]);
            foreach (string n in names)
            {
                var after = s.Model[n].Value.ToArray();
                var expected = s.Fixture[$"{optimizer}/{n}"];
                if (optimizer == "rmsprop")
                {
                    // lr·g/(√v + eps) is ill-conditioned where |g| is within a few hundred eps of 0: there the fp32
                    // gradient's rounding noise (~1e-9) moves the step by a sizeable fraction of lr. Such entries
                    // (|g| < 1e-6 in the reference gradient) are bounded by 3·lr; all others are held to 1e-4.
                    var g = s.Fixture["grad/" + n];
                    var ill = Enumerable.Range(0, g.Length).Where(i => Math.Abs(g[i]) < 1e-6).ToHashSet();
                    var a = after.Where((_, i) => !ill.Contains(i)).ToArray();
                    var e = expected.Where((_, i) => !ill.Contains(i)).ToArray();
                    Compare.Check(output, $"{optimizer}/{n} ({ill.Count} ill-conditioned entries apart)", a, e);
                    foreach (int i in ill) Assert.InRange(Math.Abs(after[i] - expected[i]), 0, 3e-3);
                }
                else Compare.Check(output, $"{optimizer}/{n}", after, expected);
                // Outside the mask: bit-identical to the initial weights.
                var m = masks[n];
                var maskValues = m.Mask!.ToArray();
                for (int i = 0; i < after.Length; i++)
                {
                    int unit = m.Axis == MaskAxis.Rows ? i / m.Cols : i % m.Cols;
                    if (maskValues[unit] == 0 && BitConverter.SingleToInt32Bits(after[i]) != BitConverter.SingleToInt32Bits(before[n][i]))
                        throw new Xunit.Sdk.XunitException($"{optimizer}: {n}[{i}] outside the mask changed");
                }
            }
        }
    }

    [Theory, MemberData(nameof(Cases))]
    public void Three_unmasked_adamw_steps_on_all_parameters_match(string fixture, GemmKind gemm)
    {
        using var s = Create(fixture, gemm);
        var m = s.Model.Parameters.ToDictionary(p => p.Name, p => s.Backend.Allocate(p.Name + ".m", p.Shape));
        var v = s.Model.Parameters.ToDictionary(p => p.Name, p => s.Backend.Allocate(p.Name + ".v", p.Shape));
        var losses = new float[3];
        for (int step = 1; step <= 3; step++)
        {
            s.Model.ZeroGrad();
            losses[step - 1] = s.ForwardCe();
            s.Model.Backward(s.Workspace, s.Batch, BackwardOptions.Full);
            foreach (var p in s.Model.Parameters)
                s.Backend.AdamStep(p.Value, p.Grad, m[p.Name], v[p.Name], 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, true, step, UpdateMask.None(p.Length));
        }
        Compare.Check(output, "adamw_losses", losses, s.Fixture["adamw_losses"]);
        int d = s.Model.Config.EmbedDim;
        foreach (var p in s.Model.Parameters)
        {
            var actual = p.Value.ToArray();
            var expected = s.Fixture["adamw/" + p.Name];
            if (!p.Name.EndsWith("attn.qkv.bias", StringComparison.Ordinal))
            {
                Compare.Check(output, "adamw/" + p.Name, actual, expected);
                continue;
            }
            // The key bias has an exactly-zero true gradient (softmax is shift-invariant); Adam turns fp32 rounding
            // noise there into steps of up to lr each. Compare q and v exactly, bound k by 3·lr.
            Compare.Check(output, "adamw/" + p.Name + " [q]", actual.AsSpan(0, d), expected.AsSpan(0, d));
            Compare.Check(output, "adamw/" + p.Name + " [v]", actual.AsSpan(2 * d, d), expected.AsSpan(2 * d, d));
            for (int i = d; i < 2 * d; i++) Assert.InRange(Math.Abs(actual[i] - expected[i]), 0, 3 * 1e-3 + 1e-6);
        }
    }
}

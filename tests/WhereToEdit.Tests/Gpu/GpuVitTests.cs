using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using Xunit;
using Xunit.Abstractions;
using static WhereToEdit.Tests.Gpu.GpuTestData;

namespace WhereToEdit.Tests.Gpu;

/// <summary>A tiny ViT through <see cref="VitModel"/> on the GPU backend (CPU emulator) against the CPU backend.</summary>
[Collection(GpuEmulatorCollection.Name)]
public sealed class GpuVitTests(GpuEmulatorFixture f, ITestOutputHelper output)
{
    private const double Tol = 1e-5;
    private const int Batch = 2;

    private static readonly VitConfig Tiny = new()
    {
        ImageSize = 8, PatchSize = 4, InChans = 3, EmbedDim = 8, Depth = 2, NumHeads = 2, MlpHidden = 16, NumClasses = 3,
    };

    private sealed class Side(IBackend backend, VitModel model, VitWorkspace ws, Tensor images, Tensor labels) : IDisposable
    {
        public IBackend Backend { get; } = backend;
        public VitModel Model { get; } = model;
        public VitWorkspace Ws { get; } = ws;
        public Tensor Images { get; } = images;
        public Tensor Labels { get; } = labels;

        public void ForwardCe()
        {
            Model.Forward(Ws, Images, Batch);
            Backend.CrossEntropy(Ws.Logits, Labels, Ws.Losses, Ws.DLogits, Batch, Model.Config.NumClasses, 1f / Batch);
        }

        public void Dispose()
        {
            Ws.Dispose();
            Model.Dispose();
            Images.Dispose();
            Labels.Dispose();
        }
    }

    /// <summary>Both models get the same weights, scaled so every layer does real work (not timm's tiny init).</summary>
    private Side Build(IBackend backend)
    {
        var model = new VitModel(backend, Tiny);
        int seed = 1000;
        foreach (var p in model.Parameters)
        {
            int fanIn = p.Shape.Length >= 2 ? (int)(p.Length / p.Shape[0]) : 1;
            var values = Random(seed++, (int)p.Length, p.Shape.Length >= 2 ? 1.5f / MathF.Sqrt(fanIn) : 0.3f);
            if (p.Name.Contains("norm", StringComparison.Ordinal) && p.Name.EndsWith(".weight", StringComparison.Ordinal)) values = values.Select(v => 1f + v).ToArray();
            p.Value.CopyFrom(values);
        }
        var images = backend.FromHost("images", Random(7, Batch * 3 * 8 * 8), Batch, 3, 8, 8);
        var labels = backend.FromHost("labels", [2f, 0f], Batch);
        return new Side(backend, model, model.CreateWorkspace(Batch), images, labels);
    }

    private static float[] ClsRows(Tensor tokens)
    {
        var all = tokens.ToArray();
        int t = Tiny.Tokens, d = Tiny.EmbedDim;
        return Enumerable.Range(0, Batch).SelectMany(b => all.Skip(b * t * d).Take(d)).ToArray();
    }

    private void Same(string name, Tensor gpu, Tensor cpu, int count = -1)
    {
        var a = gpu.ToArray();
        var e = cpu.ToArray();
        if (count >= 0) { a = a[..count]; e = e[..count]; }
        Compare.Check(output, name, a, e, Tol);
    }

    [Fact]
    public void Forward_losses_and_full_backward_match_the_cpu_backend()
    {
        using var cpu = Build(f.Cpu);
        using var gpu = Build(f.Gpu);
        foreach (var s in new[] { cpu, gpu })
        {
            s.Model.ZeroGrad();
            s.ForwardCe();
        }
        Same("logits", gpu.Ws.Logits, cpu.Ws.Logits);
        Same("cls feature", gpu.Ws.ClsFeature, cpu.Ws.ClsFeature);
        for (int i = 0; i < Tiny.Depth; i++) Same($"block input {i}", gpu.Ws.BlockInput[i], cpu.Ws.BlockInput[i]);
        // The CPU backend runs the last block for [CLS] only: the head's input is all of its output that exists.
        Compare.Check(output, "last block output [CLS]", ClsRows(gpu.Ws.BlockInput[Tiny.Depth]), ClsRows(cpu.Ws.BlockInput[Tiny.Depth]), Tol);
        Same("ce losses", gpu.Ws.Losses, cpu.Ws.Losses);
        Same("ce dlogits", gpu.Ws.DLogits, cpu.Ws.DLogits);

        foreach (var s in new[] { cpu, gpu }) s.Model.Backward(s.Ws, Batch, BackwardOptions.Full);
        foreach (var p in cpu.Model.Parameters)
            Same("grad/" + p.Name, gpu.Model[p.Name].Grad, p.Grad);
        Same("grad/input", gpu.Ws.DInput, cpu.Ws.DInput);

        // Distillation against a teacher that disagrees (softmax of other logits at T = 2).
        float[] teacherLogits = Random(77, Batch * Tiny.NumClasses, 3f);
        using var teacherCpu = f.Cpu.FromHost("teacher", teacherLogits, Batch, Tiny.NumClasses);
        using var teacherGpu = f.Gpu.FromHost("teacher", teacherLogits, Batch, Tiny.NumClasses);
        f.Cpu.Softmax(teacherCpu, teacherCpu, Batch, Tiny.NumClasses, 2f);
        f.Gpu.Softmax(teacherGpu, teacherGpu, Batch, Tiny.NumClasses, 2f);
        Same("teacher probs", teacherGpu, teacherCpu);
        f.Cpu.KlDivergence(cpu.Ws.Logits, teacherCpu, cpu.Ws.Losses, cpu.Ws.DLogits, Batch, Tiny.NumClasses, 2f, 0.5f);
        f.Gpu.KlDivergence(gpu.Ws.Logits, teacherGpu, gpu.Ws.Losses, gpu.Ws.DLogits, Batch, Tiny.NumClasses, 2f, 0.5f);
        Same("kl losses", gpu.Ws.Losses, cpu.Ws.Losses);
        Same("kl dlogits", gpu.Ws.DLogits, cpu.Ws.DLogits);

        // Against its own softmax the KL is ~0: both backends' fp32 log-probabilities leave only rounding noise
        // (the CPU sums in float64, the GPU in float32), so that case is held to an absolute bound.
        f.Cpu.Softmax(cpu.Ws.Logits, teacherCpu, Batch, Tiny.NumClasses, 2f);
        f.Gpu.Softmax(gpu.Ws.Logits, teacherGpu, Batch, Tiny.NumClasses, 2f);
        f.Cpu.KlDivergence(cpu.Ws.Logits, teacherCpu, cpu.Ws.Losses, cpu.Ws.DLogits, Batch, Tiny.NumClasses, 2f, 0.5f);
        f.Gpu.KlDivergence(gpu.Ws.Logits, teacherGpu, gpu.Ws.Losses, gpu.Ws.DLogits, Batch, Tiny.NumClasses, 2f, 0.5f);
        var selfKl = gpu.Ws.Losses.ToArray();
        var selfKlCpu = cpu.Ws.Losses.ToArray();
        for (int i = 0; i < Batch; i++) Assert.InRange(Math.Abs(selfKl[i] - selfKlCpu[i]), 0, 2e-6);
        Assert.All(gpu.Ws.DLogits.ToArray(), v => Assert.InRange(Math.Abs(v), 0, 1e-6));
    }

    [Fact]
    public void Truncated_backward_and_masked_adam_edit_steps_match()
    {
        using var cpu = Build(f.Cpu);
        using var gpu = Build(f.Gpu);
        string[] names = ["blocks.1.mlp.fc1.weight", "blocks.1.mlp.fc2.weight"];
        float[] neurons = [1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1];
        var before = gpu.Model[names[0]].Value.ToArray().Concat(gpu.Model[names[1]].Value.ToArray()).ToArray();
        var sides = new[] { cpu, gpu };
        var masks = sides.Select(s => s.Backend.FromHost("neurons", neurons, neurons.Length)).ToArray();
        var state = sides.Select(s => names.Select(n => (M: s.Backend.Allocate(n + ".m", s.Model[n].Shape), V: s.Backend.Allocate(n + ".v", s.Model[n].Shape))).ToArray()).ToArray();
        var options = BackwardOptions.Truncated(1, names);
        for (int step = 1; step <= 2; step++)
        {
            for (int side = 0; side < 2; side++)
            {
                var s = sides[side];
                s.Model.ZeroGrad(names);
                s.ForwardCe();
                s.Model.Backward(s.Ws, Batch, options);
                for (int k = 0; k < names.Length; k++)
                {
                    var p = s.Model[names[k]];
                    var mask = k == 0 ? UpdateMask.RowMask(masks[side], p.Shape[0], p.Shape[1]) : UpdateMask.ColumnMask(masks[side], p.Shape[0], p.Shape[1]);
                    s.Backend.AdamStep(p.Value, p.Grad, state[side][k].M, state[side][k].V, 1e-2f, 0.9f, 0.999f, 1e-8f, 0f, false, step, mask);
                }
            }
            foreach (string n in names)
                Same($"step {step} truncated grad/{n}", gpu.Model[n].Grad, cpu.Model[n].Grad);
        }
        foreach (string n in names) Same("edited " + n, gpu.Model[n].Value, cpu.Model[n].Value);
        foreach (var p in gpu.Model.Parameters.Where(p => !names.Contains(p.Name)))
            Assert.True(p.Grad.ToArray().All(v => v == 0), $"{p.Name} got a gradient in a truncated backward");
        var after = gpu.Model[names[0]].Value.ToArray().Concat(gpu.Model[names[1]].Value.ToArray()).ToArray();
        int fc1 = Tiny.MlpHidden * Tiny.EmbedDim;
        for (int i = 0; i < after.Length; i++)
        {
            int neuron = i < fc1 ? i / Tiny.EmbedDim : (i - fc1) % Tiny.MlpHidden;
            if (neurons[neuron] == 0) Assert.True(BitEqual(after[i], before[i]), $"weight {i} of an unedited neuron changed");
        }
        foreach (var t in masks) t.Dispose();
        foreach (var (m, v) in state.SelectMany(x => x)) { m.Dispose(); v.Dispose(); }
    }
}

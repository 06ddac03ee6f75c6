using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Tensors;
using Xunit;

namespace WhereToEdit.Tests.Ops;

/// <summary>Bad input gives errors that name the tensor; results are deterministic; steady-state steps allocate nothing.</summary>
public sealed class EngineBehaviourTests
{
    private static VitConfig Tiny => VitConfig.Preset("test_tiny");

    private static float[] RandomImages(VitConfig c, int batch, ulong seed)
    {
        var rng = new Rng(seed);
        var v = new float[batch * c.InChans * c.ImageSize * c.ImageSize];
        for (int i = 0; i < v.Length; i++) v[i] = (float)rng.NextNormal();
        return v;
    }

    [Fact]
    public void Unknown_preset_lists_the_known_ones()
    {
        var e = Assert.Throws<ArgumentException>(() => VitConfig.Preset("vit_huge_patch99"));
        Assert.Contains("vit_huge_patch99", e.Message);
        Assert.Contains("vit_base_patch16_224", e.Message);
    }

    [Fact]
    public void Impossible_configs_are_refused()
    {
        Assert.Contains("num_heads", Assert.Throws<ArgumentException>(() => (Tiny with { NumHeads = 5 }).Validate()).Message);
        Assert.Contains("patch_size", Assert.Throws<ArgumentException>(() => (Tiny with { PatchSize = 7 }).Validate()).Message);
    }

    [Fact]
    public void Input_of_the_wrong_shape_names_the_tensor_and_both_shapes()
    {
        using var be = Backends.Cpu(GemmKind.Managed);
        using var model = new VitModel(be, Tiny);
        using var ws = model.CreateWorkspace(2);
        var images = be.Allocate("my_images", 2, 3, 16, 16);
        var e = Assert.Throws<ShapeMismatchException>(() => model.Forward(ws, images, 2));
        Assert.Contains("my_images", e.Message);
        Assert.Contains("[2,3,32,32]", e.Message);
        Assert.Contains("[2,3,16,16]", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(ws, be.Allocate("x", 3, 3, 32, 32), 3));
    }

    [Fact]
    public void Gemm_operand_too_small_names_the_tensor()
    {
        using var be = Backends.Cpu(GemmKind.Managed);
        var a = be.Allocate("A_small", 2, 3);
        var b = be.Allocate("B", 3, 4);
        var c = be.Allocate("C", 4, 4);
        var e = Assert.Throws<ArgumentException>(() => be.Gemm(false, false, 4, 4, 3, 1f, a, 0, 3, b, 0, 4, 0f, c, 0, 4));
        Assert.Contains("A_small", e.Message);
    }

    [Fact]
    public void Mask_of_the_wrong_length_is_refused_with_both_lengths()
    {
        using var be = Backends.Cpu(GemmKind.Managed);
        var p = be.Allocate("blocks.7.mlp.fc1.weight", 8, 4);
        var g = be.Allocate("g", 8, 4);
        var v = be.Allocate("v", 8, 4);
        var mask = be.Allocate("fc1_mask", 5);
        var e = Assert.Throws<ArgumentException>(() => be.RmsPropStep(p, g, v, 1e-3f, 0.99f, 1e-8f, 0, UpdateMask.RowMask(mask, 8, 4)));
        Assert.Contains("fc1_mask", e.Message);
        Assert.Contains("expected 8", e.Message);
        Assert.Contains("got 5", e.Message);
    }

    [Fact]
    public void Weights_with_nan_missing_or_misshaped_tensors_are_refused()
    {
        using var be = Backends.Cpu(GemmKind.Managed);
        using var model = new VitModel(be, Tiny);
        var weights = model.Parameters.ToDictionary(p => p.Name, p => (p.Shape, new float[p.Length]));
        weights["blocks.2.attn.proj.weight"].Item2[5] = float.NaN;
        var nan = Assert.Throws<NonFiniteException>(() => model.LoadWeights(weights, "model.safetensors"));
        Assert.Contains("blocks.2.attn.proj.weight", nan.Message);
        Assert.Contains("model.safetensors", nan.Message);

        weights["blocks.2.attn.proj.weight"].Item2[5] = 0;
        weights.Remove("norm.bias");
        weights["head.weight"] = ([3, 3], new float[9]);
        weights["extra.tensor"] = ([1], new float[1]);
        var e = Assert.Throws<ArgumentException>(() => model.LoadWeights(weights, "model.safetensors"));
        Assert.Contains("missing 1: norm.bias", e.Message);
        Assert.Contains("unexpected 1: extra.tensor", e.Message);
        Assert.Contains("head.weight: expected [10,32], got [3,3]", e.Message);
    }

    [Fact]
    public void Non_finite_inputs_and_losses_are_detected_by_name()
    {
        float[] values = [1, 2, float.PositiveInfinity];
        var e = Assert.Throws<NonFiniteException>(() => TensorChecks.EnsureFinite(values, "input images"));
        Assert.Contains("input images", e.Message);
        Assert.Contains("index 2", e.Message);
        Assert.Throws<NonFiniteException>(() => TensorChecks.EnsureFinite(float.NaN, "loss"));
    }

    [Fact]
    public void Cross_entropy_label_out_of_range_names_the_labels()
    {
        using var be = Backends.Cpu(GemmKind.Managed);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            be.CrossEntropy(be.Allocate("z", 2, 3), be.FromHost("edit_labels", [0f, 3f], 2), be.Allocate("l", 2), null, 2, 3, 1f));
        Assert.Contains("edit_labels", e.Message);
    }

    private sealed class ForeignTensor(IBackend owner) : Tensor("foreign_x", [4])
    {
        public override IBackend Backend => owner;
        public override void CopyFrom(ReadOnlySpan<float> source, long offset = 0) { }
        public override void CopyTo(Span<float> destination, long offset = 0) { }
    }

    [Fact]
    public void Tensors_of_another_backend_are_refused()
    {
        using var be = Backends.Cpu(GemmKind.Managed);
        var e = Assert.Throws<ArgumentException>(() => be.Fill(new ForeignTensor(be), 1));
        Assert.Contains("'foreign_x'", e.Message);
    }

    [Theory]
    [InlineData(GemmKind.OpenBlas)]
    [InlineData(GemmKind.Managed)]
    public void Forward_and_backward_are_deterministic_for_a_seed_and_thread_count(GemmKind gemm)
    {
        float[] Run()
        {
            using var be = Backends.Cpu(gemm, threads: 2);
            using var model = new VitModel(be, Tiny);
            model.InitializeRandom(42);
            using var ws = model.CreateWorkspace(3);
            var images = be.FromHost("x", RandomImages(Tiny, 3, 1), 3, 3, 32, 32);
            model.Forward(ws, images, 3);
            be.CrossEntropy(ws.Logits, be.FromHost("y", [1f, 2f, 3f], 3), ws.Losses, ws.DLogits, 3, 10, 1f / 3);
            model.ZeroGrad();
            model.Backward(ws, 3);
            return ws.Logits.ToArray().Concat(model.Parameters.SelectMany(p => p.Grad.ToArray())).ToArray();
        }
        Assert.Equal(Run(), Run());
    }

    [Fact]
    public void Steady_state_edit_steps_allocate_nothing()
    {
        using var be = Backends.Cpu(GemmKind.Managed, threads: 2);
        using var model = new VitModel(be, Tiny);
        model.InitializeRandom(3);
        // The editor users run (wte edit, the evaluation, wte bench), on block 2, with the stop rule off.
        var target = new EditTarget(Tiny, [2]);
        using var editor = new ModelEditor(model, target);
        editor.Begin(RandomImages(Tiny, 2, 5), [1, 4], EditMask.Random(target, 1 / 3.0, seed: 1),
            new EditOptions { LearningRate = 1e-3f, MaxSteps = 1000, StopLoss = -1 });
        var fc1Before = model["blocks.2.mlp.fc1.weight"].Value.ToArray();
        void Step() => Assert.True(editor.Step());
        for (int i = 0; i < 3; i++) Step();   // warm-up: JIT, per-thread scratch, GEMM packing buffers
        long min = long.MaxValue;
        for (int attempt = 0; attempt < 5 && min > 0; attempt++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 5; i++) Step();
            min = Math.Min(min, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.Equal(0, min);
        Assert.NotEqual(fc1Before, model["blocks.2.mlp.fc1.weight"].Value.ToArray());   // the steps did update the weights
    }
}

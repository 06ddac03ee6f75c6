using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Models;
using WhereToEdit.Engine.Training;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Training;

public sealed class PretrainerTests
{
    private static readonly VitConfig Tiny = new()
    {
        ImageSize = 12, PatchSize = 4, InChans = 1, EmbedDim = 16, Depth = 2, NumHeads = 2, MlpHidden = 32, NumClasses = 3,
    };

    /// <summary>Three classes a ViT can tell apart: a bright row band, column band or centre blob.</summary>
    private static LabeledImages Data(int n, int seed)
    {
        var rng = new System.Random(seed);
        var pixels = new byte[n * 144];
        var labels = new byte[n];
        for (int i = 0; i < n; i++)
        {
            int c = i % 3;
            labels[i] = (byte)c;
            for (int y = 0; y < 12; y++)
                for (int x = 0; x < 12; x++)
                {
                    bool on = c == 0 ? y is >= 4 and < 8 : c == 1 ? x is >= 4 and < 8 : Math.Abs(x - 6) + Math.Abs(y - 6) < 4;
                    pixels[i * 144 + y * 12 + x] = (byte)Math.Clamp((on ? 200 : 30) + rng.Next(-30, 31), 0, 255);
                }
        }
        return new LabeledImages(pixels, labels, 12, 12, "synthetic");
    }

    private static PretrainOptions Options => new() { Epochs = 12, Batch = 16, LearningRate = 1e-2f, WarmupEpochs = 0.5, Seed = 3, Shift = 1, CheckpointEvery = 9 };

    [Fact]
    public void Learns_a_separable_task_and_resume_equals_an_uninterrupted_run()
    {
        var train = Data(96, 1);
        var test = Data(30, 2);
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 2 });

        using var straight = new VitModel(be, Tiny);
        straight.InitializeRandom(5);
        using (var trainer = new Pretrainer(straight, Options))
        {
            var losses = new List<float>();
            trainer.Train(train, test, p => losses.Add(p.Loss), null);
            Assert.True(trainer.Evaluate(test) >= 0.9, $"test accuracy {trainer.Evaluate(test)}; losses {string.Join(",", losses.Select(l => l.ToString("F3")))}");
        }

        using var dir = new TempDir();
        string checkpoint = dir.File("ckpt.safetensors");
        using var resumed = new VitModel(be, Tiny);
        resumed.InitializeRandom(5);
        using (var first = new Pretrainer(resumed, Options))
        {
            // An interrupted run: stop right after the checkpoint at step 9 (mid-epoch).
            Assert.Throws<OperationCanceledException>(() => first.Train(train, test, null, step =>
            {
                if (step != 9) return;
                first.SaveCheckpoint(checkpoint);
                throw new OperationCanceledException();
            }));
        }
        using var fresh = new VitModel(be, Tiny);
        fresh.InitializeRandom(99);   // different init: everything must come from the checkpoint
        using (var second = new Pretrainer(fresh, Options))
        {
            second.LoadCheckpoint(checkpoint);
            Assert.Equal(9, second.Step);
            second.Train(train, test, null, null);
        }
        for (int i = 0; i < straight.Parameters.Count; i++)
            Assert.Equal(straight.Parameters[i].Value.ToArray(), fresh.Parameters[i].Value.ToArray());
    }

    [Fact]
    public void Warm_up_then_cosine_schedule_and_option_checks()
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 1 });
        using var model = new VitModel(be, Tiny);
        using var trainer = new Pretrainer(model, Options with { LearningRate = 1e-3f, MinLearningRate = 0, WarmupEpochs = 1 });
        Assert.Equal(1e-3f / 10, trainer.LearningRateAt(0, 100, 10), 6);
        Assert.Equal(1e-3f, trainer.LearningRateAt(9, 100, 10), 6);
        Assert.Equal(5e-4f, trainer.LearningRateAt(55, 100, 10), 5);
        Assert.True(trainer.LearningRateAt(99, 100, 10) < 1e-6f);
        Assert.NotEqual(trainer.EpochOrder(0, 50), trainer.EpochOrder(1, 50));
        Assert.Equal(trainer.EpochOrder(2, 50), trainer.EpochOrder(2, 50));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Pretrainer(model, Options with { Epochs = 0 }));
    }
}

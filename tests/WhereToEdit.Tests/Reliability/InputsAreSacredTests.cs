using WhereToEdit.Engine.IO;
using WhereToEdit.Tests.IO;
using Xunit;
using static WhereToEdit.Tests.Reliability.HostileSupport;

namespace WhereToEdit.Tests.Reliability;

/// <summary>Issue 14, finding 1 and 8: no command writes over one of its inputs; logs and temps are safe.</summary>
public sealed class InputsAreSacredTests
{
    [Fact]
    public void Meta_train_refuses_out_log_or_checkpoint_dir_on_an_input()
    {
        using var dir = new TempDir();
        string model = Model(dir.File("m.safetensors"));
        Directory.CreateDirectory(dir.File("data"));
        Png(dir.File("data/x.png"));
        var before = Snapshot(dir.Path);
        AssertRefused(Run("meta-train", model, "--data", dir.File("data"), "--out", model), "--out");
        AssertRefused(Run("meta-train", model, "--data", dir.File("data"), "--out", dir.File("h.safetensors"), "--log", model), "--log");
        AssertRefused(Run("meta-train", model, "--data", dir.File("data"), "--out", dir.File("data/x.png")), "is the input --data");
        // A checkpoint folder that holds a file named like a checkpoint we would write.
        File.Copy(model, dir.File("data/meta-000001.safetensors"));
        before = Snapshot(dir.Path);
        AssertRefused(Run("meta-train", model, "--data", dir.File("data"), "--out", dir.File("h.safetensors"), "--checkpoint-dir", dir.File("data")), "--checkpoint-dir");
        Assert.Equal(before, Snapshot(dir.Path));
    }

    [Fact]
    public void A_symlink_or_dotted_path_to_an_input_is_the_same_file()
    {
        using var dir = new TempDir();
        string model = Model(dir.File("m.safetensors"));
        Directory.CreateDirectory(dir.File("sub"));
        File.CreateSymbolicLink(dir.File("link.safetensors"), model);
        Directory.CreateSymbolicLink(dir.File("dirlink"), dir.Path);
        var before = Snapshot(dir.Path);
        foreach (string output in new[] { dir.File("link.safetensors"), dir.File("sub/../m.safetensors"), dir.File("dirlink/m.safetensors") })
        {
            var r = Run("patch", "apply", model, dir.File("nope.safetensors"), "--out", output);
            AssertRefused(r, "refusing to overwrite an input");
        }
        Assert.Equal(before, Snapshot(dir.Path));
    }

    [Fact]
    public void Edit_refuses_an_out_that_is_the_hypernet_an_image_or_the_base()
    {
        using var dir = new TempDir();
        string model = Model(dir.File("m.safetensors"));
        string baseModel = Model(dir.File("base.safetensors"), seed: 4);
        string image = Png(dir.File("x.png"));
        File.WriteAllBytes(dir.File("h.safetensors"), [1, 2, 3]);
        var before = Snapshot(dir.Path);
        AssertRefused(Run("edit", model, "--hypernet", dir.File("h.safetensors"), "--image", image, "--label", "1", "--out", dir.File("h.safetensors")), "--hypernet");
        AssertRefused(Run("edit", model, "--hypernet", dir.File("h.safetensors"), "--image", image, "--label", "1", "--out", image), "--image");
        AssertRefused(Run("edit", model, "--hypernet", dir.File("h.safetensors"), "--image", image, "--label", "1", "--base", baseModel, "--out", baseModel), "--base");
        AssertRefused(Run("edit", model, "--method", "ft-l2", "--image", image, "--label", "1", "--out", model), "MODEL");
        Assert.Equal(before, Snapshot(dir.Path));
    }

    [Fact]
    public void Patch_and_pretrain_refuse_outputs_on_inputs()
    {
        using var dir = new TempDir();
        string model = Model(dir.File("m.safetensors"));
        File.WriteAllBytes(dir.File("p.safetensors"), [1, 2, 3]);
        File.WriteAllBytes(dir.File("ck.safetensors"), [1, 2, 3]);
        var before = Snapshot(dir.Path);
        AssertRefused(Run("patch", "apply", model, dir.File("p.safetensors"), "--out", dir.File("p.safetensors")), "PATCH");
        AssertRefused(Run("patch", "revert", model, dir.File("p.safetensors"), "--out", model), "MODEL");
        AssertRefused(Run("pretrain", "--out", dir.File("ck.safetensors"), "--resume", dir.File("ck.safetensors"), "--epochs", "1"), "--resume");
        AssertRefused(Run("pretrain", "--out", dir.File("new.safetensors"), "--resume", dir.File("ck.safetensors"), "--log", dir.File("ck.safetensors")), "--log");
        AssertRefused(Run("pretrain", "--out", dir.File("same.safetensors"), "--log", dir.File("same.safetensors")), "each output needs its own file");
        Assert.Equal(before, Snapshot(dir.Path));
    }

    [Fact]
    public void Eval_and_benchmark_build_refuse_an_out_folder_holding_their_inputs()
    {
        using var dir = new TempDir();
        string model = Model(dir.File("m.safetensors"));
        // The failures folder sits where eval would write its plots.
        Directory.CreateDirectory(dir.File("res/plots/1_b"));
        Directory.CreateDirectory(dir.File("res/locality"));
        Png(dir.File("res/plots/1_b/f.png"));
        Png(dir.File("res/locality/l.png"));
        var before = Snapshot(dir.Path);
        AssertRefused(Run("eval", "--model", model, "--failures", dir.File("res/plots"), "--locality", dir.File("res/locality"),
            "--methods", "ft-l2", "--out", dir.File("m.safetensors")), "is a file");
        AssertRefused(Run("eval", "--model", model, "--failures", dir.File("res/plots"), "--locality", dir.File("res/locality"),
            "--methods", "ft-l2", "--out", dir.File("res")), "holds the input --benchmark");
        AssertRefused(Run("benchmark", "build", "--model", model, "--out", dir.Path), "holds the input --model");
        Assert.Equal(before, Snapshot(dir.Path));
    }

    [Fact]
    public void Csv_log_refuses_a_foreign_file_and_truncates_to_the_resumed_step()
    {
        using var dir = new TempDir();
        string foreign = dir.File("notes.csv");
        File.WriteAllText(foreign, "precious data\n");
        Assert.Throws<UnsafePathException>(() => CsvLog.Open(foreign, "iteration,loss", "--log", null));
        Assert.Equal("precious data\n", File.ReadAllText(foreign));

        string log = dir.File("log.csv");
        using (var l = CsvLog.Open(log, "iteration,loss", "--log", null))
            for (int i = 1; i <= 5; i++) l.WriteRow($"{i},0.{i}");
        using (var l = CsvLog.Open(log, "iteration,loss", "--log", resumedStep: 3))
            l.WriteRow("4,0.44");
        Assert.Equal(["iteration,loss", "1,0.1", "2,0.2", "3,0.3", "4,0.44"], File.ReadAllLines(log));
        using (CsvLog.Open(log, "iteration,loss", "--log", null)) { }
        Assert.Equal(["iteration,loss"], File.ReadAllLines(log));
    }

    [Fact]
    public void Meta_train_resume_truncates_the_log_to_the_resumed_iteration_and_may_read_from_its_checkpoint_folder()
    {
        using var dir = new TempDir();
        string model = Model(dir.File("m.safetensors"));
        Directory.CreateDirectory(dir.File("data"));
        for (int i = 0; i < 4; i++) Png(dir.File($"data/x{i}.png"), seed: i);
        string[] common = ["--data", dir.File("data"), "--iterations", "2", "--batch", "1", "--outer-steps", "1", "--inner-steps", "1", "--stage-b-steps", "1",
            "--checkpoint-dir", dir.File("ck"), "--checkpoint-every", "1", "--log", dir.File("log.csv"), "--no-progress", "--threads", "1"];
        var r = Run(["meta-train", model, .. common, "--out", dir.File("h.safetensors")]);
        Assert.True(r.Code == 0, r.Err);
        Assert.Equal(3, File.ReadAllLines(dir.File("log.csv")).Length);   // header + iterations 1, 2
        // Resume from iteration 1 (a file inside --checkpoint-dir): iteration 2 is logged once, not twice.
        r = Run(["meta-train", model, .. common, "--resume", dir.File("ck/meta-000001.safetensors"), "--out", dir.File("h2.safetensors")]);
        Assert.True(r.Code == 0, r.Err);
        var lines = File.ReadAllLines(dir.File("log.csv"));
        Assert.Equal(3, lines.Length);
        Assert.Equal(["1", "2"], lines.Skip(1).Select(l => l.Split(',')[0]));
        Assert.Equal(Hash(dir.File("h.safetensors")), Hash(dir.File("h2.safetensors")));   // resume stays bit-exact
    }

    [Fact]
    public void Meta_train_refuses_to_truncate_a_foreign_log_file()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("other.txt"), "not a log\n");
        var r = Run("meta-train", "test_tiny", "--bench", "--iterations", "0", "--no-progress", "--log", dir.File("other.txt"));
        AssertRefused(r, "is not a log of this command");
        Assert.Equal("not a log\n", File.ReadAllText(dir.File("other.txt")));
    }

    [Fact]
    public void Atomic_write_leaves_no_temp_on_failure_and_cleans_stale_temps_of_dead_writers()
    {
        using var dir = new TempDir();
        string target = dir.File("out.bin");
        File.WriteAllText(target, "old");
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(target, s => { s.Write(new byte[100]); throw new InvalidOperationException("boom"); }));
        Assert.Equal("old", File.ReadAllText(target));
        Assert.Single(Directory.GetFiles(dir.Path));
        // A temp of a process that no longer runs (pid far above pid_max) is removed; a live one of ours stays.
        string stale = dir.File(".out.bin.wte-2147483646-0123456789abcdef0123456789abcdef.tmp");
        File.WriteAllText(stale, "leftover");
        using var live = new AtomicWrite(target);
        Assert.False(File.Exists(stale));
        AtomicFile.WriteAllText(target, "new");
        Assert.True(File.Exists(live.TempPath));
        live.Dispose();
        Assert.False(File.Exists(live.TempPath));
        Assert.Equal("new", File.ReadAllText(target));
    }

    [Fact]
    public void A_failed_run_removes_the_output_folder_it_created_but_keeps_an_existing_one()
    {
        using var dir = new TempDir();
        using (var f = new OutputFolder(dir.File("fresh/out")))
            File.WriteAllText(Path.Combine(f.FullPath, "edits.jsonl"), "partial");
        Assert.False(Directory.Exists(dir.File("fresh/out")));
        Directory.CreateDirectory(dir.File("kept"));
        File.WriteAllText(dir.File("kept/a"), "a");
        using (new OutputFolder(dir.File("kept"))) { }
        Assert.True(File.Exists(dir.File("kept/a")));
        using (var f = new OutputFolder(dir.File("done"))) f.Commit();
        Assert.True(Directory.Exists(dir.File("done")));
    }
}

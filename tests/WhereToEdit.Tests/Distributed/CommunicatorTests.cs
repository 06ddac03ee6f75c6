using WhereToEdit.Cli;
using WhereToEdit.Engine.Distributed;
using WhereToEdit.Engine.Evaluation;
using Xunit;

namespace WhereToEdit.Tests.Distributed;

/// <summary>The single-process communicator, world detection, batch slicing and the eval work assignment.</summary>
public sealed class CommunicatorTests
{
    private static Func<string, string?> Env(params (string Name, string Value)[] vars) =>
        name => vars.FirstOrDefault(v => v.Name == name).Value;

    [Fact]
    public void Single_process_collectives_copy_and_reduce_to_themselves()
    {
        var comm = SingleProcess.Instance;
        Assert.Equal((0, 1, 1), (comm.Rank, comm.Size, comm.LocalSize));
        Assert.True(comm.IsRoot());
        float[] local = [1.5f, -2f, 3.25f], all = new float[3];
        comm.AllGather<float>(local, all, [3]);
        Assert.Equal(local, all);
        Assert.Throws<ArgumentException>(() => comm.AllGather<float>(local, all, [2]));
        double[] sums = [0.1, 0.2];
        comm.SumInRankOrder(sums, new double[2]);
        Assert.Equal([0.1, 0.2], sums);
        long[] values = [5, -7];
        comm.Allreduce(values, ReduceOp.Max);
        Assert.Equal([5L, -7L], values);
        Assert.True(comm.AllEqual(42));
        var blocks = comm.GatherBlocks([1, 2, 3], root: 0);
        Assert.Equal([1, 2, 3], Assert.Single(blocks));
        Assert.Throws<ArgumentOutOfRangeException>(() => comm.Broadcast(new byte[1].AsSpan(), root: 1));
    }

    [Fact]
    public void The_world_comes_from_the_launcher_environment_and_needs_no_libmpi_alone()
    {
        Assert.Null(Communicators.LaunchedSize(Env()));
        Assert.Equal(4, Communicators.LaunchedSize(Env(("OMPI_COMM_WORLD_SIZE", "4"))));
        Assert.Equal(3, Communicators.LaunchedSize(Env(("PMI_SIZE", "3"))));
        Assert.Contains("OMPI_COMM_WORLD_SIZE='x'", Assert.Throws<ArgumentException>(() => Communicators.LaunchedSize(Env(("OMPI_COMM_WORLD_SIZE", "x")))).Message);
        Assert.Same(SingleProcess.Instance, Communicators.FromEnvironment(Env()));
        Assert.Same(SingleProcess.Instance, Communicators.FromEnvironment(Env(("OMPI_COMM_WORLD_SIZE", "1"))));
        Assert.Equal(3, SingleProcess.Instance.ThreadsPerRank(3));
        Assert.Equal(0, SingleProcess.Instance.ThreadsPerRank(0));   // 0 = the backend's own default
    }

    [Fact]
    public void Commands_run_alone_never_load_libmpi()
    {
        // `wte info` and a bench meta-training run in this process; neither may map Open MPI.
        var o = new StringWriter(); var e = new StringWriter();
        Assert.Equal(0, WteCommands.Run(["info", Path.Combine(AppContext.BaseDirectory, "fixtures", "predict_model")], o, e));
        Assert.Equal(0, WteCommands.Run(["meta-train", "test_tiny", "--bench", "--batch", "2", "--outer-steps", "1", "--inner-steps", "0", "--hypernet-depth", "1", "--threads", "1", "--no-progress"], o, e = new StringWriter()));
        Assert.DoesNotContain("MPI ranks", e.ToString());
        Assert.DoesNotContain("\"ranks\":2", o.ToString());
        Assert.DoesNotContain("libmpi", File.ReadAllText("/proc/self/maps"));
    }

    [Theory]
    [InlineData(8, 2)]
    [InlineData(7, 3)]
    [InlineData(3, 3)]
    [InlineData(5, 1)]
    public void Batch_slices_cover_the_batch_once_and_differ_by_at_most_one(int total, int size)
    {
        int next = 0;
        var counts = new List<int>();
        for (int rank = 0; rank < size; rank++)
        {
            var (start, count) = CommunicatorExtensions.Slice(total, size, rank);
            Assert.Equal(next, start);
            next += count;
            counts.Add(count);
        }
        Assert.Equal(total, next);
        Assert.True(counts.Max() - counts.Min() <= 1);
    }

    [Fact]
    public void Eval_work_is_dealt_longest_first_to_the_least_loaded_rank()
    {
        double[] costs = [5, 1, 4, 4, 2, 2, 1, 1];
        var owner = EditEvaluator.AssignByCost(costs, 2);
        // 5→0, 4→1, 4→1, 2→0, 2→0 (9 vs 8), then the 1s: →1, →0 (tie: lowest rank), →1: 10 and 10.
        var loads = new double[2];
        for (int i = 0; i < costs.Length; i++) loads[owner[i]] += costs[i];
        Assert.Equal(10, loads[0]);
        Assert.Equal(10, loads[1]);
        Assert.Equal(0, owner[0]);
        Assert.Equal(owner, EditEvaluator.AssignByCost(costs, 2));   // the same on every rank
        Assert.All(EditEvaluator.AssignByCost(costs, 1), r => Assert.Equal(0, r));
        // More ranks than items: every item on its own rank.
        Assert.Equal(costs.Length, EditEvaluator.AssignByCost(costs, 16).Distinct().Count());
    }
}

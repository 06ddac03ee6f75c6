using System.Runtime.Intrinsics;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Cpu;

// LayerNorm forward/backward and row softmax.
public sealed unsafe partial class CpuBackend
{
    private struct LayerNormArgs
    {
        public float* X, Gamma, Beta, Y, Mean, Rstd, Dy, Dx, Dgamma, Dbeta;
        public int Rows, Cols;
        public float Eps;
        public bool AccumulateDx;
    }

    public void LayerNormForward(Tensor x, Tensor gamma, Tensor beta, Tensor y, Tensor mean, Tensor rstd, int rows, int cols, float eps)
    {
        long n = (long)rows * cols;
        Need(x, n, "LayerNorm input"); Need(y, n, "LayerNorm output");
        Need(gamma, cols, "LayerNorm weight"); Need(beta, cols, "LayerNorm bias");
        Need(mean, rows, "LayerNorm mean"); Need(rstd, rows, "LayerNorm rstd");
        fixed (float* px = Cpu(x, "x").Data, pg = Cpu(gamma, "gamma").Data, pb = Cpu(beta, "beta").Data,
               py = Cpu(y, "y").Data, pm = Cpu(mean, "mean").Data, pr = Cpu(rstd, "rstd").Data)
        {
            var args = new LayerNormArgs { X = px, Gamma = pg, Beta = pb, Y = py, Mean = pm, Rstd = pr, Rows = rows, Cols = cols, Eps = eps };
            _pool.For(rows, Math.Max(1, 4096 / Math.Max(cols, 1)), &args, &LayerNormForwardChunk);
        }
    }

    private static void LayerNormForwardChunk(void* p, int start, int end)
    {
        ref var a = ref *(LayerNormArgs*)p;
        int cols = a.Cols;
        var gamma = new ReadOnlySpan<float>(a.Gamma, cols);
        var beta = new ReadOnlySpan<float>(a.Beta, cols);
        for (int r = start; r < end; r++)
        {
            var x = new ReadOnlySpan<float>(a.X + (long)r * cols, cols);
            var y = new Span<float>(a.Y + (long)r * cols, cols);
            // Two passes (mean, then centred squares) in fp32, like PyTorch's CPU kernel, for accuracy.
            float mu = TensorPrimitives.Sum(x) / cols;
            TensorPrimitives.Subtract(x, mu, y);
            float variance = TensorPrimitives.SumOfSquares(y) / cols;
            float rstd = 1f / MathF.Sqrt(variance + a.Eps);
            a.Mean[r] = mu;
            a.Rstd[r] = rstd;
            TensorPrimitives.Multiply(y, rstd, y);
            TensorPrimitives.FusedMultiplyAdd(y, gamma, beta, y);
        }
    }

    public void LayerNormBackward(Tensor dy, Tensor x, Tensor gamma, Tensor mean, Tensor rstd,
                                  Tensor dx, Tensor? dgamma, Tensor? dbeta, int rows, int cols, bool accumulateDx)
    {
        long n = (long)rows * cols;
        Need(dy, n, "LayerNorm output gradient"); Need(x, n, "LayerNorm input"); Need(dx, n, "LayerNorm input gradient");
        Need(gamma, cols, "LayerNorm weight"); Need(mean, rows, "LayerNorm mean"); Need(rstd, rows, "LayerNorm rstd");
        if (dgamma is not null) Need(dgamma, cols, "LayerNorm weight gradient");
        if (dbeta is not null) Need(dbeta, cols, "LayerNorm bias gradient");
        fixed (float* pdy = Cpu(dy, "dy").Data, px = Cpu(x, "x").Data, pg = Cpu(gamma, "gamma").Data,
               pm = Cpu(mean, "mean").Data, pr = Cpu(rstd, "rstd").Data, pdx = Cpu(dx, "dx").Data,
               pdg = dgamma is null ? null : Cpu(dgamma, "dgamma").Data, pdb = dbeta is null ? null : Cpu(dbeta, "dbeta").Data)
        {
            var args = new LayerNormArgs
            {
                Dy = pdy, X = px, Gamma = pg, Mean = pm, Rstd = pr, Dx = pdx,
                Dgamma = dgamma is null ? null : pdg, Dbeta = dbeta is null ? null : pdb,
                Rows = rows, Cols = cols, AccumulateDx = accumulateDx,
            };
            _pool.For(rows, Math.Max(1, 2048 / Math.Max(cols, 1)), &args, &LayerNormBackwardRows);
            if (args.Dgamma != null || args.Dbeta != null)
                _pool.For(cols, 64, &args, &LayerNormParamGradColumns);
        }
    }

    // dx = rstd·(dxhat − mean(dxhat) − xhat·mean(dxhat·xhat)), dxhat = dy·gamma.
    private static void LayerNormBackwardRows(void* p, int start, int end)
    {
        ref var a = ref *(LayerNormArgs*)p;
        int cols = a.Cols;
        var gamma = new ReadOnlySpan<float>(a.Gamma, cols);
        Span<float> scratch = cols <= 4096 ? stackalloc float[2 * cols] : new float[2 * cols];
        var xhat = scratch[..cols];
        var dxhat = scratch[cols..];
        for (int r = start; r < end; r++)
        {
            var x = new ReadOnlySpan<float>(a.X + (long)r * cols, cols);
            var dy = new ReadOnlySpan<float>(a.Dy + (long)r * cols, cols);
            var dx = new Span<float>(a.Dx + (long)r * cols, cols);
            float rstd = a.Rstd[r];
            TensorPrimitives.Subtract(x, a.Mean[r], xhat);
            TensorPrimitives.Multiply(xhat, rstd, xhat);
            TensorPrimitives.Multiply(dy, gamma, dxhat);
            float meanDxhat = TensorPrimitives.Sum(dxhat) / cols;
            float meanDxhatXhat = TensorPrimitives.Dot(dxhat, xhat) / cols;
            // dxhat ← (dxhat − meanDxhat − xhat·meanDxhatXhat)·rstd
            TensorPrimitives.Subtract(dxhat, meanDxhat, dxhat);
            TensorPrimitives.MultiplyAdd(xhat, -meanDxhatXhat, dxhat, dxhat);
            TensorPrimitives.Multiply(dxhat, rstd, dxhat);
            if (a.AccumulateDx) TensorPrimitives.Add(dx, dxhat, dx);
            else dxhat.CopyTo(dx);
        }
    }

    // Column-partitioned parameter gradients: deterministic row order for every column.
    private static void LayerNormParamGradColumns(void* p, int start, int end)
    {
        ref var a = ref *(LayerNormArgs*)p;
        int width = end - start;
        Span<float> xhat = width <= 4096 ? stackalloc float[width] : new float[width];
        for (int r = 0; r < a.Rows; r++)
        {
            var x = new ReadOnlySpan<float>(a.X + (long)r * a.Cols + start, width);
            var dy = new ReadOnlySpan<float>(a.Dy + (long)r * a.Cols + start, width);
            if (a.Dbeta != null)
            {
                var db = new Span<float>(a.Dbeta + start, width);
                TensorPrimitives.Add(db, dy, db);
            }
            if (a.Dgamma != null)
            {
                TensorPrimitives.Subtract(x, a.Mean[r], xhat);
                TensorPrimitives.Multiply(xhat, a.Rstd[r], xhat);
                var dg = new Span<float>(a.Dgamma + start, width);
                TensorPrimitives.MultiplyAdd(xhat, dy, dg, dg);
            }
        }
    }

    // ---- softmax ---------------------------------------------------------------------------------

    private struct SoftmaxArgs { public float* X, Y; public int Cols; public float InvT; }

    public void Softmax(Tensor x, Tensor y, int rows, int cols, float temperature = 1f)
    {
        if (!(temperature > 0) || float.IsInfinity(temperature))
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "softmax temperature must be positive and finite");
        Need(x, (long)rows * cols, "softmax input"); Need(y, (long)rows * cols, "softmax output");
        fixed (float* px = Cpu(x, "x").Data, py = Cpu(y, "y").Data)
        {
            var args = new SoftmaxArgs { X = px, Y = py, Cols = cols, InvT = 1f / temperature };
            _pool.For(rows, Math.Max(1, 4096 / Math.Max(cols, 1)), &args, &SoftmaxChunk);
        }
    }

    private static void SoftmaxChunk(void* p, int start, int end)
    {
        ref var a = ref *(SoftmaxArgs*)p;
        for (int r = start; r < end; r++)
            SoftmaxRow(new ReadOnlySpan<float>(a.X + (long)r * a.Cols, a.Cols), new Span<float>(a.Y + (long)r * a.Cols, a.Cols), a.InvT);
    }

    /// <summary>y = softmax(x·invT), max-subtracted. x and y may alias.</summary>
    internal static void SoftmaxRow(ReadOnlySpan<float> x, Span<float> y, float invT)
    {
        float max = TensorPrimitives.Max(x);
        if (!Vector512.IsHardwareAccelerated || x.Length < 16)
        {
            TensorPrimitives.Subtract(x, max, y);
            if (invT != 1f) TensorPrimitives.Multiply(y, invT, y);
            TensorPrimitives.Exp(y, y);
            TensorPrimitives.Multiply(y, 1f / TensorPrimitives.Sum(y), y);
            return;
        }
        // One pass for exp and the sum instead of four: attention runs this on n rows of n (197) scores per head,
        // where five short TensorPrimitives passes cost as much as the head's two products.
        int n = x.Length, i = 0;
        var vmax = Vector512.Create(max);
        var vt = Vector512.Create(invT);
        var acc = Vector512<float>.Zero;
        fixed (float* px = x, py = y)
        {
            for (; i + 16 <= n; i += 16)
            {
                var e = Vector512.Exp((Vector512.Load(px + i) - vmax) * vt);
                e.Store(py + i);
                acc += e;
            }
            float sum = Vector512.Sum(acc);
            for (; i < n; i++)
            {
                float e = MathF.Exp((px[i] - max) * invT);
                py[i] = e;
                sum += e;
            }
            var scale = Vector512.Create(1f / sum);
            for (i = 0; i + 16 <= n; i += 16) (Vector512.Load(py + i) * scale).Store(py + i);
            for (; i < n; i++) py[i] *= 1f / sum;
        }
    }
}

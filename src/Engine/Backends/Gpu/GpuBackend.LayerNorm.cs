using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// LayerNorm forward/backward and row softmax: one group per row (rows grid-strided), warp-shuffle + shared-memory
// group reductions; the LayerNorm parameter gradients as column reductions over the rows.
public sealed partial class GpuBackend
{
    internal struct LayerNormArgs
    {
        public int Rows, Cols, Accumulate, HasGamma, HasBeta;
        public float Eps;
    }

    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, LayerNormArgs> _layerNormForward = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, LayerNormArgs> _layerNormBackward = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, LayerNormArgs> _layerNormParamGrad = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, float> _softmax = null!;

    private void LoadLayerNormKernels()
    {
        _layerNormForward = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, LayerNormArgs>(LayerNormForwardKernel);
        _layerNormBackward = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, LayerNormArgs>(LayerNormBackwardKernel);
        _layerNormParamGrad = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, LayerNormArgs>(LayerNormParamGradKernel);
        _softmax = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, float>(SoftmaxKernel);
    }

    public void LayerNormForward(Tensor x, Tensor gamma, Tensor beta, Tensor y, Tensor mean, Tensor rstd, int rows, int cols, float eps)
    {
        long n = (long)rows * cols;
        Need(x, n, "LayerNorm input"); Need(y, n, "LayerNorm output");
        Need(gamma, cols, "LayerNorm weight"); Need(beta, cols, "LayerNorm bias");
        Need(mean, rows, "LayerNorm mean"); Need(rstd, rows, "LayerNorm rstd");
        var args = new LayerNormArgs { Rows = rows, Cols = cols, Eps = eps };
        var gx = Own(x, "x"); var gg = Own(gamma, "gamma"); var gb = Own(beta, "beta");
        var gy = Own(y, "y"); var gm = Own(mean, "mean"); var gr = Own(rstd, "rstd");
        if (rows > 0 && cols > 0) _layerNormForward(Stream, PerRow(rows), gx.View, gg.View, gb.View, gy.View, gm.View, gr.View, args);
    }

    public void LayerNormBackward(Tensor dy, Tensor x, Tensor gamma, Tensor mean, Tensor rstd,
                                  Tensor dx, Tensor? dgamma, Tensor? dbeta, int rows, int cols, bool accumulateDx)
    {
        long n = (long)rows * cols;
        Need(dy, n, "LayerNorm output gradient"); Need(x, n, "LayerNorm input"); Need(dx, n, "LayerNorm input gradient");
        Need(gamma, cols, "LayerNorm weight"); Need(mean, rows, "LayerNorm mean"); Need(rstd, rows, "LayerNorm rstd");
        if (dgamma is not null) Need(dgamma, cols, "LayerNorm weight gradient");
        if (dbeta is not null) Need(dbeta, cols, "LayerNorm bias gradient");
        var gdy = Own(dy, "dy"); var gx = Own(x, "x"); var gg = Own(gamma, "gamma");
        var gm = Own(mean, "mean"); var gr = Own(rstd, "rstd"); var gdx = Own(dx, "dx");
        var gdg = dgamma is null ? null : Own(dgamma, "dgamma");
        var gdb = dbeta is null ? null : Own(dbeta, "dbeta");
        if (rows == 0 || cols == 0) return;
        var args = new LayerNormArgs
        {
            Rows = rows, Cols = cols, Accumulate = accumulateDx ? 1 : 0,
            HasGamma = gdg is null ? 0 : 1, HasBeta = gdb is null ? 0 : 1,
        };
        _layerNormBackward(Stream, PerRow(rows), gdy.View, gx.View, gg.View, gm.View, gr.View, gdx.View, args);
        if (gdg is not null || gdb is not null)
            // An absent gradient gets a stand-in view the kernel never touches.
            _layerNormParamGrad(Stream, ColumnTiles(cols), gdy.View, gx.View, gm.View, gr.View,
                (gdg ?? gdb!).View, (gdb ?? gdg!).View, args);
    }

    public void Softmax(Tensor x, Tensor y, int rows, int cols, float temperature = 1f)
    {
        if (!(temperature > 0) || float.IsInfinity(temperature))
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "softmax temperature must be positive and finite");
        Need(x, (long)rows * cols, "softmax input"); Need(y, (long)rows * cols, "softmax output");
        var gx = Own(x, "x"); var gy = Own(y, "y");
        if (rows > 0 && cols > 0) _softmax(Stream, PerRow(rows), gx.View, gy.View, rows, cols, 1f / temperature);
    }

    // ---- kernels ----------------------------------------------------------------------------------

    /// <summary>Two-pass (mean, then centred squares) statistics per row, like the CPU backend; x and y may alias.</summary>
    [GpuKernel]
    private static void LayerNormForwardKernel(ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> beta,
        ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd, LayerNormArgs p)
    {
        var scratch = SharedMemory.Allocate<float>(2 * MaxWarps);
        int step = 0;   // reductions so far: alternates the scratch slot
        for (int r = Grid.IdxX; r < p.Rows; r += Grid.DimX)
        {
            long row = (long)r * p.Cols;
            float sum = 0f;
            for (int c = Group.IdxX; c < p.Cols; c += Group.DimX) sum += x[row + c];
            float mu = GroupSum(sum, scratch, step++ & 1) / p.Cols;
            float squares = 0f;
            for (int c = Group.IdxX; c < p.Cols; c += Group.DimX)
            {
                float d = x[row + c] - mu;
                squares += d * d;
            }
            float variance = GroupSum(squares, scratch, step++ & 1) / p.Cols;
            float rs = 1f / XMath.Sqrt(variance + p.Eps);
            if (Group.IdxX == 0)
            {
                mean[r] = mu;
                rstd[r] = rs;
            }
            for (int c = Group.IdxX; c < p.Cols; c += Group.DimX)
                y[row + c] = (x[row + c] - mu) * rs * gamma[c] + beta[c];
        }
    }

    /// <summary>dx (+)= rstd·(dxhat − mean(dxhat) − xhat·mean(dxhat·xhat)), dxhat = dy·gamma, per row.</summary>
    [GpuKernel]
    private static void LayerNormBackwardKernel(ArrayView<float> dy, ArrayView<float> x, ArrayView<float> gamma,
        ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> dx, LayerNormArgs p)
    {
        var scratch = SharedMemory.Allocate<float>(2 * MaxWarps);
        int step = 0;   // reductions so far: alternates the scratch slot
        for (int r = Grid.IdxX; r < p.Rows; r += Grid.DimX)
        {
            long row = (long)r * p.Cols;
            float mu = mean[r], rs = rstd[r];
            float sumDxhat = 0f, sumDxhatXhat = 0f;
            for (int c = Group.IdxX; c < p.Cols; c += Group.DimX)
            {
                float xhat = (x[row + c] - mu) * rs;
                float dxhat = dy[row + c] * gamma[c];
                sumDxhat += dxhat;
                sumDxhatXhat += dxhat * xhat;
            }
            float meanDxhat = GroupSum(sumDxhat, scratch, step++ & 1) / p.Cols;
            float meanDxhatXhat = GroupSum(sumDxhatXhat, scratch, step++ & 1) / p.Cols;
            for (int c = Group.IdxX; c < p.Cols; c += Group.DimX)
            {
                float xhat = (x[row + c] - mu) * rs;
                float dxhat = dy[row + c] * gamma[c];
                float v = (dxhat - meanDxhat - xhat * meanDxhatXhat) * rs;
                if (p.Accumulate != 0) dx[row + c] += v;
                else dx[row + c] = v;
            }
        }
    }

    /// <summary>dgamma[c] += Σ_r dy·xhat, dbeta[c] += Σ_r dy: column tiles × row lanes as in the column-sum kernel.</summary>
    [GpuKernel]
    private static void LayerNormParamGradKernel(ArrayView<float> dy, ArrayView<float> x, ArrayView<float> mean,
        ArrayView<float> rstd, ArrayView<float> dgamma, ArrayView<float> dbeta, LayerNormArgs p)
    {
        var partialGamma = SharedMemory.Allocate<float>(BlockThreads);
        var partialBeta = SharedMemory.Allocate<float>(BlockThreads);
        int tx = Group.IdxX, lane = Group.IdxY;
        for (int c0 = Grid.IdxX * ColumnTile; c0 < p.Cols; c0 += Grid.DimX * ColumnTile)
        {
            int c = c0 + tx;
            float g = 0f, b = 0f;
            if (c < p.Cols)
                for (int r = lane; r < p.Rows; r += RowLanes)
                {
                    long at = (long)r * p.Cols + c;
                    float d = dy[at];
                    g += d * ((x[at] - mean[r]) * rstd[r]);
                    b += d;
                }
            partialGamma[lane * ColumnTile + tx] = g;
            partialBeta[lane * ColumnTile + tx] = b;
            Group.Barrier();
            if (lane == 0 && c < p.Cols)
            {
                float tg = partialGamma[tx], tb = partialBeta[tx];
                for (int l = 1; l < RowLanes; l++)
                {
                    tg += partialGamma[l * ColumnTile + tx];
                    tb += partialBeta[l * ColumnTile + tx];
                }
                if (p.HasGamma != 0) dgamma[c] += tg;
                if (p.HasBeta != 0) dbeta[c] += tb;
            }
            Group.Barrier();
        }
    }

    /// <summary>y = softmax(x·invT) per row, max-subtracted; x and y may alias.</summary>
    [GpuKernel]
    private static void SoftmaxKernel(ArrayView<float> x, ArrayView<float> y, int rows, int cols, float invT)
    {
        var scratch = SharedMemory.Allocate<float>(2 * MaxWarps);
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
            SoftmaxRow(x, y, (long)r * cols, cols, invT, scratch);
    }

    /// <summary>One row's softmax by the whole group: two reductions, slots 0 then 1.</summary>
    private static void SoftmaxRow(ArrayView<float> x, ArrayView<float> y, long row, int cols, float invT, ArrayView<float> scratch)
    {
        float max = float.NegativeInfinity;
        for (int c = Group.IdxX; c < cols; c += Group.DimX) max = XMath.Max(max, x[row + c]);
        max = GroupMax(max, scratch, 0);
        float sum = 0f;
        for (int c = Group.IdxX; c < cols; c += Group.DimX)
        {
            float e = XMath.Exp((x[row + c] - max) * invT);
            y[row + c] = e;
            sum += e;
        }
        float scale = 1f / GroupSum(sum, scratch, 1);
        for (int c = Group.IdxX; c < cols; c += Group.DimX) y[row + c] *= scale;
    }
}

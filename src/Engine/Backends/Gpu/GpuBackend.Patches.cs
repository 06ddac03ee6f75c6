using ILGPU;
using ILGPU.Runtime;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Gpu;

// Patch embedding as im2col (+ GEMM in the layer) and its col2im backward, one thread per column element;
// [CLS] + position-embedding token assembly and its backward (the batch sums as column reductions).
public sealed partial class GpuBackend
{
    internal struct PatchArgs
    {
        public int Batch, Channels, Height, Width, Patch, GridH, GridW;
    }

    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, PatchArgs> _im2Col = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, PatchArgs> _col2Im = null!;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int> _assembleTokens = null!;

    private void LoadPatchKernels()
    {
        _im2Col = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, PatchArgs>(Im2ColKernel);
        _col2Im = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, PatchArgs>(Col2ImKernel);
        _assembleTokens = Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(AssembleTokensKernel);
    }

    public void Im2Col(Tensor image, Tensor columns, int batch, int channels, int height, int width, int patch)
    {
        var (args, n) = PatchShape(image, columns, batch, channels, height, width, patch, backward: false);
        var gi = Own(image, "image"); var gc = Own(columns, "columns");
        if (n > 0) _im2Col(Stream, Linear(n), gi.View, gc.View, args);
    }

    public void Col2Im(Tensor dcolumns, Tensor dimage, int batch, int channels, int height, int width, int patch)
    {
        var (args, n) = PatchShape(dimage, dcolumns, batch, channels, height, width, patch, backward: true);
        var gc = Own(dcolumns, "columns"); var gi = Own(dimage, "image");
        if (n > 0) _col2Im(Stream, Linear(n), gc.View, gi.View, args);
    }

    private static (PatchArgs Args, long Count) PatchShape(Tensor image, Tensor columns, int batch, int channels, int height, int width, int patch, bool backward)
    {
        if (patch <= 0 || height % patch != 0 || width % patch != 0)
            throw new ArgumentException($"image {height}×{width} is not divisible into {patch}×{patch} patches");
        int gridH = height / patch, gridW = width / patch;
        long n = (long)batch * channels * height * width;
        Need(image, n, backward ? "image gradient" : "image");
        Need(columns, (long)batch * gridH * gridW * channels * patch * patch, backward ? "patch-column gradient" : "patch columns");
        return (new PatchArgs { Batch = batch, Channels = channels, Height = height, Width = width, Patch = patch, GridH = gridH, GridW = gridW }, n);
    }

    public void AssembleTokens(Tensor patchTokens, Tensor cls, Tensor pos, Tensor x, int batch, int patches, int dim)
    {
        int tokens = patches + 1;
        Need(patchTokens, (long)batch * patches * dim, "patch tokens"); Need(cls, dim, "cls_token");
        Need(pos, (long)tokens * dim, "pos_embed"); Need(x, (long)batch * tokens * dim, "token sequence");
        var gp = Own(patchTokens, "patch tokens"); var gc = Own(cls, "cls"); var gpos = Own(pos, "pos"); var gx = Own(x, "x");
        long n = (long)batch * tokens * dim;
        if (n > 0) _assembleTokens(Stream, Linear(n), gp.View, gc.View, gpos.View, gx.View, batch, patches, dim);
    }

    public void AssembleTokensBackward(Tensor dx, Tensor dpatchTokens, Tensor? dcls, Tensor? dpos, int batch, int patches, int dim)
    {
        int tokens = patches + 1;
        Need(dx, (long)batch * tokens * dim, "token-sequence gradient"); Need(dpatchTokens, (long)batch * patches * dim, "patch-token gradient");
        if (dcls is not null) Need(dcls, dim, "cls_token gradient");
        if (dpos is not null) Need(dpos, (long)tokens * dim, "pos_embed gradient");
        var gdx = Own(dx, "dx"); var gdp = Own(dpatchTokens, "dpatch");
        var gdc = dcls is null ? null : Own(dcls, "dcls");
        var gdpos = dpos is null ? null : Own(dpos, "dpos");
        long rowLength = (long)tokens * dim;
        // dpatchTokens[b] = dx[b, 1:]: batch rows of patches·dim elements.
        CopyRows(gdx, dim, checked((int)rowLength), gdp, 0, checked(patches * dim), batch, patches * dim, accumulate: false);
        if (gdc is not null) ColumnSum(gdx, 0, rowLength, batch, dim, gdc, 0);
        if (gdpos is not null) ColumnSum(gdx, 0, rowLength, batch, checked((int)rowLength), gdpos, 0);
    }

    // ---- kernels ----------------------------------------------------------------------------------

    /// <summary>Maps column element i ([patch row, (channel, ky, kx)]) to its image element.</summary>
    private static long PatchImageIndex(long i, PatchArgs p)
    {
        int ps = p.Patch;
        long rowLength = (long)p.Channels * ps * ps;
        long patchIndex = i / rowLength;
        int within = (int)(i - patchIndex * rowLength);
        int kx = within % ps, ky = within / ps % ps, c = within / (ps * ps);
        long perImage = (long)p.GridH * p.GridW;
        long b = patchIndex / perImage;
        int cell = (int)(patchIndex - b * perImage);
        int gy = cell / p.GridW, gx = cell % p.GridW;
        return ((b * p.Channels + c) * p.Height + gy * ps + ky) * p.Width + gx * ps + kx;
    }

    [GpuKernel]
    private static void Im2ColKernel(ArrayView<float> image, ArrayView<float> columns, PatchArgs p)
    {
        long n = (long)p.Batch * p.Channels * p.Height * p.Width;
        for (long i = GlobalIndex(); i < n; i += GridStride()) columns[i] = image[PatchImageIndex(i, p)];
    }

    /// <summary>Patches tile the image exactly, so every image element is written once (dimage overwritten).</summary>
    [GpuKernel]
    private static void Col2ImKernel(ArrayView<float> columns, ArrayView<float> image, PatchArgs p)
    {
        long n = (long)p.Batch * p.Channels * p.Height * p.Width;
        for (long i = GlobalIndex(); i < n; i += GridStride()) image[PatchImageIndex(i, p)] = columns[i];
    }

    /// <summary>x[b, 0] = cls + pos[0]; x[b, 1 + p] = patchTokens[b, p] + pos[1 + p].</summary>
    [GpuKernel]
    private static void AssembleTokensKernel(ArrayView<float> patchTokens, ArrayView<float> cls, ArrayView<float> pos,
        ArrayView<float> x, int batch, int patches, int dim)
    {
        long perImage = (long)(patches + 1) * dim;
        long n = batch * perImage;
        for (long i = GlobalIndex(); i < n; i += GridStride())
        {
            long b = i / perImage, within = i - b * perImage;
            x[i] = within < dim
                ? cls[within] + pos[within]
                : patchTokens[b * patches * dim + within - dim] + pos[within];
        }
    }
}

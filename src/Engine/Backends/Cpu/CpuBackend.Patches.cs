using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Cpu;

// Patch embedding as im2col (+ GEMM in the layer) and its col2im backward; [CLS] + position-embedding
// token assembly and its backward.
public sealed unsafe partial class CpuBackend
{
    private struct PatchArgs { public float* Image, Columns; public int Channels, Height, Width, Patch, GridH, GridW; public bool Backward; }

    public void Im2Col(Tensor image, Tensor columns, int batch, int channels, int height, int width, int patch)
        => PatchCopy(image, columns, batch, channels, height, width, patch, backward: false);

    public void Col2Im(Tensor dcolumns, Tensor dimage, int batch, int channels, int height, int width, int patch)
        => PatchCopy(dimage, dcolumns, batch, channels, height, width, patch, backward: true);

    private void PatchCopy(Tensor image, Tensor columns, int batch, int channels, int height, int width, int patch, bool backward)
    {
        if (patch <= 0 || height % patch != 0 || width % patch != 0)
            throw new ArgumentException($"image {height}×{width} is not divisible into {patch}×{patch} patches");
        int gridH = height / patch, gridW = width / patch;
        Need(image, (long)batch * channels * height * width, backward ? "image gradient" : "image");
        Need(columns, (long)batch * gridH * gridW * channels * patch * patch, backward ? "patch-column gradient" : "patch columns");
        fixed (float* pi = Cpu(image, "image").Data, pc = Cpu(columns, "columns").Data)
        {
            var args = new PatchArgs { Image = pi, Columns = pc, Channels = channels, Height = height, Width = width, Patch = patch, GridH = gridH, GridW = gridW, Backward = backward };
            _pool.For(batch * gridH, 1, &args, &PatchRowChunk);
        }
    }

    // One work item = one row of patches of one image.
    private static void PatchRowChunk(void* p, int start, int end)
    {
        ref var a = ref *(PatchArgs*)p;
        int ps = a.Patch, rowLen = a.Channels * ps * ps;
        for (int item = start; item < end; item++)
        {
            int b = item / a.GridH, gy = item % a.GridH;
            for (int gx = 0; gx < a.GridW; gx++)
            {
                float* col = a.Columns + ((long)item * a.GridW + gx) * rowLen;
                for (int c = 0; c < a.Channels; c++)
                    for (int ky = 0; ky < ps; ky++)
                    {
                        float* img = a.Image + (((long)b * a.Channels + c) * a.Height + gy * ps + ky) * a.Width + gx * ps;
                        float* dst = col + (c * ps + ky) * ps;
                        if (a.Backward) new ReadOnlySpan<float>(dst, ps).CopyTo(new Span<float>(img, ps));
                        else new ReadOnlySpan<float>(img, ps).CopyTo(new Span<float>(dst, ps));
                    }
            }
        }
    }

    public void AssembleTokens(Tensor patchTokens, Tensor cls, Tensor pos, Tensor x, int batch, int patches, int dim)
    {
        int tokens = patches + 1;
        Need(patchTokens, (long)batch * patches * dim, "patch tokens"); Need(cls, dim, "cls_token");
        Need(pos, (long)tokens * dim, "pos_embed"); Need(x, (long)batch * tokens * dim, "token sequence");
        float[] pt = Cpu(patchTokens, "patch tokens").Data, c = Cpu(cls, "cls").Data, ps = Cpu(pos, "pos").Data, xs = Cpu(x, "x").Data;
        for (int b = 0; b < batch; b++)
        {
            long xb = (long)b * tokens * dim;
            TensorPrimitives.Add(c.AsSpan(0, dim), ps.AsSpan(0, dim), xs.AsSpan((int)xb, dim));
            TensorPrimitives.Add(pt.AsSpan((int)((long)b * patches * dim), patches * dim), ps.AsSpan(dim, patches * dim),
                                 xs.AsSpan((int)(xb + dim), patches * dim));
        }
    }

    public void AssembleTokensBackward(Tensor dx, Tensor dpatchTokens, Tensor? dcls, Tensor? dpos, int batch, int patches, int dim)
    {
        int tokens = patches + 1;
        Need(dx, (long)batch * tokens * dim, "token-sequence gradient"); Need(dpatchTokens, (long)batch * patches * dim, "patch-token gradient");
        if (dcls is not null) Need(dcls, dim, "cls_token gradient");
        if (dpos is not null) Need(dpos, (long)tokens * dim, "pos_embed gradient");
        float[] d = Cpu(dx, "dx").Data, dp = Cpu(dpatchTokens, "dpatch").Data;
        for (int b = 0; b < batch; b++)
        {
            long xb = (long)b * tokens * dim;
            d.AsSpan((int)(xb + dim), patches * dim).CopyTo(dp.AsSpan((int)((long)b * patches * dim)));
            if (dcls is not null)
            {
                var g = Cpu(dcls, "dcls").Span[..dim];
                TensorPrimitives.Add(g, d.AsSpan((int)xb, dim), g);
            }
            if (dpos is not null)
            {
                var g = Cpu(dpos, "dpos").Span[..(tokens * dim)];
                TensorPrimitives.Add(g, d.AsSpan((int)xb, tokens * dim), g);
            }
        }
    }
}

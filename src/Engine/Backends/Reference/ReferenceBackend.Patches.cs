using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Backends.Reference;

// Patch embedding as im2col and its col2im backward; [CLS] + position-embedding token assembly and its backward.
internal sealed partial class ReferenceBackend
{
    public void Im2Col(Tensor image, Tensor columns, int batch, int channels, int height, int width, int patch)
        => PatchCopy(image, columns, batch, channels, height, width, patch, toColumns: true);

    public void Col2Im(Tensor dcolumns, Tensor dimage, int batch, int channels, int height, int width, int patch)
        => PatchCopy(dimage, dcolumns, batch, channels, height, width, patch, toColumns: false);

    // Column row (b, gy, gx) holds pixel (c, gy·patch + ky, gx·patch + kx) at (c·patch + ky)·patch + kx. Patches do not
    // overlap and tile the image, so col2im is the same copy the other way round.
    private static void PatchCopy(Tensor image, Tensor columns, int batch, int channels, int height, int width, int patch, bool toColumns)
    {
        if (patch <= 0 || height % patch != 0 || width % patch != 0)
            throw new ArgumentException($"image {height}×{width} is not divisible into {patch}×{patch} patches");
        int gridH = height / patch, gridW = width / patch, rowLength = channels * patch * patch;
        float[] img = D(image, (long)batch * channels * height * width, toColumns ? "image" : "image gradient");
        float[] col = D(columns, (long)batch * gridH * gridW * rowLength, toColumns ? "patch columns" : "patch-column gradient");
        for (int b = 0; b < batch; b++)
            for (int gy = 0; gy < gridH; gy++)
                for (int gx = 0; gx < gridW; gx++)
                    for (int c = 0; c < channels; c++)
                        for (int ky = 0; ky < patch; ky++)
                            for (int kx = 0; kx < patch; kx++)
                            {
                                long pixel = (((long)b * channels + c) * height + gy * patch + ky) * width + gx * patch + kx;
                                long entry = (((long)b * gridH + gy) * gridW + gx) * rowLength + (c * patch + ky) * patch + kx;
                                if (toColumns) col[entry] = img[pixel];
                                else img[pixel] = col[entry];
                            }
    }

    public void AssembleTokens(Tensor patchTokens, Tensor cls, Tensor pos, Tensor x, int batch, int patches, int dim)
    {
        int tokens = patches + 1;
        float[] pt = D(patchTokens, (long)batch * patches * dim, "patch tokens"), cl = D(cls, dim, "cls_token");
        float[] ps = D(pos, (long)tokens * dim, "pos_embed"), X = D(x, (long)batch * tokens * dim, "token sequence");
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < tokens; t++)
                for (int d = 0; d < dim; d++)
                {
                    float token = t == 0 ? cl[d] : pt[((long)b * patches + t - 1) * dim + d];
                    X[((long)b * tokens + t) * dim + d] = token + ps[(long)t * dim + d];
                }
    }

    public void AssembleTokensBackward(Tensor dx, Tensor dpatchTokens, Tensor? dcls, Tensor? dpos, int batch, int patches, int dim)
    {
        int tokens = patches + 1;
        float[] dX = D(dx, (long)batch * tokens * dim, "token-sequence gradient"), dpt = D(dpatchTokens, (long)batch * patches * dim, "patch-token gradient");
        float[]? dc = dcls is null ? null : D(dcls, dim, "cls_token gradient");
        float[]? dp = dpos is null ? null : D(dpos, (long)tokens * dim, "pos_embed gradient");
        for (int b = 0; b < batch; b++)
            for (int p = 0; p < patches; p++)
                for (int d = 0; d < dim; d++)
                    dpt[((long)b * patches + p) * dim + d] = dX[((long)b * tokens + p + 1) * dim + d];
        // The cls token and the position embedding are shared by every sample: their gradients sum over the batch.
        for (int t = 0; t < tokens; t++)
            for (int d = 0; d < dim; d++)
            {
                double sum = 0;
                for (int b = 0; b < batch; b++) sum += dX[((long)b * tokens + t) * dim + d];
                if (dp is not null) dp[(long)t * dim + d] = (float)(dp[(long)t * dim + d] + sum);
                if (t == 0 && dc is not null) dc[d] = (float)(dc[d] + sum);
            }
    }
}

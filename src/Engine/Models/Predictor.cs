using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Tensors;

namespace WhereToEdit.Engine.Models;

public sealed record ClassScore(int Index, string Label, float Probability);

public sealed record Prediction(string Image, float[] Logits, IReadOnlyList<ClassScore> Top);

/// <summary>Batched image classification: preprocess on the host, forward on the model's backend, softmax, top-k.</summary>
public static class Predictor
{
    public static List<Prediction> Run(VitModel model, ImageLoader loader, Preprocessing preprocessing, IReadOnlyList<string> files,
                                       int batch, int topK, IReadOnlyList<string>? labels)
    {
        var c = model.Config;
        if (preprocessing.CropSize != c.ImageSize || preprocessing.Channels != c.InChans)
            throw new ArgumentException($"preprocessing gives {preprocessing.Channels}×{preprocessing.CropSize}×{preprocessing.CropSize} but the model takes {c.InChans}×{c.ImageSize}×{c.ImageSize}");
        var results = new List<Prediction>(files.Count);
        if (files.Count == 0) return results;
        using var inference = new BatchedInference(model, BatchedInference.BatchFor(batch, files.Count));
        inference.Run(files.Count, (i, pixels) => loader.Load(files[i], preprocessing, pixels), (start, n, logits) =>
        {
            for (int i = 0; i < n; i++)
            {
                var row = logits.Slice(i * c.NumClasses, c.NumClasses).ToArray();
                TensorChecks.EnsureFinite(row, $"logits of {files[start + i]}");
                results.Add(new Prediction(files[start + i], row, TopK(row, topK, labels)));
            }
        });
        return results;
    }

    public static IReadOnlyList<ClassScore> TopK(float[] logits, int k, IReadOnlyList<string>? labels)
    {
        float max = logits.Max();
        double sum = logits.Sum(v => Math.Exp(v - max));
        return logits.Select((v, i) => (Index: i, P: (float)(Math.Exp(v - max) / sum)))
            .OrderByDescending(t => t.P).ThenBy(t => t.Index).Take(k)
            .Select(t => new ClassScore(t.Index, labels is not null && t.Index < labels.Count ? labels[t.Index] : t.Index.ToString(System.Globalization.CultureInfo.InvariantCulture), t.P))
            .ToList();
    }
}

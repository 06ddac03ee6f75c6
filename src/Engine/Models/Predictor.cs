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
        batch = Math.Max(1, Math.Min(batch, files.Count));
        int per = c.InChans * c.ImageSize * c.ImageSize;
        using var ws = model.CreateWorkspace(batch);
        using var input = model.Backend.Allocate("images", batch, c.InChans, c.ImageSize, c.ImageSize);
        var host = new float[batch * per];
        var logits = new float[batch * c.NumClasses];
        var results = new List<Prediction>(files.Count);
        for (int start = 0; start < files.Count; start += batch)
        {
            int n = Math.Min(batch, files.Count - start);
            for (int i = 0; i < n; i++) loader.Load(files[start + i], preprocessing, host.AsSpan(i * per, per));
            input.CopyFrom(host.AsSpan(0, n * per));
            model.Forward(ws, input, n);
            ws.Logits.CopyTo(logits.AsSpan(0, n * c.NumClasses));
            for (int i = 0; i < n; i++)
            {
                var row = logits.AsSpan(i * c.NumClasses, c.NumClasses).ToArray();
                TensorChecks.EnsureFinite(row, $"logits of {files[start + i]}");
                results.Add(new Prediction(files[start + i], row, TopK(row, topK, labels)));
            }
        }
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

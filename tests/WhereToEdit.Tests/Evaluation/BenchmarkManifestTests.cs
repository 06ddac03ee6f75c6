using System.Text;
using System.Text.Json.Nodes;
using WhereToEdit.Engine.Evaluation;
using WhereToEdit.Tests.IO;
using Xunit;

namespace WhereToEdit.Tests.Evaluation;

public sealed class BenchmarkManifestTests
{
    /// <summary>A valid manifest over real (tiny) PNG files in <paramref name="dir"/>.</summary>
    private static string ValidJson(TempDir dir)
    {
        foreach (string rel in new[] { "natural/6_0/00001.png", "natural/6_0/00002.png", "natural/2_4/00003.png", "oil_painting/6/00004.png", "locality/00005.png", "locality/00006.png" })
        {
            string path = Path.Combine(dir.Path, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            BenchmarkBuilder.WriteGrayPng(path, new byte[4], 2, 2);
        }
        return """
            {
              "format": "wte-benchmark/1",
              "name": "tiny",
              "base_model_fingerprint": "0123456789abcdef0123456789abcdef",
              "image_size": 2,
              "channels": 1,
              "labels": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
              "seed": 0,
              "subsets": [
                {"name": "natural", "kind": "natural", "groups": [
                  {"name": "Shirt→T-shirt/top", "label": 6, "predicted": 0, "images": ["natural/6_0/00001.png", "natural/6_0/00002.png"]},
                  {"name": "Pullover→Coat", "label": 2, "predicted": 4, "images": ["natural/2_4/00003.png"]}]},
                {"name": "oil_painting", "kind": "style", "groups": [
                  {"name": "Shirt", "label": 6, "predicted": null, "images": ["oil_painting/6/00004.png"]}]}
              ],
              "locality": {"name": "sensitive", "margin": 0.05, "images": ["locality/00005.png", "locality/00006.png"]},
              "notes": ["a note"]
            }
            """;
    }

    private static BenchmarkManifestException ReadBad(TempDir dir, Action<JsonObject> mutate)
    {
        var node = JsonNode.Parse(ValidJson(dir))!.AsObject();
        mutate(node);
        string path = dir.File("manifest.json");
        File.WriteAllText(path, node.ToJsonString());
        var e = Assert.Throws<BenchmarkManifestException>(() => BenchmarkManifest.Read(path));
        Assert.StartsWith(path + ":", e.Message);
        Assert.Equal(path, e.FilePath);
        return e;
    }

    private static JsonObject Group(JsonObject root, int subset, int group) => root["subsets"]![subset]!["groups"]![group]!.AsObject();

    [Fact]
    public void Reads_a_valid_manifest_and_writes_it_back_byte_identically()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("manifest.json"), ValidJson(dir));
        var m = BenchmarkManifest.Read(dir.Path);   // a folder means its manifest.json
        Assert.Equal("tiny", m.Name);
        Assert.Equal(2, m.Subsets.Count);
        Assert.Equal(BenchmarkSubsetKind.Natural, m.Subsets[0].Kind);
        Assert.Equal(BenchmarkSubsetKind.Style, m.Subset("oil_painting").Kind);
        var g = m.Subsets[0].Groups[0];
        Assert.Equal(("Shirt→T-shirt/top", 6, (int?)0), (g.Name, g.Label, g.Predicted));
        Assert.Null(m.Subsets[1].Groups[0].Predicted);
        Assert.Equal(0.05, m.Locality.Margin);
        Assert.Equal(Path.GetFullPath(dir.Path), m.Folder);
        Assert.True(File.Exists(m.ImagePath(g.Images[1])));
        Assert.Equal("Shirt", m.LabelName(6));

        string copy = dir.File("copy.json");
        m.Write(copy);
        var again = BenchmarkManifest.Read(copy);
        Assert.Equal(m.ToJsonBytes(), again.ToJsonBytes());
        Assert.Equal(File.ReadAllBytes(copy), again.ToJsonBytes());
        Assert.Contains("Shirt→T-shirt/top", Encoding.UTF8.GetString(File.ReadAllBytes(copy)));   // readable, not \u-escaped
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));
    }

    [Fact]
    public void Optional_fields_may_be_absent_or_null()
    {
        using var dir = new TempDir();
        var node = JsonNode.Parse(ValidJson(dir))!.AsObject();
        foreach (string key in new[] { "base_model_fingerprint", "image_size", "channels", "seed", "notes" }) node.Remove(key);
        node["labels"] = null;
        Group(node, 0, 0).Remove("predicted");
        File.WriteAllText(dir.File("manifest.json"), node.ToJsonString());
        var m = BenchmarkManifest.Read(dir.File("manifest.json"));
        Assert.Null(m.Labels);
        Assert.Null(m.Seed);
        Assert.Null(m.Subsets[0].Groups[0].Predicted);
        Assert.Empty(m.Notes);
        Assert.Equal("6", m.LabelName(6));
    }

    public static TheoryData<string, string> Malformed => new()
    {
        { "format-other-version", "format \"wte-benchmark/2\" is not supported" },
        { "format-foreign", "is not a wte benchmark manifest" },
        { "format-number", "\"format\" must be the string" },
        { "unknown-root-field", "unknown field \"extra\"" },
        { "missing-name", "missing field \"name\"" },
        { "missing-locality", "missing field \"locality\"" },
        { "name-not-string", "\"name\" must be a string" },
        { "image-size-string", "\"image_size\" must be an integer or null" },
        { "image-size-zero", "\"image_size\" 0 must be positive" },
        { "channels-two", "\"channels\" 2 must be 1 or 3" },
        { "seed-negative", "\"seed\" must be a non-negative integer" },
        { "labels-empty", "\"labels\" is empty" },
        { "label-out-of-range", "\"label\" 10 is out of range (10 labels" },
        { "label-negative", "\"label\" -1 is negative" },
        { "label-float", "\"label\" must be an integer" },
        { "predicted-out-of-range", "\"predicted\" 12 is out of range" },
        { "predicted-equals-label", "\"predicted\" equals \"label\"" },
        { "predicted-on-style", "subset \"oil_painting\" is of kind style" },
        { "kind-unknown", "\"kind\" \"ai\" must be \"natural\" or \"style\"" },
        { "unknown-group-field", "unknown field \"confidence\"" },
        { "missing-group-images", "missing field \"images\"" },
        { "group-images-empty", "\"images\" is empty" },
        { "groups-empty", "\"groups\" is empty" },
        { "subsets-empty", "\"subsets\" is empty" },
        { "duplicate-group-name", "duplicate group name in subset \"natural\"" },
        { "duplicate-subset-name", "duplicate subset name \"natural\"" },
        { "duplicate-image", "is listed twice" },
        { "image-not-string", "images[0] must be a string" },
        { "absolute-path", "absolute paths are not allowed" },
        { "dotdot-escape", "'..' would leave the manifest's folder" },
        { "backslash", "uses '\\'" },
        { "dot-segment", "not a normalised relative path" },
        { "missing-file", "\"natural/6_0/99999.png\": no such file" },
        { "folder-not-file", "is a folder, not an image file" },
        { "margin-zero", "\"margin\" 0 must be in (0, 1]" },
        { "margin-string", "\"margin\" must be a number" },
        { "locality-empty", "locality (\"sensitive\"): \"images\" is empty" },
        { "locality-unknown-field", "locality: unknown field \"size\"" },
        { "subset-not-object", "subsets[0] must be a JSON object" },
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public void Each_kind_of_malformed_manifest_gets_its_own_clear_error(string kind, string expected)
    {
        using var dir = new TempDir();
        var e = ReadBad(dir, root =>
        {
            var images = Group(root, 0, 0)["images"]!.AsArray();
            switch (kind)
            {
                case "format-other-version": root["format"] = "wte-benchmark/2"; break;
                case "format-foreign": root["format"] = "something-else"; break;
                case "format-number": root["format"] = 1; break;
                case "unknown-root-field": root["extra"] = 1; break;
                case "missing-name": root.Remove("name"); break;
                case "missing-locality": root.Remove("locality"); break;
                case "name-not-string": root["name"] = 3; break;
                case "image-size-string": root["image_size"] = "28"; break;
                case "image-size-zero": root["image_size"] = 0; break;
                case "channels-two": root["channels"] = 2; break;
                case "seed-negative": root["seed"] = -1; break;
                case "labels-empty": root["labels"] = new JsonArray(); break;
                case "label-out-of-range": Group(root, 0, 0)["label"] = 10; break;
                case "label-negative": Group(root, 0, 0)["label"] = -1; break;
                case "label-float": Group(root, 0, 0)["label"] = 1.5; break;
                case "predicted-out-of-range": Group(root, 0, 0)["predicted"] = 12; break;
                case "predicted-equals-label": Group(root, 0, 0)["predicted"] = 6; break;
                case "predicted-on-style": Group(root, 1, 0)["predicted"] = 3; break;
                case "kind-unknown": root["subsets"]![0]!["kind"] = "ai"; break;
                case "unknown-group-field": Group(root, 0, 0)["confidence"] = 0.5; break;
                case "missing-group-images": Group(root, 0, 0).Remove("images"); break;
                case "group-images-empty": images.Clear(); break;
                case "groups-empty": root["subsets"]![1]!["groups"] = new JsonArray(); break;
                case "subsets-empty": root["subsets"] = new JsonArray(); break;
                case "duplicate-group-name": Group(root, 0, 1)["name"] = "Shirt→T-shirt/top"; break;
                case "duplicate-subset-name": root["subsets"]![1]!["name"] = "natural"; break;
                case "duplicate-image": images.Add("natural/6_0/00001.png"); break;
                case "image-not-string": images[0] = 5; break;
                case "absolute-path": images[0] = Path.Combine(dir.Path, "natural/6_0/00001.png"); break;
                case "dotdot-escape": images[0] = "../outside.png"; break;
                case "backslash": images[0] = "natural\\6_0\\00001.png"; break;
                case "dot-segment": images[0] = "./natural/6_0/00001.png"; break;
                case "missing-file": images[0] = "natural/6_0/99999.png"; break;
                case "folder-not-file": images[0] = "natural/6_0"; break;
                case "margin-zero": root["locality"]!["margin"] = 0; break;
                case "margin-string": root["locality"]!["margin"] = "0.05"; break;
                case "locality-empty": root["locality"]!["images"] = new JsonArray(); break;
                case "locality-unknown-field": root["locality"]!["size"] = 2; break;
                case "subset-not-object": root["subsets"]![0] = "natural"; break;
                default: throw new ArgumentException(kind);
            }
        });
        Assert.Contains(expected, e.Message);
        Assert.Single(e.Problems);
    }

    [Fact]
    public void Json_syntax_and_duplicate_keys_are_refused_naming_the_file()
    {
        using var dir = new TempDir();
        string path = dir.File("manifest.json");
        File.WriteAllText(path, "{\"format\": \"wte-benchmark/1\",");
        var e = Assert.Throws<BenchmarkManifestException>(() => BenchmarkManifest.Read(path));
        Assert.StartsWith(path + ": not valid JSON", e.Message);
        File.WriteAllText(path, ValidJson(dir).Replace("\"name\": \"tiny\",", "\"name\": \"tiny\", \"name\": \"again\","));
        e = Assert.Throws<BenchmarkManifestException>(() => BenchmarkManifest.Read(path));
        Assert.Contains("duplicate key \"name\"", e.Message);
        File.WriteAllText(path, "[1, 2]");
        e = Assert.Throws<BenchmarkManifestException>(() => BenchmarkManifest.Read(path));
        Assert.Contains("the manifest must be a JSON object", e.Message);
        e = Assert.Throws<BenchmarkManifestException>(() => BenchmarkManifest.Read(dir.File("absent.json")));
        Assert.Contains("no such manifest file", e.Message);
    }

    [Fact]
    public void Several_problems_are_listed_together()
    {
        using var dir = new TempDir();
        var e = ReadBad(dir, root =>
        {
            Group(root, 0, 0)["label"] = 42;
            Group(root, 0, 1)["images"]![0] = "../x.png";
            root["locality"]!["margin"] = 2;
        });
        Assert.Equal(3, e.Problems.Count);
        Assert.Contains("3 problems", e.Message);
        Assert.Contains("subsets[0].groups[0] (\"Shirt→T-shirt/top\"): \"label\" 42", e.Message);
        Assert.Contains("subsets[0].groups[1] (\"Pullover→Coat\"): image \"../x.png\"", e.Message);
        Assert.Contains("\"margin\" 2 must be in (0, 1]", e.Message);
    }

    [Fact]
    public void Write_checks_the_images_relative_to_where_it_writes()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("manifest.json"), ValidJson(dir));
        var m = BenchmarkManifest.Read(dir.Path);
        Directory.CreateDirectory(dir.File("elsewhere"));
        var e = Assert.Throws<BenchmarkManifestException>(() => m.Write(dir.File("elsewhere/manifest.json")));
        Assert.Contains("no such file", e.Message);
        Assert.False(File.Exists(dir.File("elsewhere/manifest.json")));
        var bad = m with { Subsets = [m.Subsets[0] with { Groups = [] }] };
        Assert.Throws<BenchmarkManifestException>(() => bad.Write(dir.Path));
    }

    [Fact]
    public void Symlinks_out_of_the_folder_are_refused()
    {
        using var dir = new TempDir();
        using var outside = new TempDir();
        string json = ValidJson(dir);
        string target = outside.File("secret.png");
        BenchmarkBuilder.WriteGrayPng(target, new byte[4], 2, 2);
        File.Delete(Path.Combine(dir.Path, "locality/00006.png"));
        File.CreateSymbolicLink(Path.Combine(dir.Path, "locality/00006.png"), target);
        File.WriteAllText(dir.File("manifest.json"), json);
        var e = Assert.Throws<BenchmarkManifestException>(() => BenchmarkManifest.Read(dir.Path));
        Assert.Contains("outside the manifest's folder", e.Message);
    }

    [Fact]
    public void Paper_layout_becomes_one_natural_subset_and_a_locality_set()
    {
        using var dir = new TempDir();
        void Image(string rel)
        {
            string p = Path.Combine(dir.Path, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(p)!);
            BenchmarkBuilder.WriteGrayPng(p, new byte[4], 2, 2);
        }
        Image("data/natural/409_analog clock/b.png");
        Image("data/natural/409_analog clock/a.png");
        Image("data/natural/7_cock/x.png");
        File.WriteAllText(Path.Combine(dir.Path, "data/natural/7_cock/readme.txt"), "not an image");
        Image("data/natural/7_cock/.hidden.png");
        Image("data/locality/l2.png");
        Image("data/locality/l1.png");

        var m = BenchmarkManifest.FromPaperLayout(Path.Combine(dir.Path, "data/natural"), Path.Combine(dir.Path, "data/locality"));
        Assert.Equal(Path.Combine(dir.Path, "data"), m.Folder);
        var subset = Assert.Single(m.Subsets);
        Assert.Equal(("natural", BenchmarkSubsetKind.Natural), (subset.Name, subset.Kind));
        Assert.Equal(new[] { 7, 409 }, subset.Groups.Select(g => g.Label));
        Assert.Equal(new[] { "7_cock", "409_analog clock" }, subset.Groups.Select(g => g.Name));
        Assert.Equal(new[] { "natural/409_analog clock/a.png", "natural/409_analog clock/b.png" }, subset.Groups[1].Images);
        Assert.Equal(new[] { "natural/7_cock/x.png" }, subset.Groups[0].Images);
        Assert.All(subset.Groups, g => Assert.Null(g.Predicted));
        Assert.Equal(new[] { "locality/l1.png", "locality/l2.png" }, m.Locality.Images);
        Assert.Equal(0.05, m.Locality.Margin);

        // Written next to the folders it reads back the same.
        m.Write(m.Folder);
        var back = BenchmarkManifest.Read(m.Folder);
        Assert.Equal(m.ToJsonBytes(), back.ToJsonBytes());

        // Labels, when given, bound the class indices.
        var e = Assert.Throws<BenchmarkManifestException>(() =>
            BenchmarkManifest.FromPaperLayout(Path.Combine(dir.Path, "data/natural"), Path.Combine(dir.Path, "data/locality"), labels: Enumerable.Range(0, 100).Select(i => $"c{i}").ToList()));
        Assert.Contains("\"label\" 409 is out of range", e.Message);
    }

    [Fact]
    public void Paper_layout_errors_name_the_folder()
    {
        using var dir = new TempDir();
        string failures = dir.File("failures"), locality = dir.File("locality");
        Directory.CreateDirectory(Path.Combine(failures, "clock"));
        Directory.CreateDirectory(Path.Combine(failures, "3_empty"));
        Directory.CreateDirectory(locality);
        var e = Assert.Throws<BenchmarkManifestException>(() => BenchmarkManifest.FromPaperLayout(failures, locality));
        Assert.StartsWith(failures + ":", e.Message);
        Assert.Contains("folder \"clock\" is not named <class index>_<name>", e.Message);
        Assert.Contains("folder \"3_empty\" holds no images", e.Message);

        Directory.Delete(Path.Combine(failures, "clock"));
        BenchmarkBuilder.WriteGrayPng(Path.Combine(failures, "3_empty", "a.png"), new byte[1], 1, 1);
        e = Assert.Throws<BenchmarkManifestException>(() => BenchmarkManifest.FromPaperLayout(failures, locality));
        Assert.StartsWith(locality + ": holds no images", e.Message);
        e = Assert.Throws<BenchmarkManifestException>(() => BenchmarkManifest.FromPaperLayout(dir.File("nope"), locality));
        Assert.Contains("no such folder", e.Message);
    }
}

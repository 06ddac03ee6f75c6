using System.Diagnostics;
using Xunit;
using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.Json.Nodes;
using WhereToEdit.Cli;
using WhereToEdit.Engine.Backends.Cpu;
using WhereToEdit.Engine.Editing;
using WhereToEdit.Engine.IO;
using WhereToEdit.Engine.Models;
using WhereToEdit.Server;

namespace WhereToEdit.Tests.Serving;

/// <summary>Every route of `wte serve` over the in-memory test server: answers, edits, reverts, errors, limits.</summary>
public sealed class ServeApiTests
{
    private static string BaseFingerprint()
    {
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 1 });
        using var vit = VitCheckpoint.Load(be, ModelFolder.Load(ServeAssets.Model));
        return VitCheckpoint.Fingerprint(vit);
    }

    [Fact]
    public async Task Health_model_page_and_metrics_answer()
    {
        await using var s = await TestServe.StartAsync();
        var health = await s.GetJsonAsync("/healthz");
        Assert.Equal("ok", health["status"]!.GetValue<string>());

        var model = await s.GetJsonAsync("/v1/model");
        string fp = BaseFingerprint();
        Assert.Equal(fp, model["base_fingerprint"]!.GetValue<string>());
        Assert.Equal(fp, model["fingerprint"]!.GetValue<string>());
        Assert.Equal(0, model["version"]!.GetValue<int>());
        Assert.Empty(model["edits"]!.AsArray());
        Assert.Equal(12, model["architecture"]!["depth"]!.GetValue<int>());
        Assert.Equal(28, model["architecture"]!["image_size"]!.GetValue<int>());
        Assert.Equal("Ankle boot", model["labels"]![9]!.GetValue<string>());

        var page = await s.Client.GetAsync("/");
        Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
        string html = await page.Content.ReadAsStringAsync();
        foreach (string id in new[] { "id=\"file\"", "id=\"top\"", "id=\"label\"", "id=\"edit-btn\"", "id=\"edits\"", "/v1/edits" })
            Assert.Contains(id, html);

        await s.PredictAsync(ServeAssets.Failure);
        string metrics = await s.Client.GetStringAsync("/metrics");
        Assert.Contains("wte_predict_batch_size_count 1", metrics);
        // The per-stage times the load test (perf/serve_load.py) breaks a request into.
        Assert.Contains("wte_predict_decode_seconds_count 1", metrics);
        Assert.Contains("wte_predict_queue_seconds_count 1", metrics);
        Assert.Contains("wte_predict_forward_seconds_count 1", metrics);
        Assert.Contains("wte_model_version 0", metrics);
        Assert.Contains("http_request_duration_seconds_count{", metrics);
        Assert.Contains("endpoint=\"/v1/predict\"", metrics);
        Assert.Contains("endpoint=\"/v1/model\"", metrics);
    }

    [Fact]
    public async Task Predict_matches_the_engine_predictor_for_raw_and_multipart_bodies()
    {
        await using var s = await TestServe.StartAsync();
        var loaded = ModelFolder.Load(ServeAssets.Model);
        using var be = new CpuBackend(new CpuBackendOptions { Threads = 1 });
        using var vit = VitCheckpoint.Load(be, loaded);
        var expected = Predictor.Run(vit, new ImageLoader(), loaded.Preprocessing, [ServeAssets.Failure], 1, 3, loaded.Labels)[0].Top;

        var raw = await s.PredictAsync(ServeAssets.Failure, topK: 3);
        var multipart = await TestServe.Read(await s.Client.PostAsync("/v1/predict?top_k=3", TestServe.Form([ServeAssets.Failure])), 200);
        foreach (var answer in new[] { raw, multipart })
        {
            Assert.Equal(0, answer["version"]!.GetValue<int>());
            var top = answer["top"]!.AsArray();
            Assert.Equal(3, top.Count);
            for (int i = 0; i < 3; i++)
            {
                Assert.Equal(expected[i].Index, top[i]!["index"]!.GetValue<int>());
                Assert.Equal(expected[i].Label, top[i]!["label"]!.GetValue<string>());
                Assert.Equal(expected[i].Probability, top[i]!["prob"]!.GetValue<float>(), 1e-6f);
            }
        }
        Assert.Equal(3, expected[0].Index);   // the model's mistake: a dress
        var five = await TestServe.Read(await s.Client.PostAsync("/v1/predict", TestServe.Png(ServeAssets.Failure)), 200);
        Assert.Equal(5, five["top"]!.AsArray().Count);   // top_k defaults to 5
    }

    [Fact]
    public async Task Bad_predict_requests_get_json_errors_naming_the_field()
    {
        await using var s = await TestServe.StartAsync(o => o with { MaxBodyBytes = 64 << 10 });
        var c = s.Client;
        await TestServe.ErrorAsync(await c.PostAsync("/v1/predict", new StringContent("{}", System.Text.Encoding.UTF8, "application/json")), 415, "Content-Type");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/predict", null), 415, "Content-Type");
        var notPng = new ByteArrayContent("this is not an image"u8.ToArray());
        notPng.Headers.ContentType = new MediaTypeHeaderValue("image/png");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/predict", notPng), 400, "image");
        byte[] png = File.ReadAllBytes(ServeAssets.Failure);
        var truncated = new ByteArrayContent(png[..(png.Length / 2)]);
        truncated.Headers.ContentType = new MediaTypeHeaderValue("image/png");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/predict", truncated), 400, "image");
        var huge = new ByteArrayContent(HugePng(30000, 30000));
        huge.Headers.ContentType = new MediaTypeHeaderValue("image/png");
        string tooBig = await TestServe.ErrorAsync(await c.PostAsync("/v1/predict", huge), 400, "image");
        Assert.Contains("limit", tooBig);
        await TestServe.ErrorAsync(await c.PostAsync("/v1/predict?top_k=0", TestServe.Png(ServeAssets.Failure)), 400, "top_k");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/predict?top_k=abc", TestServe.Png(ServeAssets.Failure)), 400, "top_k");
        var big = new ByteArrayContent(new byte[100 << 10]);
        big.Headers.ContentType = new MediaTypeHeaderValue("image/png");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/predict", big), 413, "body");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/predict", TestServe.Form([ServeAssets.Failure, ServeAssets.Failure2])), 400, "image");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/predict", TestServe.Form([ServeAssets.Failure], ("label", "0"))), 400, "label");
        await TestServe.ErrorAsync(await c.GetAsync("/v1/nothing"), 404, "path");
        await TestServe.ErrorAsync(await c.PutAsync("/v1/predict", TestServe.Png(ServeAssets.Failure)), 405, "method");
    }

    [Fact]
    public async Task An_edit_fixes_the_image_journals_it_and_its_revert_restores_the_weights_bit_for_bit()
    {
        await using var s = await TestServe.StartAsync();
        var before = await s.PredictAsync(ServeAssets.Failure);
        string baseFp = (await s.GetJsonAsync("/v1/model"))["fingerprint"]!.GetValue<string>();

        var created = await s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure, label: "T-shirt/top", more: ("keep", "0.25")));
        var edit = await TestServe.Read(created, 201);
        Assert.Equal("e1", edit["id"]!.GetValue<string>());
        Assert.Equal(1, edit["version"]!.GetValue<int>());
        var record = edit["record"]!;
        Assert.True(record["success"]!.GetValue<bool>());
        Assert.Equal("hprd", record["method"]!.GetValue<string>());
        Assert.Equal(0, record["labels"]![0]!.GetValue<int>());
        Assert.Equal(3, record["predictions_before"]![0]!.GetValue<int>());
        Assert.Equal(0, record["predictions_after"]![0]!.GetValue<int>());

        // The next prediction runs on the new version and is fixed.
        var after = await s.PredictAsync(ServeAssets.Failure);
        Assert.Equal(1, after["version"]!.GetValue<int>());
        Assert.Equal(0, after["top"]![0]!["index"]!.GetValue<int>());
        var model = await s.GetJsonAsync("/v1/model");
        Assert.Equal(1, model["version"]!.GetValue<int>());
        Assert.Equal(["e1"], model["edits"]!.AsArray().Select(e => e!.GetValue<string>()));
        Assert.NotEqual(baseFp, model["fingerprint"]!.GetValue<string>());

        var list = JsonNode.Parse(await s.Client.GetStringAsync("/v1/edits"))!.AsArray();
        Assert.Single(list);
        Assert.Equal("e1", list[0]!["id"]!.GetValue<string>());
        var one = await s.GetJsonAsync("/v1/edits/e1");
        var units = one["patch"]!["units"]!.AsObject();
        Assert.Equal(6, units.Count);
        Assert.Contains("blocks.7.mlp.fc1.weight", units.Select(u => u.Key));
        Assert.Equal(record["kept_gates"]!.GetValue<int>(), units.Sum(u => u.Value!.GetValue<int>()));
        Assert.Equal(baseFp, one["patch"]!["base_fingerprint"]!.GetValue<string>());

        // Durable: the patch and one journal line are on disk.
        Assert.True(File.Exists(Path.Combine(s.Journal, "patches", "000001.safetensors")));
        Assert.Single(File.ReadAllLines(Path.Combine(s.Journal, "journal.jsonl")));

        var reverted = await TestServe.Read(await s.Client.DeleteAsync("/v1/edits/e1"), 200);
        Assert.Equal(2, reverted["version"]!.GetValue<int>());
        Assert.Equal(baseFp, reverted["fingerprint"]!.GetValue<string>());
        var again = await s.PredictAsync(ServeAssets.Failure);
        Assert.Equal(2, again["version"]!.GetValue<int>());
        Assert.Equal(TestServe.Probabilities(before), TestServe.Probabilities(again));   // bit for bit
        Assert.Empty(JsonNode.Parse(await s.Client.GetStringAsync("/v1/edits"))!.AsArray());
        await TestServe.ErrorAsync(await s.Client.GetAsync("/v1/edits/e1"), 404, "id");
        await TestServe.ErrorAsync(await s.Client.DeleteAsync("/v1/edits/e1"), 404, "id");
        Assert.Equal(2, File.ReadAllLines(Path.Combine(s.Journal, "journal.jsonl")).Length);
    }

    [Fact]
    public async Task The_edit_record_is_the_one_wte_edit_json_prints()
    {
        string folder = Directory.CreateTempSubdirectory("wte-serve-cli-").FullName;
        try
        {
            var stdout = new StringWriter();
            int code = WteCommands.Run(["edit", ServeAssets.Model, "--hypernet", ServeAssets.Hypernet, "--image", ServeAssets.Failure2, "--label", "0",
                "--lr", ServeAssets.Lr, "--keep", "0.25", "--threads", "1", "--out", Path.Combine(folder, "p.safetensors"), "--json"], stdout, new StringWriter());
            Assert.Equal(0, code);
            var cli = JsonNode.Parse(stdout.ToString())!.AsObject();

            await using var s = await TestServe.StartAsync();
            var edit = await TestServe.Read(await s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure2, more: ("keep", "0.25"))), 201);
            var record = edit["record"]!.AsObject();
            Assert.Equal(cli.Select(p => p.Key).Order(), record.Select(p => p.Key).Order());
            foreach (string key in new[] { "method", "success", "steps", "labels", "predictions_before", "predictions_after", "kept_gates", "total_gates",
                                           "weights_changed", "weights_editable", "hashes_before", "hashes_after", "loss_history", "target_prob_after" })
                Assert.True(JsonNode.DeepEquals(cli[key], record[key]), $"{key}: cli {cli[key]?.ToJsonString()} vs server {record[key]?.ToJsonString()}");
        }
        finally { Directory.Delete(folder, true); }
    }

    [Fact]
    public async Task Without_lr_an_edit_takes_the_width_rule_like_wte_edit_and_gives_the_same_record()
    {
        string folder = Directory.CreateTempSubdirectory("wte-serve-cli-").FullName;
        try
        {
            var stdout = new StringWriter();
            int code = WteCommands.Run(["edit", ServeAssets.Model, "--image", ServeAssets.Failure, "--label", "0", "--method", "random", "--keep", "0.25",
                "--seed", "3", "--max-steps", "30", "--threads", "1", "--out", Path.Combine(folder, "p.safetensors"), "--json"], stdout, new StringWriter());
            Assert.True(code is 0 or 2, $"wte edit exited {code}");
            var cli = JsonNode.Parse(stdout.ToString())!.AsObject();

            await using var s = await TestServe.StartAsync();
            var answer = await s.Client.PostAsync("/v1/edits", TestServe.Form([ServeAssets.Failure], ("label", "0"), ("method", "random"), ("keep", "0.25"),
                ("seed", "3"), ("max_steps", "30")));
            // Fixed: 201 with the record; not fixed: 422 with the record (and nothing changed), as wte edit exits 0 or 2.
            var body = await TestServe.Read(answer, code == 0 ? 201 : 422);
            var record = body["record"]!.AsObject();
            Assert.Equal(cli.Select(p => p.Key).Order(), record.Select(p => p.Key).Order());
            foreach (string key in new[] { "method", "success", "steps", "labels", "predictions_before", "predictions_after", "kept_gates", "total_gates",
                                           "weights_changed", "weights_editable", "hashes_before", "hashes_after", "loss_history", "target_prob_after" })
                Assert.True(JsonNode.DeepEquals(cli[key], record[key]), $"{key}: cli {cli[key]?.ToJsonString()} vs server {record[key]?.ToJsonString()}");
        }
        finally { Directory.Delete(folder, true); }
    }

    [Fact]
    public async Task Reverting_an_edit_whose_units_a_later_edit_changed_is_a_409_naming_it()
    {
        await using var s = await TestServe.StartAsync();
        await TestServe.Read(await s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure, more: ("keep", "0.25"))), 201);
        // FT-L2 changes every unit of the edited matrices, so it overlaps e1.
        await TestServe.Read(await s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure2, method: "ft-l2")), 201);
        string fp = (await s.GetJsonAsync("/v1/model"))["fingerprint"]!.GetValue<string>();
        string error = await TestServe.ErrorAsync(await s.Client.DeleteAsync("/v1/edits/e1"), 409, "id");
        Assert.Contains("e2", error);
        var model = await s.GetJsonAsync("/v1/model");
        Assert.Equal(2, model["version"]!.GetValue<int>());
        Assert.Equal(fp, model["fingerprint"]!.GetValue<string>());
        await TestServe.Read(await s.Client.DeleteAsync("/v1/edits/e2"), 200);
        var last = await TestServe.Read(await s.Client.DeleteAsync("/v1/edits/e1"), 200);
        Assert.Equal(BaseFingerprint(), last["fingerprint"]!.GetValue<string>());
        Assert.Equal(4, last["version"]!.GetValue<int>());
    }

    [Fact]
    public async Task Disjoint_edits_revert_in_any_order_and_the_state_survives_a_restart()
    {
        string folder = Directory.CreateTempSubdirectory("wte-serve-restart-").FullName;
        string fpAfterRevert;
        await using (var s = await TestServe.StartAsync(folder: folder))
        {
            await TestServe.Read(await s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure)), 201);
            // A random mask that shares no unit with e1's HPRD mask (read from the journal's patch), so e1 can be reverted under e2.
            var e1 = EditPatch.Load(Path.Combine(s.Journal, "patches", "000001.safetensors"));
            using var be = new CpuBackend(new CpuBackendOptions { Threads = 1 });
            var target = EditTarget.Default(ModelFolder.Load(ServeAssets.Model).Architecture);
            ulong seed = Enumerable.Range(1, 5000).Select(i => (ulong)i).First(sd =>
            {
                var mask = EditMask.Random(target, 0.02, sd);
                return e1.Units.All(u => !mask.Indices(u.Index).Intersect(u.Indices).Any());
            });
            var e2 = await TestServe.Read(await s.Client.PostAsync("/v1/edits", TestServe.Form([ServeAssets.Failure3],
                ("label", "6"), ("method", "random"), ("keep", "0.02"), ("seed", seed.ToString(System.Globalization.CultureInfo.InvariantCulture)),
                ("lr", "0.003"), ("max_steps", "500"))), 201);
            Assert.True(e2["record"]!["weights_changed"]!.GetValue<long>() > 0);
            var reverted = await TestServe.Read(await s.Client.DeleteAsync("/v1/edits/e1"), 200);
            fpAfterRevert = reverted["fingerprint"]!.GetValue<string>();
            Assert.NotEqual(BaseFingerprint(), fpAfterRevert);
            Assert.Equal(3, reverted["version"]!.GetValue<int>());
            await s.App.StopAsync();
        }
        await using (var s = await TestServe.StartAsync(folder: folder))
        {
            var model = await s.GetJsonAsync("/v1/model");
            Assert.Equal(3, model["version"]!.GetValue<int>());
            Assert.Equal(["e2"], model["edits"]!.AsArray().Select(e => e!.GetValue<string>()));
            Assert.Equal(fpAfterRevert, model["fingerprint"]!.GetValue<string>());
            var last = await TestServe.Read(await s.Client.DeleteAsync("/v1/edits/e2"), 200);
            Assert.Equal(BaseFingerprint(), last["fingerprint"]!.GetValue<string>());
        }
        Directory.Delete(folder, true);
    }

    [Fact]
    public async Task Bad_edit_requests_change_nothing_and_name_the_field()
    {
        await using var s = await TestServe.StartAsync(o => o with { MaxEditSteps = 500 });
        var c = s.Client;
        string img = ServeAssets.Failure;
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.Form([], ("label", "0"))), 400, "image");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.Form([img, img, img, img], ("label", "0"))), 400, "image");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.Form([img])), 400, "label");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.Form([img], ("label", "10"))), 400, "label");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.Form([img], ("label", "Hat"))), 400, "label");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.Form([img], ("label", "0"), ("method", "magic"))), 400, "method");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.Form([img], ("label", "0"), ("keep", "0"))), 400, "keep");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.Form([img], ("label", "0"), ("keep", "NaN"))), 400, "keep");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.Form([img], ("label", "0"), ("lr", "-1"))), 400, "lr");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.Form([img], ("label", "0"), ("max_steps", "501"))), 400, "max_steps");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.Form([img], ("label", "0"), ("seed", "-3"))), 400, "seed");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.Form([img], ("label", "0"), ("label", "1"))), 400, "label");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.Form([img], ("label", "0"), ("path", "../../etc/passwd"))), 400, "path");
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.Png(img)), 415, "Content-Type");
        // An edit that does not fix the image within max_steps is refused with its record, and changes nothing.
        var notFixed = await c.PostAsync("/v1/edits", TestServe.EditForm(img, more: ("max_steps", "1")));
        var body = await TestServe.Read(notFixed, 422);
        Assert.StartsWith("edit", body["error"]!.GetValue<string>());
        Assert.False(body["record"]!["success"]!.GetValue<bool>());
        await TestServe.ErrorAsync(await c.DeleteAsync("/v1/edits/..%2F..%2Fbase.json"), 404, "id");

        var model = await s.GetJsonAsync("/v1/model");
        Assert.Equal(0, model["version"]!.GetValue<int>());
        Assert.Equal(BaseFingerprint(), model["fingerprint"]!.GetValue<string>());
        Assert.False(File.Exists(Path.Combine(s.Journal, "journal.jsonl")));
        Assert.Empty(Directory.GetFiles(Path.Combine(s.Journal, "patches")));
    }

    [Fact]
    public async Task Without_a_hypernetwork_hprd_is_refused_and_other_methods_work()
    {
        await using var s = await TestServe.StartAsync(hypernet: false);
        Assert.False((await s.GetJsonAsync("/v1/model"))["hypernet"]!.GetValue<bool>());
        await TestServe.ErrorAsync(await s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure)), 400, "method");
        var edit = await TestServe.Read(await s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure, method: "ft-l2")), 201);
        Assert.Equal("ft-l2", edit["record"]!["method"]!.GetValue<string>());
    }

    [Fact]
    public async Task With_a_token_post_and_delete_need_it_and_a_401_changes_nothing()
    {
        const string token = "s3cret-token-for-tests-0123456789";
        await using var s = await TestServe.StartAsync(o => o with { Token = token });
        var c = s.Client;
        await TestServe.ErrorAsync(await c.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure)), 401, "Authorization");
        var wrong = new HttpRequestMessage(HttpMethod.Post, "/v1/edits") { Content = TestServe.EditForm(ServeAssets.Failure) };
        wrong.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token + "x");
        var denied = await c.SendAsync(wrong);
        await TestServe.ErrorAsync(denied, 401, "Authorization");
        Assert.Contains("Bearer", denied.Headers.WwwAuthenticate.ToString());
        await TestServe.ErrorAsync(await c.PostAsync("/v1/predict", TestServe.Png(ServeAssets.Failure)), 401, "Authorization");
        await TestServe.ErrorAsync(await c.DeleteAsync("/v1/edits/e1"), 401, "Authorization");
        Assert.Equal(0, (await s.GetJsonAsync("/v1/model"))["version"]!.GetValue<int>());   // GET needs no token
        Assert.False(File.Exists(Path.Combine(s.Journal, "journal.jsonl")));

        c.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        await TestServe.Read(await c.PostAsync("/v1/predict", TestServe.Png(ServeAssets.Failure)), 200);
        await TestServe.Read(await c.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure, method: "ft-l2")), 201);
        await TestServe.Read(await c.DeleteAsync("/v1/edits/e1"), 200);
    }

    [Fact]
    public void Without_a_token_only_loopback_addresses_are_served()
    {
        var o = new ServeOptions { ModelPath = ServeAssets.Model };
        foreach (string url in new[] { "http://0.0.0.0:8080", "http://*:8080", "http://+:8080", "http://192.168.1.7:8080", "http://example.com:80" })
        {
            var e = Assert.Throws<ArgumentException>(() => (o with { Urls = url }).Validate());
            Assert.StartsWith($"--urls {url}", e.Message);
        }
        foreach (string url in new[] { "http://127.0.0.1:8080", "http://localhost:5000", "http://[::1]:8080", "http://127.0.0.1:1;http://[::1]:2" })
            (o with { Urls = url }).Validate();
        (o with { Urls = "http://0.0.0.0:8080", Token = "0123456789abcdef0123" }).Validate();
        Assert.Throws<ArgumentException>(() => (o with { Token = "short" }).Validate());

        var stderr = new StringWriter();
        int code = WteCommands.Run(["serve", ServeAssets.Model, "--urls", "http://0.0.0.0:8080"], new StringWriter(), stderr);
        Assert.Equal(1, code);
        Assert.StartsWith("wte: --urls http://0.0.0.0:8080: not a loopback address", stderr.ToString());

        string folder = Directory.CreateTempSubdirectory("wte-token-").FullName;
        try
        {
            string missing = Path.Combine(folder, "missing.token"), shortToken = Path.Combine(folder, "short.token");
            File.WriteAllText(shortToken, "abc\n");
            foreach (var (file, expected) in new[] { (missing, $"wte: --token-file {missing}: no such file"), (shortToken, "wte: token (--token-file or WTE_TOKEN): must be at least 16 characters") })
            {
                stderr = new StringWriter();
                Assert.Equal(1, WteCommands.Run(["serve", ServeAssets.Model, "--token-file", file], new StringWriter(), stderr));
                Assert.Equal(expected, stderr.ToString().Trim());
            }
            // A journal folder that holds something else is refused before anything listens.
            File.WriteAllText(Path.Combine(folder, "notes.txt"), "mine");
            stderr = new StringWriter();
            Assert.Equal(1, WteCommands.Run(["serve", ServeAssets.Model, "--journal", folder, "--urls", "http://127.0.0.1:0"], new StringWriter(), stderr));
            Assert.StartsWith($"wte: --journal {folder}: the folder holds other files", stderr.ToString());
            Assert.Equal(["notes.txt"], Directory.EnumerateFileSystemEntries(folder).Select(Path.GetFileName).Where(n => n != "missing.token" && n != "short.token"));
        }
        finally { Directory.Delete(folder, true); }
    }

    [Fact]
    public async Task The_rate_limiter_answers_429_with_a_json_error()
    {
        await using var s = await TestServe.StartAsync(o => o with { RequestsPerSecond = 3, EditsPerMinute = 1 });
        // The refused answer of the burst itself is checked: on a loaded machine a request sent after the burst can
        // already find a token again (one every third of a second).
        var answers = new List<HttpResponseMessage>();
        for (int i = 0; i < 6; i++) answers.Add(await s.Client.GetAsync("/healthz"));
        Assert.Equal(200, (int)answers[0].StatusCode);
        var refused = answers.FirstOrDefault(a => (int)a.StatusCode == 429);
        Assert.True(refused is not null, $"no 429 among {string.Join(", ", answers.Select(a => (int)a.StatusCode))}");
        await TestServe.ErrorAsync(refused, 429, "rate");
        await TestServe.Read(await s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure, method: "ft-l2")), 201);
        await TestServe.ErrorAsync(await s.Client.DeleteAsync("/v1/edits/e1"), 429, "rate");
        Assert.Single(File.ReadAllLines(Path.Combine(s.Journal, "journal.jsonl")));
    }

    [Fact]
    public async Task A_request_past_its_timeout_gets_a_504_json_error()
    {
        await using var s = await TestServe.StartAsync(o => o with { EditTimeout = TimeSpan.FromMilliseconds(200) });
        // The first edit holds the edit lock (1000 steps, the most a request may ask, at a learning rate too small to
        // fix anything: over a second even on a quiet machine) far longer than the second may wait for it.
        var first = s.Client.PostAsync("/v1/edits", TestServe.Form([ServeAssets.Failure], ("label", "0"), ("lr", "1e-9"), ("max_steps", "1000")));
        // The second is sent only once the first holds the edit lock (on a loaded machine it could otherwise get there first).
        var waited = Stopwatch.StartNew();
        while (!(await s.Client.GetStringAsync("/metrics")).Contains("\nwte_edit_running 1"))
        {
            Assert.True(waited.Elapsed < TimeSpan.FromSeconds(30), "the first edit never took the edit lock");
            await Task.Delay(5);
        }
        var second = await s.Client.PostAsync("/v1/edits", TestServe.EditForm(ServeAssets.Failure2, method: "ft-l2"));
        await TestServe.ErrorAsync(second, 504, "request");
        var firstAnswer = await first;
        Assert.True((int)firstAnswer.StatusCode is 422 or 504, $"first edit: {(int)firstAnswer.StatusCode}");
        Assert.Equal(0, (await s.GetJsonAsync("/v1/model"))["version"]!.GetValue<int>());
        Assert.False(File.Exists(Path.Combine(s.Journal, "journal.jsonl")));
    }

    /// <summary>A PNG header (valid CRCs) announcing a width×height gray image, with no pixel data: the limit must refuse it before decoding.</summary>
    internal static byte[] HugePng(int width, int height)
    {
        var ms = new MemoryStream();
        ms.Write([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]);
        void Chunk(string type, byte[] data)
        {
            var len = new byte[4];
            System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(len, data.Length);
            ms.Write(len);
            var body = System.Text.Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
            ms.Write(body);
            var crc = new byte[4];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(crc, Crc32(body));
            ms.Write(crc);
        }
        var ihdr = new byte[13];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = 8;   // bit depth; colour type 0 (gray), deflate, adaptive filter, no interlace
        Chunk("IHDR", ihdr);
        Chunk("IDAT", [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        Chunk("IEND", []);
        return ms.ToArray();
    }

    private static uint Crc32(byte[] data)
    {
        uint c = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            c ^= b;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
        }
        return ~c;
    }
}

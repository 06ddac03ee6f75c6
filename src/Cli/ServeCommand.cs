using System.CommandLine;
using System.Globalization;
using WhereToEdit.Server;

namespace WhereToEdit.Cli;

public static partial class WteCommands
{
    private static Command ServeCommand(CliOutput io)
    {
        var model = new Argument<string>("MODEL") { Description = "the base model to serve (file or hub folder)" };
        var hypernet = new Option<string?>("--hypernet") { Description = "hypernetwork file (enables method hprd)" };
        var journal = new Option<string?>("--journal") { Description = "folder of the durable edit journal (replayed on start); without it edits are lost on exit" };
        var urls = new Option<string>("--urls") { Description = "addresses to listen on, ';'-separated (non-loopback needs a token)", DefaultValueFactory = _ => "http://127.0.0.1:8080" };
        var tokenFile = new Option<string?>("--token-file") { Description = "file holding the bearer token POST and DELETE require (else WTE_TOKEN)" };
        var maxBatch = new Option<int>("--max-batch") { Description = "most predictions per forward pass", DefaultValueFactory = _ => 32 };
        var batchDelay = new Option<double>("--batch-delay-ms") { Description = "extra wait for more predictions once one is queued (0: none; a batch is what queued while the last one ran)", DefaultValueFactory = _ => 0.0 };
        var device = DeviceOption();
        var threads = ThreadsOption();
        threads.Description = "CPU worker threads (default: WTE_THREADS, else all cores for edits and all but one for predictions: one core is left to the HTTP work)";
        var command = new Command("serve", "Serve a model over HTTP: predictions (micro-batched) and live edits, journaled and revertible.")
        {
            model, hypernet, journal, urls, tokenFile, maxBatch, batchDelay, device, threads,
        };
        command.SetAction(parse =>
        {
            string? token = null;
            if (parse.GetValue(tokenFile) is { } f)
            {
                if (!File.Exists(f)) throw new ArgumentException($"--token-file {f}: no such file");
                token = File.ReadAllText(f).Trim();
                if (token.Length == 0) throw new ArgumentException($"--token-file {f}: the file is empty");
            }
            else if (Environment.GetEnvironmentVariable("WTE_TOKEN") is { Length: > 0 } env) token = env.Trim();
            int batch = parse.GetValue(maxBatch);
            if (batch < 1 || batch > 4096) throw new ArgumentException($"--max-batch {batch}: must be in 1..4096");
            double delay = parse.GetValue(batchDelay);
            if (!(delay >= 0 && delay <= 1000)) throw new ArgumentException($"--batch-delay-ms {delay.ToString(CultureInfo.InvariantCulture)}: must be in 0..1000");
            var options = new ServeOptions
            {
                ModelPath = parse.GetValue(model)!, HypernetPath = parse.GetValue(hypernet), JournalPath = parse.GetValue(journal),
                Urls = parse.GetValue(urls)!, Token = token, Threads = parse.GetValue(threads), Device = parse.GetValue(device)!,
                MaxBatch = batch, MaxBatchDelay = TimeSpan.FromMilliseconds(delay),
            };
            WteServer.Run(options, io.Out, json: io.Json(parse));
            return 0;
        });
        return command;
    }
}

using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using OpenQA.Selenium;
using OpenQA.Selenium.Chrome;
using WhereToEdit.Server;
using Xunit;
using Xunit.Abstractions;

namespace WhereToEdit.Tests.Serving;

/// <summary>
/// The page at GET / in a real browser: Debian's chromium driven by its chromedriver (nothing downloaded), headless.
/// Upload an image, see the top-5, choose the right label, edit, see before/after and the units, revert; screenshots
/// land next to the test assembly (serve-page-edited.png, serve-page-reverted.png).
/// </summary>
public sealed class ServeBrowserTests(ITestOutputHelper output)
{
    private const string Chromium = "/usr/bin/chromium", Chromedriver = "/usr/bin/chromedriver";

    private static void WaitFor(Func<bool> condition, string what, int seconds = 180)
    {
        var end = DateTime.UtcNow.AddSeconds(seconds);
        while (DateTime.UtcNow < end)
        {
            try { if (condition()) return; }
            catch (NoSuchElementException) { }
            catch (StaleElementReferenceException) { }
            Thread.Sleep(100);
        }
        throw new TimeoutException($"the page did not show {what} within {seconds} s");
    }

    [SkippableFact]
    public async Task The_page_predicts_edits_and_reverts_in_chromium()
    {
        Skip.IfNot(File.Exists(Chromium) && File.Exists(Chromedriver), "needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)");
        string folder = Directory.CreateTempSubdirectory("wte-browser-").FullName;
        var app = WteServer.Build(new ServeOptions
        {
            ModelPath = ServeAssets.Model, HypernetPath = ServeAssets.Hypernet, JournalPath = Path.Combine(folder, "journal"),
            Urls = "http://127.0.0.1:0", Threads = 1,
        });
        await app.StartAsync();
        try
        {
            string url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            var service = ChromeDriverService.CreateDefaultService(Path.GetDirectoryName(Chromedriver)!, Path.GetFileName(Chromedriver));
            service.SuppressInitialDiagnosticInformation = true;
            var options = new ChromeOptions { BinaryLocation = Chromium };
            options.AddArguments("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1100,1000", $"--user-data-dir={Path.Combine(folder, "chromium")}");
            using var driver = new ChromeDriver(service, options, TimeSpan.FromSeconds(180));
            driver.Navigate().GoToUrl(url);
            WaitFor(() => driver.FindElements(By.CssSelector("#label option")).Count == 10, "the 10 labels");

            driver.FindElement(By.Id("file")).SendKeys(ServeAssets.Failure);
            IReadOnlyList<IWebElement> Rows(string table) => driver.FindElements(By.CssSelector($"#{table} tbody tr"));
            WaitFor(() => Rows("top").Count == 5, "the top-5");
            Assert.Equal("Dress", Rows("top")[0].FindElements(By.TagName("td"))[1].Text);   // the model's mistake

            driver.FindElement(By.CssSelector("#label option[value='0']")).Click();
            var keep = driver.FindElement(By.Id("keep"));
            keep.Clear();
            keep.SendKeys("0.25");
            var lr = driver.FindElement(By.Id("lr"));
            lr.Clear();
            lr.SendKeys(ServeAssets.Lr);
            driver.FindElement(By.Id("edit-btn")).Click();
            WaitFor(() => driver.FindElements(By.Id("edit-id")).Count == 1 || driver.FindElement(By.Id("edit-error")).Text.Length > 0, "the edit's result");
            Assert.Equal("", driver.FindElement(By.Id("edit-error")).Text);
            Assert.Equal("e1", driver.FindElement(By.Id("edit-id")).Text);
            double P(string id) => double.Parse(driver.FindElement(By.Id(id)).Text.Replace(" %", ""), System.Globalization.CultureInfo.InvariantCulture);
            Assert.True(P("p-after") > 50 && P("p-before") < 50, $"p(label) {P("p-before")} → {P("p-after")}");
            Assert.True(int.Parse(driver.FindElement(By.Id("units")).Text, System.Globalization.CultureInfo.InvariantCulture) > 0);
            WaitFor(() => Rows("top")[0].FindElements(By.TagName("td"))[1].Text == "T-shirt/top", "the fixed prediction");
            WaitFor(() => Rows("edits").Count == 1, "the edit in the list");
            Assert.Equal("1", driver.FindElement(By.Id("version")).Text);
            string edited = Path.Combine(AppContext.BaseDirectory, "serve-page-edited.png");
            driver.GetScreenshot().SaveAsFile(edited);

            Rows("edits")[0].FindElement(By.ClassName("revert")).Click();
            WaitFor(() => Rows("edits").Count == 0 && driver.FindElement(By.Id("version")).Text == "2", "the revert");
            WaitFor(() => Rows("top").Count == 5 && Rows("top")[0].FindElements(By.TagName("td"))[1].Text == "Dress", "the original prediction again");
            string reverted = Path.Combine(AppContext.BaseDirectory, "serve-page-reverted.png");
            driver.GetScreenshot().SaveAsFile(reverted);

            using var http = new HttpClient { BaseAddress = new Uri(url) };
            var model = JsonNode.Parse(await http.GetStringAsync("/v1/model"))!;
            Assert.Equal(model["base_fingerprint"]!.GetValue<string>(), model["fingerprint"]!.GetValue<string>());
            foreach (string png in new[] { edited, reverted })
                Assert.Equal([0x89, 0x50, 0x4E, 0x47], File.ReadAllBytes(png)[..4]);
            output.WriteLine($"screenshots: {edited}, {reverted}");
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
            Directory.Delete(folder, true);
        }
    }
}

namespace WhereToEdit.Server;

/// <summary>The page at GET /: one embedded HTML file (inline script and style), no build step.</summary>
internal static class WebPage
{
    public static readonly string Html = Load();

    private static string Load()
    {
        using var s = typeof(WebPage).Assembly.GetManifestResourceStream("WhereToEdit.Server.wwwroot.index.html")
                      ?? throw new InvalidOperationException("the embedded page wwwroot/index.html is missing from the build");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }
}

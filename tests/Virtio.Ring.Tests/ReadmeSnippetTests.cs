using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.RegularExpressions;

namespace Virtio.Ring.Tests;

/// <summary>
/// The README's embedding snippets are copies of regions of samples/Virtio.RngDevice, which CI builds and runs.
/// Each block follows a marker <c>&lt;!-- snippet: PATH#NAME --&gt;</c> and must equal the lines between
/// <c>// &lt;NAME&gt;</c> and <c>// &lt;/NAME&gt;</c> in PATH (common indentation removed), so the README cannot
/// drift from code that compiles.
/// </summary>
public partial class ReadmeSnippetTests
{
    [Fact]
    public void Every_README_snippet_matches_the_sample_it_was_taken_from()
    {
        string root = RepositoryRoot();
        string readme = File.ReadAllText(Path.Combine(root, "README.md"));
        MatchCollection snippets = SnippetPattern().Matches(readme);
        Assert.True(snippets.Count >= 4, "the README's embedding section shows the device, the VMM, the guest and a live update");
        foreach (Match snippet in snippets)
        {
            string path = snippet.Groups["path"].Value;
            string name = snippet.Groups["name"].Value;
            string expected = Region(File.ReadAllText(Path.Combine(root, path)), name);
            Assert.True(expected == Normalize(snippet.Groups["code"].Value), $"README block for {path}#{name} differs from the sample:\n{expected}");
        }
    }

    [Fact]
    public void Every_csharp_block_in_the_README_is_a_checked_snippet()
    {
        string readme = File.ReadAllText(Path.Combine(RepositoryRoot(), "README.md"));
        int blocks = Regex.Count(readme, "^```csharp", RegexOptions.Multiline);
        Assert.Equal(SnippetPattern().Count(readme), blocks);
    }

    private static string Region(string source, string name)
    {
        string[] lines = source.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        int start = Array.FindIndex(lines, l => l.Trim() == $"// <{name}>");
        int end = Array.FindIndex(lines, l => l.Trim() == $"// </{name}>");
        Assert.True(start >= 0 && end > start, $"region {name} not found");
        return Normalize(string.Join('\n', lines[(start + 1)..end]));
    }

    private static string Normalize(string code)
    {
        List<string> lines = code.Replace("\r\n", "\n", StringComparison.Ordinal).TrimEnd('\n').Split('\n').Select(l => l.TrimEnd()).ToList();
        int indent = lines.Where(l => l.Length > 0).Select(l => l.Length - l.TrimStart().Length).DefaultIfEmpty(0).Min();
        return string.Join('\n', lines.Select(l => l.Length >= indent ? l[indent..] : l));
    }

    private static string RepositoryRoot()
    {
        string dir = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(dir, "Perf.sln")))
        {
            dir = Path.GetDirectoryName(dir) ?? throw new InvalidOperationException("Perf.sln not found above the tests");
        }

        return dir;
    }

    [GeneratedRegex(@"<!-- snippet: (?<path>[^#\s]+)#(?<name>[\w-]+) -->\n```csharp\n(?<code>.*?)\n```", RegexOptions.Singleline)]
    private static partial Regex SnippetPattern();
}

using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using Spectre.Console;

namespace Virtio.Migration;

/// <summary>The final tables.</summary>
internal static class Report
{
    public static void Migrations(MigrationOptions options, IReadOnlyList<MigrationResult> results)
    {
        AnsiConsole.MarkupLine(
            $"[bold]Guest[/] {Size(options.GuestBytes)}, {options.AllocatedFraction:P0} allocated (fragmentation {options.Fragmentation}), " +
            $"workload {options.WorkloadPagesPerSecond:N0} pages/s, seed {options.Seed}; hint order {options.HintOrder}, " +
            $"{results[0].Protocol}, {results[0].Ring} ring of {options.QueueSize}; destination {(options.Destination?.ToString() ?? "in-process, TCP loopback")}");

        var summary = new Table().Border(TableBorder.Rounded).Title("Migration");
        summary.AddColumn("");
        foreach (MigrationResult r in results)
        {
            summary.AddColumn(new TableColumn(r.Hints ? "with hints" : "without hints").RightAligned());
        }

        Row(summary, results, "precopy rounds", r => r.Rounds.Count.ToString(CultureInfo.InvariantCulture));
        Row(summary, results, "pages sent", r => r.PagesSent.ToString("N0", CultureInfo.InvariantCulture));
        Row(summary, results, "bytes sent (socket)", r => Size((ulong)r.BytesSent));
        Row(summary, results, "  / allocated pages", r => $"{r.BytesSent / (r.AllocatedPagesAtEnd * 4096.0):0.000} x");
        Row(summary, results, "stop-and-copy", r => $"{r.StopAndCopyPages:N0} pages, {Size((ulong)r.StopAndCopyBytes)}");
        Row(summary, results, "downtime", r => $"{r.DowntimeMilliseconds:0.0} ms");
        Row(summary, results, "total time", r => $"{r.TotalMilliseconds:0} ms");
        Row(summary, results, "pages hinted", r => r.HintedPages.ToString("N0", CultureInfo.InvariantCulture));
        if (results.Count == 2)
        {
            long skipped = results[0].PagesSent - results[1].PagesSent;
            Row(summary, results, "pages not sent thanks to hints", r => r.Hints ? skipped.ToString("N0", CultureInfo.InvariantCulture) : "-");
        }

        Row(summary, results, "hint reports", r => r.HintReports.ToString(CultureInfo.InvariantCulture));
        Row(summary, results, "hints per second", r => r.Hints ? $"{r.HintsPerSecond:N0}" : "-");
        Row(summary, results, "report latency (mean)", r => r.Hints ? $"{r.ReportLatencyMilliseconds:0.000} ms" : "-");
        Row(summary, results, "workload pages written", r => r.WorkloadPagesWritten.ToString("N0", CultureInfo.InvariantCulture));
        Row(summary, results, "pages verified", r => $"{r.PagesVerified:N0} of {r.AllocatedPagesAtEnd:N0}");
        Row(summary, results, "balloon device", r => r.DeviceFault is null ? "healthy" : $"[red]{Markup.Escape(r.DeviceFault)}[/]");
        Row(summary, results, "integrity", r => r.IntegrityOk ? "[green]identical[/]" : $"[red]{r.Mismatches:N0} pages differ (first: {r.FirstMismatch})[/]");
        AnsiConsole.Write(summary);

        foreach (MigrationResult r in results)
        {
            var rounds = new Table().Border(TableBorder.Simple).Title(r.Hints ? "Rounds, with hints" : "Rounds, without hints");
            foreach (string column in new[] { "round", "pages sent", "bytes", "time", "hinted", "dirtied", "left" })
            {
                rounds.AddColumn(new TableColumn(column).RightAligned());
            }

            foreach (RoundResult round in r.Rounds)
            {
                rounds.AddRow(round.Round.ToString(CultureInfo.InvariantCulture), round.PagesSent.ToString("N0", CultureInfo.InvariantCulture), Size((ulong)round.BytesSent),
                    $"{round.Milliseconds:0.0} ms", round.HintedPages.ToString("N0", CultureInfo.InvariantCulture),
                    round.DirtiedPages.ToString("N0", CultureInfo.InvariantCulture), round.RemainingPages.ToString("N0", CultureInfo.InvariantCulture));
            }

            AnsiConsole.Write(rounds);
        }
    }

    public static void Sparse(SparseResult r)
    {
        var table = new Table().Border(TableBorder.Rounded).Title("Free page hint reports, sparse guest (hint path only)");
        table.AddColumn("");
        table.AddColumn(new TableColumn("value").RightAligned());
        table.AddRow("guest", Size(r.GuestBytes));
        table.AddRow("protocol, order", $"{r.Protocol}, {r.HintOrder} ({Size(4096UL << r.HintOrder)} blocks)");
        table.AddRow("allocated pages", r.AllocatedPages.ToString("N0", CultureInfo.InvariantCulture));
        table.AddRow("blocks per report", r.BlocksPerReport.ToString("N0", CultureInfo.InvariantCulture));
        table.AddRow("pages hinted per report", r.PagesPerReport.ToString("N0", CultureInfo.InvariantCulture));
        table.AddRow("pages left marked after the first report", r.MarkedAfterFirstReport.ToString("N0", CultureInfo.InvariantCulture));
        table.AddRow($"report, command id to STOP (median of {r.Reports})", $"{r.MedianMilliseconds:0.000} ms");
        table.AddRow("report, best", $"{r.BestMilliseconds:0.000} ms");
        table.AddRow("hints per second (median)", $"{r.HintsPerSecond:N0}");
        AnsiConsole.Write(table);
    }

    private static void Row(Table table, IReadOnlyList<MigrationResult> results, string name, System.Func<MigrationResult, string> value) =>
        table.AddRow(new[] { name }.Concat(results.Select(value)).ToArray());

    private static string Size(ulong bytes) => bytes switch
    {
        >= 1UL << 40 => $"{bytes / (double)(1UL << 40):0.##} TiB",
        >= 1UL << 30 => $"{bytes / (double)(1UL << 30):0.##} GiB",
        >= 1UL << 20 => $"{bytes / (double)(1UL << 20):0.##} MiB",
        _ => $"{bytes / 1024.0:0.##} KiB",
    };
}

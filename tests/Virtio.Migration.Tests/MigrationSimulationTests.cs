using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Virtio.Balloon.Hints;
using Virtio.Ring;

namespace Virtio.Migration.Tests;

/// <summary>
/// The live-migration simulation end to end: with the workload writing while the guest migrates, every page the
/// guest had allocated arrives intact, whatever the protocol and ring; and the integrity check is proven able to
/// fail: the deliberately wrong ordering (hints applied after the next dirty-log sync) is caught.
/// </summary>
public sealed class MigrationSimulationTests
{
    private static MigrationOptions Busy(int seed) => new()
    {
        GuestBytes = 128UL << 20,
        WorkloadPagesPerSecond = 50_000,
        FixedRounds = 5,
        MaxBandwidth = 256L << 20, // rounds long enough for the guest to report and reuse hinted blocks within them
        Seed = seed,
    };

    [Theory]
    [InlineData(FreePageHintProtocol.HintArrays, VirtqueueFormat.Split, 10)]
    [InlineData(FreePageHintProtocol.HintArrays, VirtqueueFormat.Packed, 0)]
    [InlineData(FreePageHintProtocol.Standard, VirtqueueFormat.Split, 0)]
    [InlineData(FreePageHintProtocol.Standard, VirtqueueFormat.Packed, 10)]
    public void With_the_workload_running_every_allocated_page_arrives_intact(FreePageHintProtocol protocol, VirtqueueFormat ring, int order)
    {
        MigrationOptions options = Busy(seed: 1) with { Protocol = protocol, Ring = ring, HintOrder = order };
        MigrationResult result = MigrationRunner.Run(options, withHints: true);

        Assert.Null(result.DeviceFault);
        Assert.True(result.IntegrityOk, $"{result.Mismatches} pages differ, first {result.FirstMismatch}");
        Assert.Equal(result.AllocatedPagesAtEnd, result.PagesVerified);
        Assert.Equal(result.BytesSent, result.BytesReceived);
        Assert.Equal(5, result.Rounds.Count);
        Assert.True(result.HintReports >= 1, "the guest answered at least one request (how many depends on timing)");
        Assert.True(result.HintedPages > 0);
        Assert.True(result.WorkloadPagesWritten > 1000, "the guest was busy while it migrated");
        Assert.Equal(0, result.HintedPagesHeldAfterDone);
    }

    [Fact]
    public void Without_hints_the_same_scenario_also_arrives_intact_and_sends_more()
    {
        MigrationOptions options = Busy(seed: 2) with { GuestBytes = 512UL << 20, WorkloadPagesPerSecond = 0, FixedRounds = 2, HintOrder = 0, MaxBandwidth = 0 };
        MigrationResult without = MigrationRunner.Run(options, withHints: false);
        MigrationResult with = MigrationRunner.Run(options, withHints: true);

        Assert.True(without.IntegrityOk && with.IntegrityOk);
        Assert.True(without.PagesSent >= (long)options.GuestPages, "the first round sends all of RAM");
        Assert.True(with.BytesSent < without.BytesSent / 2);
        // Near the lower bound (the allocated pages); what is above it is what round 1 sent before the hints landed.
        // The 1.05x target is measured on a 4 GiB guest (docs/PERFORMANCE.md), where that head start is amortised.
        Assert.True(with.BytesSent <= 1.15 * with.AllocatedPagesAtEnd * 4096, $"{with.BytesSent / (with.AllocatedPagesAtEnd * 4096.0):0.000}x the allocated pages");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Applying_hints_after_the_next_sync_is_caught_by_the_integrity_check(int seed)
    {
        // Order-0 hints cover every free page, so the workload's every new allocation lands on a page hinted this round.
        MigrationOptions options = Busy(seed) with { UnsafeApplyHintsAfterSync = true, HintOrder = 0 };
        MigrationResult result = MigrationRunner.Run(options, withHints: true);

        Assert.False(result.IntegrityOk, "the wrong ordering loses pages, and the check must see it");
        Assert.True(result.Mismatches > 0);
    }

    /// <summary>The destination as its own process (--listen), the source connecting to it (--destination).</summary>
    [Fact]
    public void The_destination_can_be_its_own_process()
    {
        int port = FreePort();
        string program = typeof(MigrationRunner).Assembly.Location;
        var start = new ProcessStartInfo("dotnet", $"\"{program}\" --listen 127.0.0.1:{port}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using Process destination = Process.Start(start)!;
        try
        {
            string? line = destination.StandardOutput.ReadLine();
            Assert.Contains("listening", line ?? destination.StandardError.ReadToEnd());
            MigrationOptions options = Busy(seed: 4) with { FixedRounds = 2, Destination = new IPEndPoint(IPAddress.Loopback, port) };
            MigrationResult result = MigrationRunner.Run(options, withHints: true);
            Assert.True(result.IntegrityOk);
            Assert.Equal(result.BytesSent, result.BytesReceived);
        }
        finally
        {
            destination.Kill(entireProcessTree: true);
            destination.WaitForExit(10_000);
        }
    }

    [Fact]
    public void A_sparse_guest_runs_the_hint_path_only()
    {
        var options = new MigrationOptions { GuestBytes = 64UL << 30, AllocatedFraction = 0.25, Fragmentation = 0.5, WorkloadPagesPerSecond = 0 };
        SparseResult result = SparseHintRun.Run(options, reports: 2);
        Assert.True(result.BlocksPerReport > 0);
        Assert.Equal(result.BlocksPerReport * 1024, result.PagesPerReport);
        Assert.Equal((long)options.GuestPages - result.PagesPerReport, result.MarkedAfterFirstReport); // what was not hinted stays marked
    }

    private static int FreePort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }
}

using System;
using System.Diagnostics;
using System.Text.Json.Nodes;
using System.Threading;
using Virtio.Balloon;
using Virtio.Balloon.Driver;
using Virtio.Balloon.Hints;
using Virtio.Interop.Qemu;
using Virtio.Ring;
using Xunit.Abstractions;

namespace Virtio.Interop.Tests;

/// <summary>
/// Free page hinting during a real QEMU migration: QEMU's balloon requests hints at each bitmap sync (a new command
/// id), our driver (the VIRTIO 1.2 protocol, as QEMU speaks it) reports its allocator's free blocks, QEMU skips
/// them, and DONE at the end gives the blocks back. The same migration without hinting sends them.
/// </summary>
public sealed class QemuMigrationHintTests(ITestOutputHelper output)
{
    private const ulong Ram = 256UL << 20;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void QEMU_skips_the_pages_our_driver_hints_during_a_migration(bool packed)
    {
        (long withHints, long heldAfter, long reports) = Migrate(packed, hints: true, output.WriteLine);
        (long without, _, _) = Migrate(packed, hints: false, output.WriteLine);
        output.WriteLine($"normal pages sent: {without} without hints, {withHints} with; {reports} reports");
        Assert.True(reports >= 1, "our driver answered QEMU's command id");
        Assert.True(without - withHints > (128L << 20) / 4096, $"hints kept QEMU from sending our free pages ({without} -> {withHints})");
        Assert.Equal(0, heldAfter); // DONE gave the blocks back
    }

    private static (long NormalPages, long HeldAfterDone, long Reports) Migrate(bool packed, bool hints, Action<string>? output = null)
    {
        using var rig = new QemuBalloonRig(new QemuBalloonOptions { MemoryBytes = Ram, Packed = packed }, new BalloonDriverOptions
        {
            RingFormat = packed ? VirtqueueFormat.Packed : VirtqueueFormat.Split,
            Numbering = BalloonQueueNumbering.Qemu,
            WantedFeatures = hints ? BalloonFeatureBits.All : BalloonFeatureBits.All & ~(1UL << BalloonFeatureBits.FreePageHint),
            HintProtocol = FreePageHintProtocol.Standard,
            Timeout = TimeSpan.FromSeconds(10),
        });

        // A guest whose free memory is not zero (QEMU sends zero pages almost for free): fill what our allocator owns.
        rig.Machine.Memory.TryGetSpan(QemuBalloonRig.AllocatorStartPfn << 12, (int)(Ram - (QemuBalloonRig.AllocatorStartPfn << 12)), out Span<byte> ram);
        ram.Fill(0x77);
        Assert.True(rig.Driver.Initialize(), rig.Machine.StandardError);

        using var stop = new CancellationTokenSource();
        var guest = new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                rig.Driver.WaitForInterrupt(TimeSpan.FromMilliseconds(10));
                rig.Driver.Poll();
            }
        })
        { IsBackground = true, Name = "guest balloon" };
        guest.Start();
        try
        {
            rig.Machine.Qmp.Execute("migrate-set-parameters", new JsonObject { ["max-bandwidth"] = 64L << 20 });
            rig.Machine.Qmp.Execute("migrate", new JsonObject { ["uri"] = "exec:cat > /dev/null" });
            JsonNode? info = null;
            var clock = Stopwatch.StartNew();
            SpinWait.SpinUntil(() =>
            {
                info = rig.Machine.Qmp.Execute("query-migrate");
                string? status = info?["status"]?.GetValue<string>();
                return status is "completed" or "failed";
            }, TimeSpan.FromSeconds(60));
            Assert.Equal("completed", info?["status"]?.GetValue<string>());
            long normal = info!["ram"]!["normal"]!.GetValue<long>();
            if (hints)
            {
                SpinWait.SpinUntil(() => rig.Driver.HintedPagesHeld == 0, TimeSpan.FromSeconds(10));
            }

            output?.Invoke($"hints {hints}: migrated in {clock.ElapsedMilliseconds} ms, {normal} normal pages, {rig.Driver.FreePageHintReports} reports, {rig.Driver.LastReportBlocks} blocks in the last");
            return (normal, rig.Driver.HintedPagesHeld, rig.Driver.FreePageHintReports);
        }
        finally
        {
            stop.Cancel();
            guest.Join(TimeSpan.FromSeconds(10));
        }
    }
}

/// <summary>Free page hinting against our device over qtest, in its own process, driven through its control socket.</summary>
public sealed class OurServerHintTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Our_device_over_qtest_takes_the_hints_and_DONE_gives_the_blocks_back(bool packed)
    {
        using var rig = new QemuBalloonRig(BalloonPeer.Ours, new QemuBalloonOptions { MemoryBytes = 256UL << 20, Packed = packed }, new BalloonDriverOptions
        {
            RingFormat = packed ? VirtqueueFormat.Packed : VirtqueueFormat.Split,
            Numbering = BalloonQueueNumbering.Qemu,
            HintProtocol = FreePageHintProtocol.Standard,
            Timeout = TimeSpan.FromSeconds(10),
        });
        Assert.True(rig.Driver.Initialize(), rig.Machine.StandardError);
        long freeBlocks = rig.Allocator.FreeBlocks(10);

        uint id = rig.Machine.Qmp.Execute("x-free-page-hint-request")!["id"]!.GetValue<uint>();
        Assert.True(id >= FreePageHintCommand.FirstReportId);
        JsonNode? state = null;
        rig.PollUntil(() =>
        {
            state = rig.Machine.Qmp.Execute("x-query-free-page-hints");
            return state?["status"]?.GetValue<string>() == "stopped"; // the driver's STOP arrived
        });
        Assert.Equal(freeBlocks, state!["hint-blocks"]!.GetValue<long>());
        Assert.Equal(freeBlocks << 10, state["hinted-pages"]!.GetValue<long>());
        Assert.Equal(freeBlocks << 10, rig.Allocator.IsolatedPages); // held until DONE

        rig.Machine.Qmp.Execute("x-free-page-hint-done");
        rig.PollUntil(() => rig.Allocator.IsolatedPages == 0);
        Assert.Equal(freeBlocks, rig.Allocator.FreeBlocks(10));
        var error = Assert.Throws<Virtio.Interop.Qmp.QmpException>(() => rig.Machine.Qmp.Execute("no-such-command"));
        Assert.Equal("CommandNotFound", error.ErrorClass);
    }
}

/// <summary>Our qtest server answers as QEMU's does, and refuses what QEMU would abort on without going down.</summary>
public sealed class OurQtestServerTests
{
    [Theory]
    [InlineData(BalloonPeer.Qemu)]
    [InlineData(BalloonPeer.Ours)]
    public void The_layout_and_replies_match_QEMUs_microvm(BalloonPeer peer)
    {
        using var rig = new QemuBalloonRig(peer, new QemuBalloonOptions { MemoryBytes = 64UL << 20 });
        Virtio.Interop.Qtest.QtestClient qtest = rig.Machine.Qtest;
        for (int i = 0; i < 8; i++)
        {
            ulong at = QtestMachine.MmioBase + ((ulong)i * QtestMachine.MmioStride);
            Assert.Equal(0x74726976UL, qtest.ReadValue(at, 4));
            Assert.Equal(2UL, qtest.ReadValue(at + 4, 4));
            Assert.Equal(i == 7 ? 5UL : 0UL, qtest.ReadValue(at + 8, 4));
        }

        Assert.Equal(0UL, qtest.ReadValue(QtestMachine.MmioBase + (8 * QtestMachine.MmioStride), 4)); // no ninth transport
        qtest.Write(0x2000, [1, 2, 3, 4]);
        Span<byte> back = stackalloc byte[4];
        qtest.Read(0x2000, back);
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, back.ToArray());
        Assert.Equal(0x04030201UL, qtest.ReadValue(0x2000, 4));
        var unknown = Assert.Throws<Virtio.Interop.Qtest.QtestException>(() => qtest.Command("bogus 1"));
        Assert.Equal("FAIL Unknown command 'bogus'", unknown.Reply);
    }

    [Fact]
    public void Malformed_lines_get_ERR_and_the_server_carries_on()
    {
        using var rig = new QemuBalloonRig(BalloonPeer.Ours, new QemuBalloonOptions { MemoryBytes = 64UL << 20 });
        Virtio.Interop.Qtest.QtestClient qtest = rig.Machine.Qtest;
        foreach (string line in new[] { "readl 0xZZ", "writel 0x1000", "write 0x1000 0x4 0x0102", "read 0x1000 0x99999999", "readl -1" })
        {
            var error = Assert.Throws<Virtio.Interop.Qtest.QtestException>(() => qtest.Command(line));
            Assert.StartsWith(error.Reply.StartsWith("ERR", StringComparison.Ordinal) ? "ERR" : "FAIL", error.Reply);
        }

        Assert.Equal(0x74726976UL, qtest.ReadValue(QtestMachine.MmioBase, 4)); // still serving
    }
}

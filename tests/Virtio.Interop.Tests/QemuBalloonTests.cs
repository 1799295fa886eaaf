using System;
using System.Linq;
using System.Text.Json.Nodes;
using Virtio.Balloon;
using Virtio.Interop.Qemu;
using Virtio.Ring;

namespace Virtio.Interop.Tests;

/// <summary>
/// Our balloon driver against QEMU 7.2's own virtio-balloon device, and the same tests against our device served
/// over the same qtest protocol in its own process (samples/Virtio.BalloonServer), through qtest and QMP, both ring
/// formats.
/// </summary>
public sealed class QemuBalloonTests
{
    private const ulong Ram = 256UL << 20;

    public static TheoryData<BalloonPeer, bool> PeersAndRings()
    {
        var data = new TheoryData<BalloonPeer, bool>();
        foreach (BalloonPeer peer in new[] { BalloonPeer.Qemu, BalloonPeer.Ours })
        {
            data.Add(peer, false);
            data.Add(peer, true);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(PeersAndRings))]
    public void Our_driver_negotiates_with_QEMUs_balloon_and_numbers_the_queues_as_QEMU_does(BalloonPeer peer, bool packed)
    {
        using var rig = new QemuBalloonRig(peer, new QemuBalloonOptions { MemoryBytes = Ram, Packed = packed });
        Assert.True(rig.Driver.Initialize(), rig.Machine.StandardError);
        ulong features = rig.Driver.NegotiatedFeatures;
        Assert.True((features & (1UL << VirtioFeatureBits.Version1)) != 0);
        Assert.Equal(packed, (features & (1UL << VirtioFeatureBits.RingPacked)) != 0);
        foreach (int bit in new[] { BalloonFeatureBits.StatsVq, BalloonFeatureBits.DeflateOnOom, BalloonFeatureBits.FreePageHint, BalloonFeatureBits.PageReporting })
        {
            Assert.True(rig.Driver.Has(bit), $"QEMU offered and we took balloon feature {bit}");
        }

        // QEMU's numbering: 0 inflate, 1 deflate, 2 stats, 3 free page hints, 4 reporting.
        Assert.Equal(new BalloonQueueLayout(0, 1, 2, 3, 4), rig.Driver.Layout);
    }

    [Theory]
    [MemberData(nameof(PeersAndRings))]
    public void Inflate_and_deflate_are_seen_by_QEMU_and_inflated_pages_leave_the_shared_file(BalloonPeer peer, bool packed)
    {
        using var rig = new QemuBalloonRig(peer, new QemuBalloonOptions { MemoryBytes = Ram, Packed = packed });

        // Make the pages the balloon will take resident in the shared file, so QEMU's hole punch shows (before the
        // driver sets up its rings there).
        rig.Machine.Memory.TryGetSpan(QemuBalloonRig.AllocatorStartPfn << 12, 64 << 20, out Span<byte> low);
        low.Fill(0x5A);
        Assert.True(rig.Driver.Initialize(), rig.Machine.StandardError);
        string file = rig.Machine.SharedMemoryPath;
        long blocksBefore = QemuBalloonRig.FileBlocks(file);

        rig.Machine.Qmp.Execute("balloon", new JsonObject { ["value"] = (long)(Ram - (48UL << 20)) }); // 48 MiB into the balloon
        rig.PollUntil(() => rig.Driver.BalloonPages == 12288);
        Assert.Equal(Ram - (48UL << 20), Actual(rig));
        long blocksAfter = QemuBalloonRig.FileBlocks(file);
        Assert.True(blocksBefore - blocksAfter >= (48L << 20) / 512 * 9 / 10, $"QEMU released the pages: {blocksBefore} -> {blocksAfter} blocks");

        // QEMU rate-limits BALLOON_CHANGE (one a second), so the last value may come late: read events until it does.
        long expected = (long)(Ram - (48UL << 20));
        rig.PollUntil(() =>
        {
            rig.Machine.Qmp.Execute("query-balloon");
            return rig.Machine.Qmp.Events.Any(e => e["event"]?.GetValue<string>() == "BALLOON_CHANGE" && e["data"]?["actual"]?.GetValue<long>() == expected);
        }, TimeSpan.FromSeconds(5));

        rig.Machine.Qmp.Execute("balloon", new JsonObject { ["value"] = (long)Ram });
        rig.PollUntil(() => rig.Driver.BalloonPages == 0);
        Assert.Equal(Ram, Actual(rig));
        rig.Allocator.CheckInvariants();
    }

    /// <summary>Each feature set QEMU can offer (hinting, reporting, deflate-on-oom switched off one by one): what our driver negotiates and how it numbers the queues.</summary>
    [Theory]
    [InlineData(BalloonPeer.Qemu, true, true, true)]
    [InlineData(BalloonPeer.Qemu, false, true, true)]
    [InlineData(BalloonPeer.Qemu, true, false, true)]
    [InlineData(BalloonPeer.Qemu, true, true, false)]
    [InlineData(BalloonPeer.Qemu, false, false, false)]
    [InlineData(BalloonPeer.Ours, false, true, false)]
    [InlineData(BalloonPeer.Ours, false, false, false)]
    public void Every_feature_set_QEMU_offers_is_negotiated_and_numbered(BalloonPeer peer, bool hint, bool reporting, bool deflate)
    {
        using var rig = new QemuBalloonRig(peer, new QemuBalloonOptions
        {
            MemoryBytes = Ram,
            FreePageHint = hint,
            FreePageReporting = reporting,
            DeflateOnOom = deflate,
        });
        Assert.True(rig.Driver.Initialize(), rig.Machine.StandardError);
        Assert.Equal(hint, rig.Driver.Has(BalloonFeatureBits.FreePageHint));
        Assert.Equal(reporting, rig.Driver.Has(BalloonFeatureBits.PageReporting));
        Assert.Equal(deflate, rig.Driver.Has(BalloonFeatureBits.DeflateOnOom));
        Assert.True(rig.Driver.Has(BalloonFeatureBits.StatsVq), "QEMU always offers the stats queue");
        int next = 3;
        Assert.Equal(new BalloonQueueLayout(0, 1, 2, hint ? next++ : -1, reporting ? next : -1), rig.Driver.Layout);

        // And it works: a small inflate and deflate through whatever queues exist.
        rig.Machine.Qmp.Execute("balloon", new JsonObject { ["value"] = (long)(Ram - (4UL << 20)) });
        rig.PollUntil(() => rig.Driver.BalloonPages == 1024);
        rig.Machine.Qmp.Execute("balloon", new JsonObject { ["value"] = (long)Ram });
        rig.PollUntil(() => rig.Driver.BalloonPages == 0);
    }

    /// <summary>A driver reset mid-life: the host's target survives it, the guest's balloon does not (both peers alike).</summary>
    [Theory]
    [InlineData(BalloonPeer.Qemu)]
    [InlineData(BalloonPeer.Ours)]
    public void After_a_device_reset_the_target_stays_and_the_driver_inflates_again(BalloonPeer peer)
    {
        using var rig = new QemuBalloonRig(peer, new QemuBalloonOptions { MemoryBytes = Ram });
        Assert.True(rig.Driver.Initialize(), rig.Machine.StandardError);
        rig.Machine.Qmp.Execute("balloon", new JsonObject { ["value"] = (long)(Ram - (8UL << 20)) });
        rig.PollUntil(() => rig.Driver.BalloonPages == 2048);

        rig.Driver.Reset(); // the guest's driver goes away: its pages come back to its allocator
        Assert.Equal(0, rig.Driver.BalloonPages);
        Assert.True(rig.Driver.Initialize(), rig.Machine.StandardError);
        Span<byte> numPages = stackalloc byte[4];
        rig.Driver.Mmio.ReadConfig(BalloonConfigLayout.NumPagesOffset, numPages);
        Assert.Equal(2048u, BitConverter.ToUInt32(numPages)); // the host's target survived the reset
        rig.Driver.UpdateBalloonSize();
        Assert.Equal(2048, rig.Driver.BalloonPages);
        Assert.Equal(Ram - (8UL << 20), Actual(rig));
    }

    private static ulong Actual(QemuBalloonRig rig)
    {
        // query-balloon's "actual" is the guest's RAM minus the balloon, in bytes, as QEMU computes it from the config.
        ulong expected = Ram - ((ulong)rig.Driver.BalloonPages << 12);
        System.Threading.SpinWait.SpinUntil(() => rig.Machine.Qmp.Execute("query-balloon")!["actual"]!.GetValue<ulong>() == expected, TimeSpan.FromSeconds(5));
        return rig.Machine.Qmp.Execute("query-balloon")!["actual"]!.GetValue<ulong>();
    }
}

/// <summary>Statistics and free page reporting against QEMU's balloon.</summary>
public sealed class QemuBalloonStatsAndReportingTests
{
    private const ulong Ram = 256UL << 20;
    private const string Balloon = "/machine/peripheral/balloon0";

    [Theory]
    [MemberData(nameof(QemuBalloonTests.PeersAndRings), MemberType = typeof(QemuBalloonTests))]
    public void Statistics_from_our_allocator_show_in_QEMUs_guest_stats(BalloonPeer peer, bool packed)
    {
        using var rig = new QemuBalloonRig(peer, new QemuBalloonOptions { MemoryBytes = Ram, Packed = packed });
        Assert.True(rig.Driver.Initialize(), rig.Machine.StandardError);
        rig.Machine.Qmp.Execute("qom-set", new JsonObject { ["path"] = Balloon, ["property"] = "guest-stats-polling-interval", ["value"] = 1 });
        long taken = 0;
        lock (rig.Allocator.SyncRoot)
        {
            for (int i = 0; i < 100 && rig.Allocator.TryAllocate(8, out _); i++)
            {
                taken += 256; // the stats change, so the next buffer must carry new values
            }
        }

        ulong expectedFree = (ulong)rig.Allocator.FreePages * 4096;
        JsonNode? stats = null;
        rig.PollUntil(() =>
        {
            stats = rig.Machine.Qmp.Execute("qom-get", new JsonObject { ["path"] = Balloon, ["property"] = "guest-stats" });
            return stats?["stats"]?["stat-free-memory"]?.GetValue<long>() == (long)expectedFree;
        }, TimeSpan.FromSeconds(10));
        Assert.Equal((long)(rig.Allocator.TotalPages * 4096), stats!["stats"]!["stat-total-memory"]!.GetValue<long>());
        Assert.True(stats["last-update"]!.GetValue<long>() > 0);
        Assert.True(rig.Driver.StatisticsSent >= 2, "QEMU's timer returned the buffer and the driver refilled it");
        Assert.Equal(25600, taken);
    }

    [Theory]
    [InlineData(BalloonPeer.Qemu, false, 0u)]
    [InlineData(BalloonPeer.Qemu, true, 0u)]
    [InlineData(BalloonPeer.Qemu, false, 0x5A5A5A5Au)]
    [InlineData(BalloonPeer.Ours, false, 0u)]
    [InlineData(BalloonPeer.Ours, true, 0u)]
    [InlineData(BalloonPeer.Ours, false, 0x5A5A5A5Au)]
    public void Reported_free_pages_leave_the_shared_file_unless_the_guest_poisons_them(BalloonPeer peer, bool packed, uint poison)
    {
        using var rig = new QemuBalloonRig(peer, new QemuBalloonOptions { MemoryBytes = Ram, Packed = packed }, new Virtio.Balloon.Driver.BalloonDriverOptions
        {
            RingFormat = packed ? VirtqueueFormat.Packed : VirtqueueFormat.Split,
            Numbering = BalloonQueueNumbering.Qemu,
            PoisonValue = poison,
            Timeout = TimeSpan.FromSeconds(10),
        });
        rig.Machine.Memory.TryGetSpan(QemuBalloonRig.AllocatorStartPfn << 12, 64 << 20, out Span<byte> low);
        low.Fill(0x11); // resident in the shared file
        Assert.True(rig.Driver.Initialize(), rig.Machine.StandardError);
        Assert.True(rig.Driver.Has(BalloonFeatureBits.PageReporting));
        long before = QemuBalloonRig.FileBlocks(rig.Machine.SharedMemoryPath);

        long reported = rig.Driver.ReportFreePages();
        long after = QemuBalloonRig.FileBlocks(rig.Machine.SharedMemoryPath);
        Assert.True(reported > (200L << 20) / 4096, $"{reported} pages reported");
        if (poison == 0)
        {
            Assert.True(before - after >= (56L << 20) / 512, $"QEMU discarded the reported pages: {before} -> {after} blocks");
        }
        else
        {
            Assert.True(rig.Driver.Has(BalloonFeatureBits.PagePoison), "QEMU offers PAGE_POISON");
            Assert.True(before - after < (1L << 20) / 512, $"poisoned pages stay: {before} -> {after} blocks");
            rig.Machine.Memory.TryGetSpan((QemuBalloonRig.AllocatorStartPfn + 2048) << 12, 4096, out Span<byte> page);
            Assert.Equal(0x5A, page[100]); // the poison pattern, kept
        }

        Assert.Equal(0, rig.Allocator.IsolatedPages);
        rig.Allocator.CheckInvariants();
    }
}

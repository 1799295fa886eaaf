using System;
using System.Collections.Generic;
using System.Threading;
using Virtio.Balloon.GuestAllocator;
using Virtio.Balloon.Hints;
using Virtio.Balloon.Migration;
using Virtio.Ring;
using Virtio.Ring.Transport;

namespace Virtio.Balloon.Tests.Hints;

/// <summary>
/// Free page hinting end to end: our driver and our device, both protocols, both ring formats, through the MMIO
/// transport. Every report is checked page by page against the allocator's free lists taken just before it.
/// </summary>
public class FreePageHintEndToEndTests
{
    public static TheoryData<VirtqueueFormat, FreePageHintProtocol> Everything()
    {
        var data = new TheoryData<VirtqueueFormat, FreePageHintProtocol>();
        foreach (VirtqueueFormat f in new[] { VirtqueueFormat.Split, VirtqueueFormat.Packed })
        {
            data.Add(f, FreePageHintProtocol.Standard);
            data.Add(f, FreePageHintProtocol.HintArrays);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Everything))]
    public void Every_free_block_is_hinted_exactly_once_per_report(VirtqueueFormat format, FreePageHintProtocol protocol)
    {
        var sink = new RecordingHintSink();
        using BalloonRig rig = Rig(format, protocol, sink);
        rig.Allocator.Fragment(0.3, 0.5, seed: 7);
        for (int round = 0; round < 3; round++)
        {
            bool[] expected = FreePagesAtOrAbove(rig.Allocator, 10, out long blocks);
            uint id = Report(rig);
            AssertExactlyOnce(expected, sink.RunsOf(id));
            Assert.Equal(blocks, rig.Driver.LastReportBlocks);
            Assert.Equal(FreePageHintStatus.Stopped, rig.Device.FreePageHintStatus); // the driver's STOP arrived
            Finish(rig); // DONE: the standard protocol's blocks go back, so the next report sees the same free lists
        }

        Assert.Equal(0, rig.Device.IgnoredHintBlocks);
        Assert.Equal(0, rig.Allocator.IsolatedPages);
        rig.CheckAccounting();
    }

    [Theory]
    [InlineData(FreePageHintProtocol.HintArrays, 0)]
    [InlineData(FreePageHintProtocol.HintArrays, 3)]
    [InlineData(FreePageHintProtocol.HintArrays, 9)]
    [InlineData(FreePageHintProtocol.Standard, 0)]
    [InlineData(FreePageHintProtocol.Standard, 5)]
    public void Blocks_of_any_order_down_to_zero_are_hinted(FreePageHintProtocol protocol, int order)
    {
        var sink = new RecordingHintSink();
        using BalloonRig rig = Rig(VirtqueueFormat.Split, protocol, sink, order: order);
        rig.Allocator.Fragment(0.4, 0.8, seed: order);
        bool[] expected = FreePagesAtOrAbove(rig.Allocator, order, out long blocks);
        uint id = Report(rig);
        AssertExactlyOnce(expected, sink.RunsOf(id));
        if (protocol == FreePageHintProtocol.HintArrays)
        {
            Assert.Equal(blocks, rig.Driver.LastReportBlocks); // larger blocks are sent as their order-k blocks
            Assert.Equal(blocks, rig.Device.HintBlocks);
        }

        Finish(rig);
        rig.CheckAccounting();
    }

    /// <summary>
    /// The counts the original patch got wrong: no free block at all, a last array exactly full, a partial last
    /// array, and more arrays than ring slots and than the pool holds (the driver waits for used buffers).
    /// </summary>
    [Theory]
    [InlineData(0, 0)]
    [InlineData(512, 1)]
    [InlineData(1024, 2)]
    [InlineData(513, 2)]
    [InlineData(5 * 512 + 17, 6)]
    public void Hint_array_counts_are_exact(int hints, int arrays)
    {
        foreach (VirtqueueFormat format in new[] { VirtqueueFormat.Split, VirtqueueFormat.Packed })
        {
            var sink = new RecordingHintSink();
            using BalloonRig rig = Rig(format, FreePageHintProtocol.HintArrays, sink, order: 0, arrayBytes: 4096, arrays: 2,
                queueSize: 4, guestBytes: 16UL << 20, threading: QueueThreading.WorkerPerQueue);
            LeaveFreePages(rig.Allocator, hints);
            bool[] expected = FreePagesAtOrAbove(rig.Allocator, 0, out long blocks);
            Assert.Equal(hints, blocks);
            long reportsBefore = rig.Device.FreePageHintReports;

            uint id = Report(rig);
            Assert.Equal(hints, rig.Driver.LastReportBlocks);
            Assert.Equal(arrays, rig.Driver.LastReportArrays);
            Assert.Equal(hints, rig.Device.HintBlocks);
            Assert.Equal(reportsBefore + 1, rig.Device.FreePageHintReports);
            AssertExactlyOnce(expected, sink.RunsOf(id));
            Finish(rig);
            Assert.True(SpinWait.SpinUntil(() => { rig.Driver.Poll(); return rig.Driver.FreeHintArrays == 2; }, TimeSpan.FromSeconds(10)),
                "every array came back to the pool");
            rig.CheckAccounting();
        }
    }

    [Theory]
    [MemberData(nameof(Everything))]
    public void A_host_stop_mid_report_ends_it_and_the_next_report_starts_clean(VirtqueueFormat format, FreePageHintProtocol protocol)
    {
        var sink = new RecordingHintSink();
        using BalloonRig rig = Rig(format, protocol, sink, order: 0, arrayBytes: 4096);
        bool[] all = FreePagesAtOrAbove(rig.Allocator, 0, out long total);
        StopOnFirstBatch(rig, sink, newId: false);

        uint first = Report(rig);
        Assert.True(rig.Driver.LastReportBlocks < total, "the driver stopped early");
        Assert.Equal(FreePageHintStatus.Stopped, rig.Device.FreePageHintStatus);
        Assert.True(rig.Device.HintedPages < total);
        sink.OnBatch = null;

        Finish(rig);                               // the blocks the standard protocol took come back
        Assert.Equal(0, rig.Allocator.IsolatedPages);
        uint second = Report(rig);
        Assert.NotEqual(first, second);
        AssertExactlyOnce(all, sink.RunsOf(second));
        Assert.Equal(rig.Driver.HintArrayCount, rig.Driver.FreeHintArrays);
        Finish(rig);
        rig.CheckAccounting();
    }

    [Theory]
    [MemberData(nameof(Everything))]
    public void A_new_id_mid_report_ends_it_and_the_driver_answers_the_new_id(VirtqueueFormat format, FreePageHintProtocol protocol)
    {
        var sink = new RecordingHintSink();
        using BalloonRig rig = Rig(format, protocol, sink, order: 0, arrayBytes: 4096);
        bool[] all = FreePagesAtOrAbove(rig.Allocator, 0, out long total);
        StopOnFirstBatch(rig, sink, newId: true);

        uint first = rig.Device.RequestFreePageHints();
        rig.Driver.Poll();                          // the report of `first`, stopped by the new id
        Assert.True(rig.Driver.LastReportBlocks < total);
        Assert.Equal(FreePageHintStatus.Requested, rig.Device.FreePageHintStatus); // the stale STOP changed nothing
        uint second = rig.Device.FreePageHintCommandId;
        Assert.NotEqual(first, second);
        sink.OnBatch = null;

        rig.Driver.Poll();                          // the pending configuration change: the new id's report
        Assert.Equal(second, rig.Driver.ActiveHintCommandId);
        var seen = new bool[all.Length];
        List<GuestPageRange> firstRuns = sink.RunsOf(first);
        List<GuestPageRange> secondRuns = sink.RunsOf(second);
        if (protocol == FreePageHintProtocol.Standard)
        {
            // The first report's blocks are still held (until DONE), so the second reports exactly the rest. Blocks
            // the driver sent under the first id after the device moved on, before it saw the new id, were ignored
            // (counted) and are held too, as Linux holds them: no page is hinted twice, and every free page is either
            // hinted or one of those ignored order-0 blocks.
            MarkOnce(seen, firstRuns);
            MarkOnce(seen, secondRuns);
            long hinted = 0;
            for (int p = 0; p < all.Length; p++)
            {
                Assert.False(seen[p] && !all[p], $"page {p} was not free");
                hinted += seen[p] ? 1 : 0;
            }

            Assert.Equal(total, hinted + rig.Device.IgnoredHintBlocks);
            Assert.Equal(total, rig.Driver.HintedPagesHeld);
        }
        else
        {
            AssertExactlyOnce(all, secondRuns);
        }

        Finish(rig);
        rig.CheckAccounting();
    }

    [Theory]
    [InlineData(VirtqueueFormat.Split)]
    [InlineData(VirtqueueFormat.Packed)]
    public void Done_gives_the_standard_protocols_blocks_back_to_the_allocator(VirtqueueFormat format)
    {
        var sink = new RecordingHintSink();
        using BalloonRig rig = Rig(format, FreePageHintProtocol.Standard, sink);
        long free = rig.Allocator.FreePages;
        FreePagesAtOrAbove(rig.Allocator, 10, out long blocks);

        Report(rig);
        Assert.Equal(blocks << 10, rig.Allocator.IsolatedPages);       // taken off the free lists, as the spec says
        Assert.Equal(blocks << 10, rig.Driver.HintedPagesHeld);
        Assert.Equal(0, rig.Allocator.FreeBlocks(10));

        rig.Device.FinishFreePageHints();
        Assert.Equal(FreePageHintCommand.Done, ReadCommandId(rig));
        rig.Driver.Poll();
        Assert.Equal(0, rig.Allocator.IsolatedPages);
        Assert.Equal(free, rig.Allocator.FreePages);
        rig.CheckAccounting();
    }

    [Theory]
    [MemberData(nameof(Everything))]
    public void A_reset_after_a_report_gives_everything_back_and_the_driver_starts_over(VirtqueueFormat format, FreePageHintProtocol protocol)
    {
        var sink = new RecordingHintSink();
        using BalloonRig rig = Rig(format, protocol, sink);
        long free = rig.Allocator.FreePages + rig.Driver.OwnPages;
        Report(rig);
        rig.Driver.Reset();
        Assert.Equal(FreePageHintStatus.Idle, rig.Device.FreePageHintStatus);
        Assert.Equal(0, rig.Allocator.IsolatedPages);
        Assert.Equal(free, rig.Allocator.FreePages);
        rig.Allocator.CheckInvariants();

        Assert.True(rig.Driver.Initialize());
        bool[] expected = FreePagesAtOrAbove(rig.Allocator, 10, out _);
        uint id = Report(rig);
        AssertExactlyOnce(expected, sink.RunsOf(id));
        Assert.Equal(rig.Driver.HintArrayCount, rig.Driver.FreeHintArrays);
    }

    /// <summary>The device stops answering mid-report (its serving thread is stuck in the sink): the driver times out, resets, and loses nothing.</summary>
    [Theory]
    [MemberData(nameof(Everything))]
    public void A_reset_during_a_report_returns_every_page(VirtqueueFormat format, FreePageHintProtocol protocol)
    {
        var sink = new RecordingHintSink();
        using var gate = new ManualResetEventSlim(false);
        using BalloonRig rig = Rig(format, protocol, sink, order: 0, arrayBytes: 4096, queueSize: 4,
            threading: QueueThreading.WorkerPerQueue, timeout: TimeSpan.FromMilliseconds(300));
        long free = rig.Allocator.FreePages + rig.Driver.OwnPages;
        sink.OnBatch = batch =>
        {
            if (batch == 0)
            {
                gate.Wait(TimeSpan.FromSeconds(10));
            }
        };
        using var release = new Timer(_ => gate.Set(), null, 1000, Timeout.Infinite);

        rig.Device.RequestFreePageHints();
        rig.Driver.Poll(); // times out waiting for used buffers and resets the device (which waits for the sink)
        Assert.Equal(0L, (long)rig.Device.NegotiatedFeatures);
        Assert.Equal(0, rig.Allocator.IsolatedPages);
        Assert.Equal(free, rig.Allocator.FreePages);
        rig.Allocator.CheckInvariants();
        sink.OnBatch = null;

        Assert.True(rig.Driver.Initialize());
        bool[] expected = FreePagesAtOrAbove(rig.Allocator, 0, out _);
        uint id = Report(rig);
        AssertExactlyOnce(expected, sink.RunsOf(id));
        Finish(rig);
        rig.CheckAccounting();
    }

    [Theory]
    [MemberData(nameof(Everything))]
    public void A_report_in_steady_state_allocates_nothing_on_either_side(VirtqueueFormat format, FreePageHintProtocol protocol)
    {
        var sink = new CountingHintSink();
        using var rig = new BalloonRig(format, guestBytes: 256UL << 20, hintProtocol: protocol, hintSink: sink);
        Assert.Equal(0, SteadyStateAllocation(rig));
        Assert.True(sink.Pages > 0);
    }

    /// <summary>The device's direct path (4 MiB hint arrays cleared straight into a migration bitmap) allocates nothing either.</summary>
    [Theory]
    [InlineData(VirtqueueFormat.Split)]
    [InlineData(VirtqueueFormat.Packed)]
    public void A_report_into_a_migration_bitmap_allocates_nothing(VirtqueueFormat format)
    {
        using var bitmap = new MigrationBitmap(0, (256UL << 20) / 4096);
        using var rig = new BalloonRig(format, guestBytes: 256UL << 20, hintProtocol: FreePageHintProtocol.HintArrays, hintSink: bitmap);
        bitmap.MarkAll();
        Assert.Equal(0, SteadyStateAllocation(rig));
        Assert.True(bitmap.CountMarked() < (256L << 20) / 4096, "hints cleared the bitmap");
    }

    /// <summary>Three warm-up report cycles, then the bytes the fourth allocates on this thread (both sides run on it).</summary>
    private static long SteadyStateAllocation(BalloonRig rig)
    {
        Assert.True(rig.Driver.Initialize());
        rig.Allocator.Fragment(0.25, 0.5, seed: 3);
        for (int i = 0; i < 3; i++)
        {
            Cycle(rig);
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        Cycle(rig);
        return GC.GetAllocatedBytesForCurrentThread() - before;

        static void Cycle(BalloonRig rig)
        {
            rig.Device.RequestFreePageHints();
            rig.Driver.Poll();
            rig.Device.StopFreePageHints();
            rig.Device.FinishFreePageHints();
            rig.Driver.Poll();
        }
    }

    internal static BalloonRig Rig(
        VirtqueueFormat format,
        FreePageHintProtocol protocol,
        IFreePageHintSink sink,
        int order = 10,
        int arrayBytes = 4 << 20,
        int arrays = 2,
        int queueSize = 128,
        ulong guestBytes = 64UL << 20,
        QueueThreading threading = QueueThreading.Inline,
        TimeSpan? timeout = null)
    {
        var rig = new BalloonRig(format, guestBytes: guestBytes, threading: threading, timeout: timeout, hintProtocol: protocol,
            hintOrder: order, hintArrayBytes: arrayBytes, hintArrays: arrays, queueSize: queueSize, hintSink: sink);
        Assert.True(rig.Driver.Initialize());
        return rig;
    }

    /// <summary>Requests a report and lets the guest answer it; returns when the device has the driver's STOP.</summary>
    internal static uint Report(BalloonRig rig)
    {
        uint id = rig.Device.RequestFreePageHints();
        rig.Driver.Poll();
        Assert.Equal(id, rig.Driver.ActiveHintCommandId);
        Assert.True(SpinWait.SpinUntil(() => rig.Device.FreePageHintStatus == FreePageHintStatus.Stopped, TimeSpan.FromSeconds(10)),
            $"the report ended ({rig.Device.FreePageHintStatus})");
        return id;
    }

    private static void Finish(BalloonRig rig)
    {
        rig.Device.FinishFreePageHints();
        rig.Driver.Poll();
    }

    private static uint ReadCommandId(BalloonRig rig)
    {
        Span<byte> id = stackalloc byte[4];
        rig.Driver.Mmio.ReadConfig(BalloonConfigLayout.FreePageHintCommandIdOffset, id);
        return BitConverter.ToUInt32(id);
    }

    /// <summary>
    /// On the sink's first batch, another thread stops the report (or requests a new one); the sink waits until the
    /// state moved and config shows it, so the stop lands mid-report every time and the driver sees it at its next check.
    /// </summary>
    private static void StopOnFirstBatch(BalloonRig rig, RecordingHintSink sink, bool newId)
    {
        sink.OnBatch = batch =>
        {
            if (batch != 0)
            {
                return;
            }

            uint running = rig.Device.FreePageHintCommandId;
            var stopper = new Thread(() =>
            {
                if (newId)
                {
                    rig.Device.RequestFreePageHints();
                }
                else
                {
                    rig.Device.StopFreePageHints();
                }
            });
            stopper.Start();
            // Until the state moved and the driver can see it: the new value in config, whose generation moved with it.
            FreePageHintStatus wanted = newId ? FreePageHintStatus.Requested : FreePageHintStatus.Stopped;
            Assert.True(SpinWait.SpinUntil(
                () => rig.Device.FreePageHintStatus == wanted && ReadCommandId(rig) is uint id && id != running && (newId || id == FreePageHintCommand.Stop),
                TimeSpan.FromSeconds(10)));
        };
    }

    /// <summary>Pages in free blocks of order <paramref name="order"/> and above, and how many order-k blocks they make.</summary>
    internal static bool[] FreePagesAtOrAbove(BuddyAllocator allocator, int order, out long blocks)
    {
        var pages = new bool[allocator.TotalPages];
        blocks = 0;
        Span<ulong> found = stackalloc ulong[64];
        for (int k = order; k <= BuddyAllocator.MaxOrder; k++)
        {
            ulong from = 0;
            int n;
            while ((n = allocator.CopyFreeBlocks(k, from, found, out from)) > 0)
            {
                foreach (ulong pfn in found[..n])
                {
                    for (ulong p = pfn; p < pfn + (1UL << k); p++)
                    {
                        pages[p] = true;
                    }

                    blocks += 1L << (k - order);
                }
            }
        }

        return pages;
    }

    internal static void AssertExactlyOnce(bool[] expected, List<GuestPageRange> runs)
    {
        var seen = new bool[expected.Length];
        MarkOnce(seen, runs);
        for (int p = 0; p < expected.Length; p++)
        {
            Assert.True(expected[p] == seen[p], $"page {p}: expected {(expected[p] ? "hinted" : "not hinted")}");
        }
    }

    private static void MarkOnce(bool[] seen, List<GuestPageRange> runs)
    {
        foreach (GuestPageRange run in runs)
        {
            for (ulong p = run.FirstPfn; p < run.EndPfn; p++)
            {
                Assert.False(seen[p], $"page {p} hinted twice in one report");
                seen[p] = true;
            }
        }
    }

    /// <summary>Allocates until exactly <paramref name="pages"/> pages are free (largest blocks first).</summary>
    private static void LeaveFreePages(BuddyAllocator allocator, long pages)
    {
        for (int k = BuddyAllocator.MaxOrder; k >= 0; k--)
        {
            while (allocator.FreePages - (1L << k) >= pages && allocator.TryAllocate(k, out _))
            {
            }
        }

        Assert.Equal(pages, allocator.FreePages);
    }
}

/// <summary>The driver against a device that returns hint buffers out of order, command buffers interleaved with arrays.</summary>
public sealed class FreePageHintOutOfOrderTests
{
    [Theory]
    [InlineData(VirtqueueFormat.Split)]
    [InlineData(VirtqueueFormat.Packed)]
    public void Used_buffers_are_reclaimed_in_any_order_and_every_hint_is_sent_once(VirtqueueFormat format)
    {
        using var memory = GuestMemory.Allocate(16UL << 20);
        using var allocator = new Virtio.Balloon.GuestAllocator.BuddyAllocator(0, (16UL << 20) / 4096);
        using var device = new ReversingHintDevice(memory, new VirtioDeviceOptions { Threading = QueueThreading.WorkerPerQueue });
        Virtio.Balloon.Driver.BalloonDriver? driver = null;
        var transport = new Virtio.Ring.Transport.Mmio.VirtioMmioTransport(device, new InterruptLine(() => driver?.OnInterrupt()));
        driver = new Virtio.Balloon.Driver.BalloonDriver(transport, memory, allocator, new Virtio.Balloon.Driver.BalloonDriverOptions
        {
            RingFormat = format,
            QueueSize = 8,
            HintProtocol = FreePageHintProtocol.HintArrays,
            HintOrder = 0,
            HintArrayBytes = 4096,
            HintArrayCount = 2,
        });
        using Virtio.Balloon.Driver.BalloonDriver owned = driver;
        Assert.True(driver.Initialize());
        bool[] expected = FreePageHintEndToEndTests.FreePagesAtOrAbove(allocator, 0, out long hints);

        device.Request(2);
        driver.Poll();
        Assert.True(SpinWait.SpinUntil(() => device.Commands == 2, TimeSpan.FromSeconds(10)), "start and stop arrived");
        Assert.Equal(hints, driver.LastReportBlocks);
        Assert.True(driver.LastReportArrays > driver.HintArrayCount, "more arrays than the pool: arrays were reused");
        Assert.True(device.OutOfOrderReturns > 2, "buffers came back newest first, commands among the arrays");

        var seen = new bool[expected.Length];
        foreach (ulong address in device.Addresses)
        {
            Assert.False(seen[address >> 12], $"page {address >> 12} hinted twice");
            seen[address >> 12] = true;
        }

        Assert.Equal(expected, seen);
        device.ReturnHeld();
        Assert.True(SpinWait.SpinUntil(() => { driver.HandleFreePageHintCommand(); return driver.FreeHintArrays == driver.HintArrayCount; }, TimeSpan.FromSeconds(10)),
            "every array back in the pool");
    }
}

using System;
using System.Collections.Generic;
using Virtio.Balloon.Device;
using Virtio.Ring;
using Virtio.Ring.Transport;

namespace Virtio.Balloon.Tests.Driver;

/// <summary>Our balloon driver and our balloon device, both formats, inline and on a worker.</summary>
public class BalloonEndToEndTests
{
    public static TheoryData<VirtqueueFormat, QueueThreading> Modes()
    {
        var data = new TheoryData<VirtqueueFormat, QueueThreading>();
        foreach (VirtqueueFormat f in new[] { VirtqueueFormat.Split, VirtqueueFormat.Packed })
        {
            data.Add(f, QueueThreading.Inline);
            data.Add(f, QueueThreading.WorkerPerDevice);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void Inflate_to_the_target_then_deflate_back_keeps_every_book_balanced(VirtqueueFormat format, QueueThreading threading)
    {
        using var rig = new BalloonRig(format, threading: threading);
        Assert.True(rig.Driver.Initialize());
        long own = rig.Driver.OwnPages;
        long freeBefore = rig.Allocator.FreePages;

        Assert.Equal(3000, rig.SetTarget(3000));           // 12 requests of at most 256 PFNs
        Assert.Equal(3000, rig.Driver.BalloonPages);
        Assert.Equal(3000u, rig.Device.ActualPages);
        Assert.Equal(3000, rig.Backend.InflatedPages);
        Assert.Equal(freeBefore - 3000, rig.Allocator.FreePages);
        rig.CheckAccounting();

        Assert.Equal(2000, rig.SetTarget(1000));
        Assert.Equal(1000u, rig.Device.ActualPages);
        Assert.Equal(1000, rig.Backend.InflatedPages);
        rig.CheckAccounting();

        Assert.Equal(1000, rig.SetTarget(0));
        Assert.Equal(freeBefore, rig.Allocator.FreePages);
        Assert.Equal(own, rig.Driver.OwnPages);
        Assert.Equal(0, rig.Backend.RepeatedInflatePages + rig.Backend.UnknownDeflatePages);
        rig.CheckAccounting();
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void Statistics_come_from_the_guest_allocator_on_request(VirtqueueFormat format, QueueThreading threading)
    {
        using var rig = new BalloonRig(format, threading: threading);
        rig.Driver.ExtraStatistics = [new KeyValuePair<ushort, ulong>(10, 7), new KeyValuePair<ushort, ulong>(0x1234, 99)];
        Assert.True(rig.Driver.Initialize());
        Assert.True(System.Threading.SpinWait.SpinUntil(() => rig.Device.LastStatistics is not null, TimeSpan.FromSeconds(10)));
        BalloonStatistics first = rig.Device.LastStatistics!;
        Assert.Equal((ulong)rig.Allocator.TotalPages * 4096, first.TotalMemory);
        Assert.Equal(7UL, first.Get(BalloonStatTag.OomKills));
        Assert.Equal([new KeyValuePair<ushort, ulong>(0x1234, 99)], first.UnknownTags); // kept raw, not refused

        rig.SetTarget(500);
        Assert.True(rig.Device.RequestStatistics());        // the device returns the buffer...
        Assert.False(rig.Device.RequestStatistics());       // ...which it no longer holds
        Assert.True(System.Threading.SpinWait.SpinUntil(() =>
        {
            rig.Driver.Poll();                              // ...and the guest refills it
            return rig.Driver.StatisticsSent == 2 && rig.Device.LastStatistics!.UpdatedAt >= first.UpdatedAt
                && rig.Device.LastStatistics.FreeMemory == (ulong)rig.Allocator.FreePages * 4096;
        }, TimeSpan.FromSeconds(10)));
        Assert.Equal(0, rig.Device.Rejected(BalloonMessageError.SecondStatsBuffer));
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void Deflate_on_OOM_gives_pages_back_before_an_allocation_fails(VirtqueueFormat format, QueueThreading threading)
    {
        using var rig = new BalloonRig(format, threading: threading, guestBytes: 16UL << 20);
        Assert.True(rig.Driver.Initialize());
        long free = rig.Allocator.FreePages;
        rig.SetTarget((uint)(free - 10));                   // the balloon takes nearly everything
        var held = new List<ulong>();
        lock (rig.Allocator.SyncRoot)
        {
            for (int i = 0; i < 300; i++)
            {
                Assert.True(rig.Allocator.TryAllocate(0, out ulong pfn), $"allocation {i}");
                held.Add(pfn);
            }
        }

        Assert.Equal(512, rig.Driver.OomDeflatedPages);     // two OOM events of 256 pages
        Assert.Equal((uint)rig.Driver.BalloonPages, rig.Device.ActualPages);
        lock (rig.Allocator.SyncRoot)
        {
            foreach (ulong pfn in held)
            {
                rig.Allocator.Free(pfn, 0);
            }
        }

        rig.CheckAccounting();
    }

    [Theory]
    [InlineData(VirtqueueFormat.Split, 0u)]
    [InlineData(VirtqueueFormat.Packed, 0u)]
    [InlineData(VirtqueueFormat.Split, 0xAAAAAAAAu)]
    [InlineData(VirtqueueFormat.Packed, 0xAAAAAAAAu)]
    public void Free_page_reporting_hands_free_blocks_over_and_gives_them_back(VirtqueueFormat format, uint poison)
    {
        using var rig = new BalloonRig(format, poison: poison);
        Assert.True(rig.Driver.Initialize());
        rig.Allocator.Fragment(0.3, 0.5, seed: 9);
        long freeBefore = rig.Allocator.FreePages;
        long eligible = 0;
        for (int order = 9; order <= 10; order++)
        {
            eligible += rig.Allocator.FreeBlocks(order) << order;
        }

        long reported = rig.Driver.ReportFreePages();
        Assert.Equal(eligible, reported);
        Assert.Equal(reported, rig.Device.ReportedPages);
        Assert.Equal(freeBefore, rig.Allocator.FreePages);  // all given back
        Assert.Equal(0, rig.Allocator.IsolatedPages);
        if (poison != 0)
        {
            Assert.Equal(poison, rig.Device.PoisonValue);
            Assert.Equal(reported, rig.Backend.ReportedPreservedPages); // kept: the pattern must survive
            Assert.Equal(0, rig.Backend.ReportedDiscardedPages);
        }
        else
        {
            Assert.Equal(reported, rig.Backend.ReportedDiscardedPages);
        }

        rig.CheckAccounting();
    }

    [Fact]
    public void Poisoned_reports_carry_the_pattern_in_guest_memory()
    {
        using var rig = new BalloonRig(poison: 0x5A5A5A5A);
        Assert.True(rig.Driver.Initialize());
        Assert.True(rig.Driver.ReportFreePages() > 0);
        ulong first = 0;
        foreach (ulong pfn in rig.Allocator.EnumerateFreeBlocks(10))
        {
            first = pfn;
            break;
        }

        Assert.Equal(GuestMemoryError.None, rig.Memory.TryGetSpan(first << 12, 4096, out Span<byte> page));
        Assert.True(page.IndexOfAnyExcept((byte)0x5A) < 0);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void A_device_that_stops_answering_mid_inflate_is_reset_and_no_page_is_lost(VirtqueueFormat format, QueueThreading threading)
    {
        using var rig = new BalloonRig(format, threading: threading, timeout: TimeSpan.FromMilliseconds(300));
        Assert.True(rig.Driver.Initialize());
        rig.SetTarget(600);
        Assert.Equal(600, rig.Driver.BalloonPages);
        rig.Device.Pause();                                 // the host stops serving: the next request hangs
        Assert.Equal(0, rig.SetTarget(2000));               // it times out; the driver resets the device
        Assert.Equal(0, rig.Driver.BalloonPages);           // the balloon and the request in flight came back
        Assert.Equal(0, rig.Driver.OwnPages);
        Assert.Equal((long)rig.Allocator.TotalPages, rig.Allocator.FreePages);
        Assert.Equal(0, rig.Allocator.AllocatedPages);
        rig.Allocator.CheckInvariants();
        rig.Device.Resume();

        // The guest brings the driver up again and the device serves it.
        Assert.True(rig.Driver.Initialize());
        Assert.Equal(100, rig.SetTarget(100));
        rig.CheckAccounting();
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void A_reset_during_reporting_puts_every_isolated_block_back(VirtqueueFormat format, QueueThreading threading)
    {
        using var rig = new BalloonRig(format, threading: threading, timeout: TimeSpan.FromMilliseconds(300));
        Assert.True(rig.Driver.Initialize());
        rig.SetTarget(100);
        rig.Device.Pause();
        Assert.Equal(0, rig.Driver.ReportFreePages());      // the first report hangs; the driver resets
        Assert.Equal(0, rig.Allocator.IsolatedPages);
        Assert.Equal((long)rig.Allocator.TotalPages, rig.Allocator.FreePages);
        rig.Allocator.CheckInvariants();
    }
}

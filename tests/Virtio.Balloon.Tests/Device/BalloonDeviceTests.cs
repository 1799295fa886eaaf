using System;
using System.Collections.Generic;
using Virtio.Balloon.Backends;
using Virtio.Balloon.Device;
using Virtio.Ring;
using Virtio.Ring.Transport.Mmio;
using static Virtio.Balloon.BalloonFeatureBits;

namespace Virtio.Balloon.Tests.Device;

/// <summary>
/// The balloon device against the spec (VIRTIO 1.2, 5.5) and a guest that misbehaves; run once per ring format
/// (<see cref="SplitRingBalloonDeviceTests"/>, <see cref="PackedRingBalloonDeviceTests"/>).
/// </summary>
public abstract class BalloonDeviceTests
{
    protected abstract VirtqueueFormat Format { get; }

    private const ulong Stats = 1UL << StatsVq;
    private const ulong Hint = 1UL << FreePageHint;
    private const ulong Poison = 1UL << PagePoison;
    private const ulong Reporting = 1UL << PageReporting;

    [Theory]
    [InlineData(0UL, 8)]
    [InlineData(Stats | Reporting, 8)]
    [InlineData(Hint, 12)]
    [InlineData(Poison, 16)]
    [InlineData(Hint | Poison, 16)]
    public void Config_space_is_8_12_or_16_bytes_by_the_offered_features(ulong offered, int size)
    {
        Assert.Equal(size, BalloonConfigLayout.SizeFor(offered));
        using var memory = GuestMemory.Allocate(1 << 20);
        using var device = new BalloonDevice(memory, new InMemoryBalloonBackend(256), new BalloonDeviceOptions { OfferedFeatures = offered });
        Assert.Equal(size, device.ConfigSize);
        var transport = new VirtioMmioTransport(device);
        Assert.Equal(0u, transport.Read(VirtioMmioRegisters.Config + (ulong)size, 4)); // past the end: ignored
        Assert.Equal(1, transport.InvalidAccesses);
    }

    [Fact]
    public void Config_fields_sit_where_the_spec_puts_them_and_only_actual_and_poison_are_driver_writable()
    {
        using var guest = new RawBalloonGuest(format: Format, wanted: Poison);
        guest.Device.SetTargetPages(0x11223344);
        Span<byte> config = stackalloc byte[16];
        guest.Driver.ReadConfig(0, config);
        Assert.Equal(new byte[] { 0x44, 0x33, 0x22, 0x11 }, config[..4].ToArray()); // num_pages, le32 at 0
        guest.Driver.WriteConfig(0, [1, 1, 1, 1]);                                    // num_pages: read-only
        guest.Driver.WriteConfig(4, [0x78, 0x56, 0x34, 0x12]);                        // actual
        guest.Driver.WriteConfig(8, [9, 9, 9, 9]);                                    // cmd id: read-only
        guest.Driver.WriteConfig(12, [0xAA, 0xAA, 0xAA, 0xAA]);                       // poison_val
        Assert.Equal(0x11223344u, guest.Device.TargetPages);
        Assert.Equal(0x12345678u, guest.Device.ActualPages);
        Assert.Equal(0xAAAAAAAAu, guest.Device.PoisonValue);
        guest.Driver.ReadConfig(8, config[..4]);
        Assert.Equal(0u, BitConverter.ToUInt32(config[..4]));
    }

    public static TheoryData<ulong, BalloonQueueNumbering> EveryFeatureCombination()
    {
        var data = new TheoryData<ulong, BalloonQueueNumbering>();
        for (ulong bits = 0; bits < 8; bits++)
        {
            ulong f = ((bits & 1) != 0 ? Stats : 0) | ((bits & 2) != 0 ? Hint : 0) | ((bits & 4) != 0 ? Reporting : 0);
            foreach (BalloonQueueNumbering n in Enum.GetValues<BalloonQueueNumbering>())
            {
                data.Add(f, n);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(EveryFeatureCombination))]
    public void Queue_numbering_follows_the_chosen_peer_for_every_feature_combination(ulong features, BalloonQueueNumbering numbering)
    {
        BalloonQueueLayout layout = BalloonQueueLayout.For(features, numbering);
        bool stats = (features & Stats) != 0;
        bool hint = (features & Hint) != 0;
        bool reporting = (features & Reporting) != 0;
        Assert.Equal(0, layout.Inflate);
        Assert.Equal(1, layout.Deflate);
        int expectedStats, expectedHint, expectedReporting;
        switch (numbering)
        {
            case BalloonQueueNumbering.Fixed:
                (expectedStats, expectedHint, expectedReporting) = (stats ? 2 : -1, hint ? 3 : -1, reporting ? 4 : -1);
                break;
            case BalloonQueueNumbering.Qemu:
                (expectedStats, expectedHint, expectedReporting) = (2, hint ? 3 : -1, reporting ? (hint ? 4 : 3) : -1);
                break;
            default:
                int next = 2;
                expectedStats = stats ? next++ : -1;
                expectedHint = hint ? next++ : -1;
                expectedReporting = reporting ? next : -1;
                break;
        }

        Assert.Equal((expectedStats, expectedHint, expectedReporting), (layout.Stats, layout.FreePageHint, layout.Reporting));

        // The device shows exactly that many queues once the features are negotiated.
        using var guest = new RawBalloonGuest(format: Format, wanted: features, numbering: numbering);
        Assert.Equal(layout, guest.Device.Layout);
        Assert.Equal(layout.Count, guest.Device.PresentQueueCount);
        Assert.Equal(0, guest.Driver.QueueSizeMax(layout.Count));
        Assert.Equal(128, guest.Driver.QueueSizeMax(layout.Count - 1));
    }

    [Fact]
    public void Without_stats_and_hinting_Linux_finds_reporting_at_index_2()
    {
        using var guest = new RawBalloonGuest(format: Format, wanted: Reporting);
        Assert.Equal(2, guest.Layout.Reporting);
        guest.SendWritable(2, new GuestRange(0x40_0000, 8192));
        Assert.Equal(2, guest.Device.ReportedPages);
    }

    [Fact]
    public void Inflate_sorts_deduplicates_and_merges_before_the_back_end_sees_anything()
    {
        using var guest = new RawBalloonGuest(format: Format);
        var seen = new List<GuestPageRange>();
        guest.Backend.Released = seen.Add;
        guest.SendPfns(0, 0x905, 0x900, 0x903, 0x901, 0x900, 0x902, 0x904, 0x2000, 0x1FFF, 0x900);
        Assert.Equal([new GuestPageRange(0x900, 6), new GuestPageRange(0x1FFF, 2)], seen);
        Assert.Equal(8, guest.Backend.InflatedPages);
        Assert.Equal(1, guest.Backend.InflateCalls);
        Assert.Equal(8, guest.Device.InflatedPages);

        guest.SendPfns(1, 0x903, 0x902, 0x2000);               // deflate part of each run
        Assert.Equal(5, guest.Backend.InflatedPages);
        Assert.False(guest.Backend.IsInflated(0x902));
        Assert.True(guest.Backend.IsInflated(0x904));
    }

    [Fact]
    public void A_PFN_outside_guest_RAM_refuses_the_whole_request()
    {
        using var guest = new RawBalloonGuest(format: Format, guestBytes: 16UL << 20); // 4096 pages
        guest.SendPfns(0, 10, 11, 4096, 12);
        Assert.Equal(1, guest.Device.Rejected(BalloonMessageError.OutsideGuestRam));
        Assert.Equal(0, guest.Backend.InflatedPages);       // not half-applied
        guest.SendPfns(0, 0xFFFF_FFFF);
        Assert.Equal(2, guest.Device.Rejected(BalloonMessageError.OutsideGuestRam));
        guest.SendPfns(0, 4095, 10);
        Assert.Equal(2, guest.Backend.InflatedPages);
    }

    [Fact]
    public void A_request_longer_than_the_cap_is_refused()
    {
        using var guest = new RawBalloonGuest(format: Format, maxPfns: 8);
        guest.SendPfns(0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
        Assert.Equal(1, guest.Device.Rejected(BalloonMessageError.TooManyPfns));
        guest.SendPfns(0, 1, 2, 3, 4, 5, 6, 7, 8);
        Assert.Equal(8, guest.Backend.InflatedPages);
    }

    [Fact]
    public void A_length_that_is_not_a_multiple_of_four_is_refused()
    {
        using var guest = new RawBalloonGuest(format: Format);
        guest.SendReadable(0, [1, 0, 0, 0, 2, 0]);
        Assert.Equal(1, guest.Device.Rejected(BalloonMessageError.LengthNotMultipleOfFour));
        Assert.Equal(0, guest.Backend.InflatedPages);
    }

    [Fact]
    public void Buffers_in_the_wrong_direction_are_refused_on_every_queue()
    {
        using var guest = new RawBalloonGuest(format: Format);
        guest.SendWritable(guest.Layout.Inflate, new GuestRange(RawBalloonGuest.DataArea, 8));  // a writable PFN array
        guest.SendWritable(guest.Layout.Deflate, new GuestRange(RawBalloonGuest.DataArea, 8));
        guest.SendReadable(guest.Layout.Reporting, new byte[4096]);                            // a readable report
        guest.SendWritable(guest.Layout.Stats, new GuestRange(RawBalloonGuest.DataArea, 10));   // a writable stats buffer
        Assert.Equal(4, guest.Device.Rejected(BalloonMessageError.WrongDirection));
        Assert.Equal(0, guest.Backend.InflateCalls + guest.Backend.DeflateCalls + guest.Backend.ReportCalls);
        Assert.Null(guest.Device.LastStatistics);
    }

    [Fact]
    public void Reports_must_be_whole_pages_inside_RAM()
    {
        using var guest = new RawBalloonGuest(format: Format, guestBytes: 16UL << 20);
        int q = guest.Layout.Reporting;
        guest.SendWritable(q, new GuestRange(0x40_0000 + 512, 4096));
        guest.SendWritable(q, new GuestRange(0x40_0000, 4000));
        Assert.Equal(2, guest.Device.Rejected(BalloonMessageError.NotPageAligned));
        Assert.Equal(0, guest.Backend.ReportCalls);
        guest.SendWritable(q, new GuestRange(0x40_0000, 4096), new GuestRange(0x60_0000, 2 << 20));
        Assert.Equal(1 + 512, guest.Device.ReportedPages);

        // A range outside guest memory never reaches the balloon: the ring layer breaks the queue first
        // (BufferNotInGuestMemory, DEVICE_NEEDS_RESET), and nothing of the buffer is reported.
        Assert.True(guest.Queue(q).TryAdd([], [new GuestRange(0x40_0000, 4096), new GuestRange(16UL << 20, 4096)], 1));
        guest.Queue(q).PublishAvailable();
        guest.Driver.Notify(q);
        Assert.Equal(Virtio.Ring.Transport.DeviceStatus.DeviceNeedsReset, guest.Driver.Status & Virtio.Ring.Transport.DeviceStatus.DeviceNeedsReset);
        Assert.Equal(QueueError.BufferNotInGuestMemory, guest.Device.LastQueueError);
        Assert.Equal(1 + 512, guest.Device.ReportedPages);
    }

    [Fact]
    public void Statistics_take_known_tags_keep_unknown_ones_and_survive_a_truncated_buffer()
    {
        using var guest = new RawBalloonGuest(format: Format);
        int q = guest.Layout.Stats;
        byte[] stats = Entries((4, 1000), (5, 2000), (77, 5), (6, 3000));
        guest.SendStats(q, stats);
        BalloonStatistics s = guest.Device.LastStatistics!;
        Assert.Equal(1000UL, s.FreeMemory);
        Assert.Equal(2000UL, s.TotalMemory);
        Assert.Equal(3000UL, s.AvailableMemory);
        Assert.Null(s.Get(BalloonStatTag.SwapIn));
        Assert.Equal([new KeyValuePair<ushort, ulong>(77, 5)], s.UnknownTags);

        // The device holds the buffer; a request returns it; the guest sends a truncated one.
        Assert.True(guest.Device.RequestStatistics());
        Assert.True(guest.Queue(q).TryGetUsed(out int _, out uint _));
        guest.SendStats(q, [.. Entries((4, 42)), 1, 2, 3]);
        Assert.Equal(1, guest.Device.Rejected(BalloonMessageError.StatsTruncated));
        Assert.Equal(42UL, guest.Device.LastStatistics!.FreeMemory);
        Assert.Null(guest.Device.LastStatistics.TotalMemory);  // a new buffer replaces the whole set
    }

    [Fact]
    public void A_second_stats_buffer_returns_the_first_and_a_too_long_one_is_not_taken()
    {
        using var guest = new RawBalloonGuest(format: Format);
        int q = guest.Layout.Stats;
        guest.SendStats(q, Entries((4, 1)));
        guest.SendStats(q, Entries((4, 2)), expectFirstBack: true);
        Assert.Equal(1, guest.Device.Rejected(BalloonMessageError.SecondStatsBuffer));
        Assert.Equal(2UL, guest.Device.LastStatistics!.FreeMemory);

        Assert.True(guest.Device.RequestStatistics());
        Assert.True(guest.Queue(q).TryGetUsed(out int _, out uint _));
        guest.SendStats(q, new byte[65 * 10]);                  // the cap is 64 entries
        Assert.Equal(1, guest.Device.Rejected(BalloonMessageError.StatsTooLong));
        Assert.Equal(2UL, guest.Device.LastStatistics!.FreeMemory);
        Assert.True(guest.Device.RequestStatistics());          // still the one outstanding buffer
    }

    [Fact]
    public void A_periodic_statistics_interval_returns_the_buffer_by_itself()
    {
        using var memory = GuestMemory.Allocate(8 << 20);
        using var device = new BalloonDevice(memory, new InMemoryBalloonBackend(2048), new BalloonDeviceOptions { StatisticsInterval = TimeSpan.FromMilliseconds(20) });
        var transport = new VirtioMmioTransport(device);
        var driver = new VirtioMmioDriver(transport);
        Assert.True(driver.Initialize((1UL << VirtioFeatureBits.Version1) | Stats
            | (Format == VirtqueueFormat.Packed ? 1UL << VirtioFeatureBits.RingPacked : 0)));
        var addresses = VirtqueueAddresses.Compact(Format, 0x10_0000, 16);
        using var queue = new DriverVirtqueue<int>(memory, addresses, driver.NegotiatedFeatures);
        Assert.True(driver.SetupQueue(2, addresses));
        driver.SetDriverOk();
        memory.TryWrite(0x20_0000, Entries((4, 9)));
        Assert.True(queue.TryAdd([new GuestRange(0x20_0000, 10)], [], 1));
        queue.PublishAvailable();
        driver.Notify(2);
        Assert.True(System.Threading.SpinWait.SpinUntil(() => queue.TryGetUsed(out int _, out uint _), TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public void A_hint_buffer_nobody_asked_for_is_returned_and_counted()
    {
        using var guest = new RawBalloonGuest(format: Format, wanted: Hint);
        guest.SendReadable(guest.Layout.FreePageHint, [2, 0, 0, 0]);                    // an id nobody requested
        Assert.Equal(Virtio.Balloon.Hints.FreePageHintStatus.Idle, guest.Device.FreePageHintStatus);
        guest.SendWritable(guest.Layout.FreePageHint, new GuestRange(0x10_0000, 4096));  // a block nobody asked for
        Assert.Equal(1, guest.Device.Rejected(BalloonMessageError.UnrequestedHint));
        Assert.Equal(1, guest.Device.IgnoredHintBlocks);
    }

    [Fact]
    public void Huge_host_pages_are_released_only_when_every_piece_is_ballooned_and_partial_deflate_is_handled()
    {
        using var guest = new RawBalloonGuest(format: Format, hostPageSize: 2 << 20);   // 512 pieces per host page
        var released = new List<GuestPageRange>();
        guest.Backend.Released = released.Add;
        uint[] firstHalf = new uint[256];
        uint[] secondHalf = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            firstHalf[i] = 0x1000 + i;          // host page 8 (GPA 16 MiB)
            secondHalf[i] = 0x1000 + 256 + i;
        }

        guest.SendPfns(0, firstHalf);
        Assert.Empty(released);
        guest.SendPfns(1, 0x1000, 0x1001);                  // the guest takes two pieces back
        guest.SendPfns(0, secondHalf);
        Assert.Empty(released);                             // two pieces are missing now
        guest.SendPfns(0, 0x1001, 0x1000);
        Assert.Equal([new GuestPageRange(0x1000, 512)], released);

        released.Clear();
        uint[] twoWhole = new uint[1024];
        for (uint i = 0; i < 1024; i++)
        {
            twoWhole[i] = 0x2000 + i;                       // host pages 16 and 17 at once
        }

        guest.SendPfns(0, twoWhole);
        Assert.Equal([new GuestPageRange(0x2000, 1024)], released);
    }

    [Fact]
    public void A_device_reset_empties_the_balloon_but_keeps_the_host_target()
    {
        using var guest = new RawBalloonGuest(format: Format);
        guest.Device.SetTargetPages(77);
        guest.SendPfns(0, 5, 6, 7);
        guest.Driver.WriteConfig(4, [3, 0, 0, 0]);
        int resets = guest.Backend.Resets;
        guest.Driver.Reset();
        Assert.Equal(0, guest.Backend.InflatedPages);
        Assert.Equal(resets + 1, guest.Backend.Resets);
        Assert.Equal(77u, guest.Device.TargetPages);
        Assert.Equal(0u, guest.Device.ActualPages);
    }

    [Fact]
    public void Steady_state_inflate_and_deflate_allocate_nothing()
    {
        using var guest = new RawBalloonGuest(format: Format);
        uint[] pfns = new uint[256];
        var rng = new Random(4);
        byte[] inflate = new byte[1024];
        for (int i = 0; i < 256; i++)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(inflate.AsSpan(4 * i), (uint)rng.Next(0x100, 0x3000));
        }

        guest.Memory.TryWrite(RawBalloonGuest.DataArea, inflate);
        Span<GuestRange> readable = [new GuestRange(RawBalloonGuest.DataArea, 1024)];
        for (int warm = 0; warm < 50; warm++)
        {
            Round(guest, readable);
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 200; i++)
        {
            Round(guest, readable);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.True(guest.Device.InflatedPages > 0);

        static void Round(RawBalloonGuest guest, ReadOnlySpan<GuestRange> readable)
        {
            for (int q = 0; q < 2; q++)
            {
                guest.Queue(q).TryAdd(readable, [], 1);
                guest.Queue(q).PublishAvailable();
                guest.Driver.Notify(q);
                guest.Queue(q).TryGetUsed(out int _, out uint _);
            }
        }
    }

    private static byte[] Entries(params (ushort Tag, ulong Value)[] entries)
    {
        byte[] bytes = new byte[entries.Length * 10];
        for (int i = 0; i < entries.Length; i++)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(10 * i), entries[i].Tag);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan((10 * i) + 2), entries[i].Value);
        }

        return bytes;
    }
}

/// <summary>The balloon device suite over split rings.</summary>
public sealed class SplitRingBalloonDeviceTests : BalloonDeviceTests
{
    protected override VirtqueueFormat Format => VirtqueueFormat.Split;
}

/// <summary>The balloon device suite over packed rings.</summary>
public sealed class PackedRingBalloonDeviceTests : BalloonDeviceTests
{
    protected override VirtqueueFormat Format => VirtqueueFormat.Packed;
}

using System.Collections.Generic;

namespace Virtio.Ring.Tests.BothFormats;

/// <summary>
/// The device queue's <see cref="VirtqueueCounters"/>: buffers and bytes as the used ring carries them, and every
/// interrupt decision counted as sent or suppressed, on both formats.
/// </summary>
public sealed class QueueCounterTests
{
    public static TheoryData<VirtqueueFormat> Formats() => new() { VirtqueueFormat.Split, VirtqueueFormat.Packed };

    [Theory]
    [MemberData(nameof(Formats))]
    public void Used_buffers_and_the_bytes_written_into_them_are_counted(VirtqueueFormat format)
    {
        using var pair = new QueuePair(format, 64, VirtqueueFeatures.None);
        Assert.Equal(default, pair.Device.Counters);
        long bytes = 0;
        for (int round = 0; round < 3; round++)
        {
            Exchange(pair, 10, length: id => (uint)(id + 1) * 3, ref bytes);
        }

        // Three rounds of ten buffers, one interrupt decision per round, none suppressed (no flag, no EVENT_IDX).
        Assert.Equal(new VirtqueueCounters(30, bytes, 3, 0, 0), pair.Device.Counters);
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void A_driver_that_turned_used_notifications_off_makes_every_decision_a_suppressed_one(VirtqueueFormat format)
    {
        using var pair = new QueuePair(format, 64, VirtqueueFeatures.None);
        pair.Driver.DisableUsedNotifications();
        long bytes = 0;
        Exchange(pair, 4, length: _ => 8, ref bytes);
        Exchange(pair, 4, length: _ => 8, ref bytes);
        Assert.Equal(new VirtqueueCounters(8, 64, 0, 2, 0), pair.Device.Counters);
    }

    /// <summary>Split ring, 2.7.10: with EVENT_IDX a publish that does not pass the driver's <c>used_event</c> is suppressed.</summary>
    [Fact]
    public void With_EVENT_IDX_a_decision_short_of_the_drivers_event_is_suppressed()
    {
        using var pair = new QueuePair(VirtqueueFormat.Split, 64, VirtqueueFeatures.EventIndex);
        AddAll(pair, 2);
        Assert.True(pair.Device.TryPop(out DescriptorChain first));
        pair.Device.PushUsed(first.Id, 1);
        Assert.True(pair.Device.PublishUsed());                  // the driver's event is the first used buffer
        Assert.True(pair.Device.TryPop(out DescriptorChain second));
        pair.Device.PushUsed(second.Id, 1);
        Assert.False(pair.Device.PublishUsed());                 // the driver has not taken the first yet: no new event
        Assert.Equal(new VirtqueueCounters(2, 2, 1, 1, 0), pair.Device.Counters);
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void An_in_order_batch_counts_every_buffer_it_returns(VirtqueueFormat format)
    {
        using var pair = new QueuePair(format, 64, VirtqueueFeatures.InOrder);
        AddAll(pair, 5);
        ushort last = 0;
        for (int i = 0; i < 5; i++)
        {
            Assert.True(pair.Device.TryPop(out DescriptorChain chain));
            last = chain.Id;
        }

        pair.Device.PushUsedBatch(last, 100);
        Assert.True(pair.Device.PublishUsed());
        Assert.Equal(new VirtqueueCounters(5, 100, 1, 0, 0), pair.Device.Counters);
    }

    /// <summary>Adds <paramref name="count"/> one-range writable buffers, device pops and pushes each with its length, publishes, driver takes them back.</summary>
    private static void Exchange(QueuePair pair, int count, System.Func<ushort, uint> length, ref long bytes)
    {
        AddAll(pair, count);
        var popped = new List<ushort>();
        while (pair.Device.TryPop(out DescriptorChain chain))
        {
            popped.Add(chain.Id);
        }

        Assert.Equal(count, popped.Count);
        foreach (ushort id in popped)
        {
            pair.Device.PushUsed(id, length(id));
            bytes += length(id);
        }

        pair.Device.PublishUsed();
        int taken = 0;
        while (pair.Driver.TryGetUsed(out _, out _))
        {
            taken++;
        }

        Assert.Equal(count, taken);
    }

    private static void AddAll(QueuePair pair, int count)
    {
        for (int i = 0; i < count; i++)
        {
            Assert.True(pair.Driver.TryAdd([], [new GuestRange(pair.BufferBase + ((ulong)i * 4096), 4096)], i));
        }

        pair.Driver.PublishAvailable();
    }
}

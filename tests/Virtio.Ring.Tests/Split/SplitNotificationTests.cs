using System.Buffers.Binary;
using Virtio.Ring.Split;

namespace Virtio.Ring.Tests.Split;

/// <summary>
/// Notification suppression (VIRTIO 1.x 2.7.7, 2.7.10): flags without EVENT_IDX, used_event/avail_event with it,
/// and the re-checks that keep a notification from being lost.
/// </summary>
public class SplitNotificationTests
{
    [Theory]
    [InlineData(0, 1, 0, true)]          // event 0 passed going 0 -> 1
    [InlineData(1, 1, 0, false)]         // event 1 not passed yet
    [InlineData(5, 10, 0, true)]
    [InlineData(10, 10, 0, false)]
    [InlineData(9, 10, 9, true)]
    [InlineData(8, 10, 9, false)]        // passed in an earlier batch: no second notification
    [InlineData(65535, 1, 65534, true)]  // across the 16-bit wrap
    [InlineData(65533, 1, 65534, false)]
    [InlineData(3, 3, 3, false)]         // nothing new
    public void Need_event_formula_2_7_10(int eventIdx, int newIdx, int oldIdx, bool expected) =>
        Assert.Equal(expected, EventIndex.NeedsNotification((ushort)eventIdx, (ushort)newIdx, (ushort)oldIdx));

    [Fact]
    public void Without_EVENT_IDX_the_driver_notifies_unless_NO_NOTIFY()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.None);
        Add(pair);
        Assert.True(pair.Driver.PublishAvailable());

        pair.Device.DisableAvailableNotifications();
        Assert.Equal(SplitQueueLayout.UsedFlagNoNotify, ReadUsedFlags(pair));
        Add(pair);
        Assert.False(pair.Driver.PublishAvailable());

        Assert.Equal(NotificationRecheck.BuffersPending, pair.Device.EnableAvailableNotifications()); // two buffers wait: the re-check reports them
        Assert.Equal(0, ReadUsedFlags(pair));
        Add(pair);
        Assert.True(pair.Driver.PublishAvailable());
    }

    [Fact]
    public void Publish_with_nothing_added_never_notifies()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.None);
        Assert.False(pair.Driver.PublishAvailable());
    }

    [Fact]
    public void With_EVENT_IDX_the_driver_notifies_when_avail_idx_passes_avail_event()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.EventIndex);
        Add(pair);
        Assert.True(pair.Driver.PublishAvailable()); // avail_event = 0, idx 0 -> 1

        Add(pair);
        Assert.False(pair.Driver.PublishAvailable()); // avail_event still 0: already passed

        // The device drains the ring; finding it empty re-arms avail_event at the next index (2).
        Drain(pair);
        Assert.Equal(2, ReadAvailEvent(pair));
        Add(pair);
        Assert.True(pair.Driver.PublishAvailable());
    }

    [Fact]
    public void With_EVENT_IDX_a_disabled_device_stops_moving_avail_event()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.EventIndex);
        pair.Device.DisableAvailableNotifications();
        Add(pair);
        Assert.True(pair.Driver.PublishAvailable()); // avail_event 0 is crossed once
        Drain(pair);
        Assert.Equal(0, ReadAvailEvent(pair));
        Add(pair);
        Assert.False(pair.Driver.PublishAvailable());
        Assert.Equal(NotificationRecheck.BuffersPending, pair.Device.EnableAvailableNotifications());  // re-check finds the buffer
        Assert.Equal(1, ReadAvailEvent(pair));
    }

    [Fact]
    public void Device_EnableNotifications_rechecks_so_no_kick_is_lost()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.None);
        pair.Device.DisableAvailableNotifications();
        Add(pair);
        Assert.False(pair.Driver.PublishAvailable()); // no kick: the device asked for none
        Assert.Equal(NotificationRecheck.BuffersPending, pair.Device.EnableAvailableNotifications());
        Assert.True(pair.Device.TryPop(out _));
        Assert.Equal(NotificationRecheck.NothingPending, pair.Device.EnableAvailableNotifications());
    }

    [Fact]
    public void Without_EVENT_IDX_the_device_interrupts_unless_NO_INTERRUPT()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.None);
        RoundTripToDevice(pair);
        Assert.True(pair.Device.PublishUsed());

        pair.Driver.DisableUsedNotifications();
        RoundTripToDevice(pair);
        Assert.False(pair.Device.PublishUsed());
    }

    [Fact]
    public void With_EVENT_IDX_the_device_ignores_NO_INTERRUPT_and_uses_used_event()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.EventIndex);
        BinaryPrimitives.WriteUInt16LittleEndian(pair.Span(pair.Layout.DriverAreaAddress, 2), SplitQueueLayout.AvailFlagNoInterrupt);
        RoundTripToDevice(pair);
        Assert.True(pair.Device.PublishUsed()); // used_event = 0, used idx 0 -> 1

        RoundTripToDevice(pair);
        Assert.False(pair.Device.PublishUsed()); // used_event 0 already passed
    }

    [Fact]
    public void Driver_drains_and_rearms_used_event_then_device_interrupts_again()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.EventIndex);
        RoundTripToDevice(pair);
        Assert.True(pair.Device.PublishUsed());
        while (pair.Driver.TryGetUsed(out _, out _))
        {
        }

        Assert.Equal(1, ReadUsedEvent(pair)); // re-armed at the next used index when the ring ran empty
        RoundTripToDevice(pair);
        Assert.True(pair.Device.PublishUsed());
    }

    [Fact]
    public void Driver_disable_with_EVENT_IDX_parks_used_event_behind_the_used_index()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.EventIndex);
        pair.Driver.DisableUsedNotifications();
        Assert.Equal(ushort.MaxValue, ReadUsedEvent(pair));
        for (int i = 0; i < 5; i++)
        {
            RoundTripToDevice(pair);
            Assert.False(pair.Device.PublishUsed());
        }
    }

    [Fact]
    public void Driver_EnableUsedNotifications_reports_buffers_already_used()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.EventIndex);
        pair.Driver.DisableUsedNotifications();
        RoundTripToDevice(pair);
        pair.Device.PublishUsed();
        Assert.Equal(NotificationRecheck.BuffersPending, pair.Driver.EnableUsedNotifications());
        Assert.True(pair.Driver.TryGetUsed(out _, out _));
        Assert.Equal(NotificationRecheck.NothingPending, pair.Driver.EnableUsedNotifications());
    }

    [Fact]
    public void Delayed_enable_places_used_event_three_quarters_ahead()
    {
        using var pair = new SplitPair(16, VirtqueueFeatures.EventIndex);
        for (int i = 0; i < 8; i++)
        {
            Add(pair);
        }

        pair.Driver.PublishAvailable();
        Assert.Equal(NotificationRecheck.NothingPending, pair.Driver.EnableUsedNotificationsDelayed());
        Assert.Equal(6, ReadUsedEvent(pair)); // last_used 0 + 8 * 3 / 4

        // The device uses 6 buffers (indices 0..5): used_event 6 not yet passed.
        for (int i = 0; i < 6; i++)
        {
            Assert.True(pair.Device.TryPop(out DescriptorChain c));
            pair.Device.PushUsed(c.Id, 0);
        }

        Assert.False(pair.Device.PublishUsed());
        Assert.True(pair.Device.TryPop(out DescriptorChain last));
        pair.Device.PushUsed(last.Id, 0);
        Assert.True(pair.Device.PublishUsed()); // 6 -> 7 passes used_event 6
    }

    [Fact]
    public void Delayed_enable_reports_when_more_than_that_are_already_used()
    {
        using var pair = new SplitPair(16, VirtqueueFeatures.EventIndex);
        for (int i = 0; i < 4; i++)
        {
            Add(pair);
        }

        pair.Driver.PublishAvailable();
        while (pair.Device.TryPop(out DescriptorChain c))
        {
            pair.Device.PushUsed(c.Id, 0);
        }

        pair.Device.PublishUsed();
        Assert.Equal(NotificationRecheck.BuffersPending, pair.Driver.EnableUsedNotificationsDelayed()); // 4 used > 3
    }

    private static void Add(SplitPair pair) =>
        Assert.True(pair.Driver.TryAdd([new GuestRange(pair.BufferBase, 8)], [], 0));

    private static void Drain(SplitPair pair)
    {
        while (pair.Device.TryPop(out DescriptorChain c))
        {
            pair.Device.PushUsed(c.Id, 0);
        }
    }

    private static void RoundTripToDevice(SplitPair pair)
    {
        Add(pair);
        pair.Driver.PublishAvailable();
        Assert.True(pair.Device.TryPop(out DescriptorChain c));
        pair.Device.PushUsed(c.Id, 0);
    }

    private static ushort ReadUsedFlags(SplitPair pair) => Read16(pair, pair.Layout.DeviceAreaAddress);

    private static ushort ReadAvailEvent(SplitPair pair) =>
        Read16(pair, pair.Layout.DeviceAreaAddress + (ulong)SplitQueueLayout.AvailEventOffset(pair.Layout.QueueSize));

    private static ushort ReadUsedEvent(SplitPair pair) =>
        Read16(pair, pair.Layout.DriverAreaAddress + (ulong)SplitQueueLayout.UsedEventOffset(pair.Layout.QueueSize));

    private static ushort Read16(SplitPair pair, ulong gpa) => BinaryPrimitives.ReadUInt16LittleEndian(pair.Span(gpa, 2));
}

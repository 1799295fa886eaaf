using System;
using Virtio.Ring.Split;

namespace Virtio.Ring.Tests.Split;

/// <summary>Saving and restoring device-side queue state; restored state is validated like guest input.</summary>
public class SplitStateTests
{
    [Fact]
    public void Restored_queue_continues_where_the_saved_one_stopped()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.EventIndex);
        for (int i = 0; i < 5; i++)
        {
            Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], i));
        }

        pair.Driver.PublishAvailable();
        Assert.True(pair.Device.TryPop(out DescriptorChain a));
        ushort idA = a.Id;
        Assert.True(pair.Device.TryPop(out DescriptorChain b));
        ushort idB = b.Id;
        pair.Device.PushUsed(idA, 1);
        pair.Device.DisableAvailableNotifications();

        Assert.Throws<InvalidOperationException>(() => pair.Device.SaveState()); // unpublished used element
        pair.Device.PublishUsed();
        SplitQueueState state = pair.Device.SaveState();
        Assert.Equal((ushort)2, state.NextAvail);
        Assert.Equal((ushort)1, state.NextUsed);
        Assert.False(state.NotificationsEnabled);

        Assert.True(SplitDeviceVirtqueue.TryRestore(pair.Memory, state, out SplitDeviceVirtqueue? restored, out QueueError error), error.ToString());
        using (restored)
        {
            Assert.Equal(1, restored.InFlight);
            Assert.False(restored.NotificationsEnabled);
            restored.PushUsed(idB, 2);
            int popped = 0;
            while (restored.TryPop(out DescriptorChain c))
            {
                restored.PushUsed(c.Id, 3);
                popped++;
            }

            Assert.Equal(3, popped);
            restored.PublishUsed();
        }

        int received = 0;
        while (pair.Driver.TryGetUsed(out int token, out _))
        {
            Assert.Equal(received++, token);
        }

        Assert.Equal(5, received);
    }

    [Fact]
    public void Restored_state_with_more_in_flight_than_the_queue_is_rejected()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.None);
        var state = new SplitQueueState(pair.Layout, VirtqueueFeatures.None, NextAvail: 9, NextUsed: 0, NotificationsEnabled: true);
        Assert.False(SplitDeviceVirtqueue.TryRestore(pair.Memory, state, out _, out QueueError error));
        Assert.Equal(QueueError.InvalidSavedState, error);
    }

    [Fact]
    public void Restored_state_far_behind_the_guests_avail_idx_is_rejected()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.None);
        for (int i = 0; i < 8; i++)
        {
            Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], i));
        }

        pair.Driver.PublishAvailable(); // avail idx 8
        var state = new SplitQueueState(pair.Layout, VirtqueueFeatures.None, NextAvail: 65535, NextUsed: 65535, NotificationsEnabled: true);
        Assert.False(SplitDeviceVirtqueue.TryRestore(pair.Memory, state, out _, out QueueError error));
        Assert.Equal(QueueError.InvalidSavedState, error);
    }

    [Fact]
    public void Restored_state_with_a_bad_layout_is_rejected()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.None);
        var badSize = new SplitQueueState(pair.Layout with { QueueSize = 12 }, VirtqueueFeatures.None, 0, 0, true);
        Assert.False(SplitDeviceVirtqueue.TryRestore(pair.Memory, badSize, out _, out QueueError e1));
        Assert.Equal(QueueError.InvalidQueueSize, e1);

        var outside = new SplitQueueState(pair.Layout with { DeviceAreaAddress = 1UL << 40 }, VirtqueueFeatures.None, 0, 0, true);
        Assert.False(SplitDeviceVirtqueue.TryRestore(pair.Memory, outside, out _, out QueueError e2));
        Assert.Equal(QueueError.RingNotInGuestMemory, e2);
    }

    [Fact]
    public void Device_calls_after_dispose_throw_ObjectDisposed()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.None);
        Assert.True(SplitDeviceVirtqueue.TryAttach(pair.Memory, pair.Layout, VirtqueueFeatures.None, out SplitDeviceVirtqueue? device, out _));
        device.Dispose();
        Assert.Throws<ObjectDisposedException>(() => device.TryPop(out _));
        Assert.Throws<ObjectDisposedException>(() => device.PushUsed(0, 0));
        Assert.Throws<ObjectDisposedException>(() => device.PublishUsed());
        Assert.Throws<ObjectDisposedException>(() => device.SaveState());
    }

    [Fact]
    public void Pushing_a_chain_that_was_never_popped_is_a_caller_bug()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.None);
        Assert.Throws<InvalidOperationException>(() => pair.Device.PushUsed(0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => pair.Device.PushUsed(8, 0));
    }
}

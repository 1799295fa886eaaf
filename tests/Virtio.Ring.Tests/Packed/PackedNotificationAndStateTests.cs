using System;
using System.Buffers.Binary;
using Virtio.Ring.Packed;
using static Virtio.Ring.Tests.Packed.PackedForge;

namespace Virtio.Ring.Tests.Packed;

/// <summary>Packed event suppression (2.8.10), driver-side defences, and device state save/restore.</summary>
public class PackedNotificationAndStateTests
{
    [Theory]
    // event slot, event wrap, position after, wrap after, advanced, queue size, expected
    [InlineData(0, true, 1, true, 1, 8, true)]
    [InlineData(1, true, 1, true, 1, 8, false)]
    [InlineData(7, true, 1, false, 3, 8, true)]    // slot 7 of lap 1 passed while wrapping 6 -> 1
    [InlineData(1, false, 1, false, 3, 8, false)]  // slot 1 of lap 2 not reached yet
    [InlineData(0, false, 1, false, 3, 8, true)]   // slot 0 of lap 2 passed
    [InlineData(5, true, 1, false, 3, 8, false)]   // slot 5 of lap 1 passed in an earlier batch
    [InlineData(2, false, 1, true, 2, 3, true)]    // odd queue size: lap 2 slot 2 passed going to lap 3 slot 1
    [InlineData(2, false, 2, true, 2, 3, false)]   // lap 3 slots 0-1 do not include lap 2 slot 2
    public void Packed_need_event_works_across_the_wrap(int slot, bool wrap, int position, bool wrapAfter, int advanced, int q, bool expected) =>
        Assert.Equal(expected, EventSuppression.NeedsNotification(EventSuppression.Encode((ushort)slot, wrap), (ushort)position, wrapAfter, advanced, q));

    [Fact]
    public void With_EVENT_IDX_the_device_event_names_the_next_slot_and_wrap()
    {
        using var forge = new PackedForge(3, VirtqueueFeatures.EventIndex);
        using var driver = new PackedDriverVirtqueue<int>(forge.Memory, forge.Layout, forge.Features);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        for (int round = 0; round < 5; round++)
        {
            Assert.True(driver.TryAdd([new GuestRange(Buf, 8)], [new GuestRange(Buf, 8)], round));
            Assert.True(driver.PublishAvailable(), $"round {round}: the device re-armed at this slot when it found the ring empty");
            Assert.True(device.TryPop(out DescriptorChain c));
            Assert.False(device.TryPop(out _)); // empty: re-arms
            (ushort desc, ushort flags) = forge.ReadDeviceEvent();
            Assert.Equal(EventSuppression.FlagsDesc, flags);
            Assert.Equal(EventSuppression.Encode(device.NextAvail, ((round + 1) * 2 / 3 % 2) == 0), desc);
            device.PushUsed(c.Id, 0);
            device.PublishUsed();
            Assert.True(driver.TryGetUsed(out _, out _));
        }
    }

    [Fact]
    public void Driver_DISABLE_and_DESC_control_device_interrupts()
    {
        using var forge = new PackedForge(8, VirtqueueFeatures.EventIndex);
        using var driver = new PackedDriverVirtqueue<int>(forge.Memory, forge.Layout, forge.Features);
        using PackedDeviceVirtqueue device = forge.AttachDevice();

        driver.DisableUsedNotifications();
        Use(driver, device, 1);
        Assert.False(device.PublishUsed());
        Assert.True(driver.TryGetUsed(out _, out _));

        // DESC three slots ahead: one used slot does not reach it, three do.
        forge.WriteDriverEvent(EventSuppression.Encode(3, true), EventSuppression.FlagsDesc);
        Use(driver, device, 1);
        Assert.False(device.PublishUsed());
        Use(driver, device, 2);
        Assert.True(device.PublishUsed());
    }

    [Fact]
    public void Delayed_enable_points_three_quarters_into_the_slots_in_flight()
    {
        using var forge = new PackedForge(16, VirtqueueFeatures.EventIndex);
        using var driver = new PackedDriverVirtqueue<int>(forge.Memory, forge.Layout, forge.Features);
        for (int i = 0; i < 8; i++)
        {
            Assert.True(driver.TryAdd([new GuestRange(Buf, 8)], [], i));
        }

        Assert.Equal(NotificationRecheck.NothingPending, driver.EnableUsedNotificationsDelayed());
        Span<byte> e = forge.Span(forge.Layout.DriverAreaAddress, 4);
        Assert.Equal(EventSuppression.Encode(6, true), BinaryPrimitives.ReadUInt16LittleEndian(e));
        Assert.Equal(EventSuppression.FlagsDesc, BinaryPrimitives.ReadUInt16LittleEndian(e[2..]));
    }

    [Fact]
    public void A_used_id_the_driver_never_gave_out_breaks_the_driver_queue()
    {
        using var forge = new PackedForge(4);
        using var driver = new PackedDriverVirtqueue<int>(forge.Memory, forge.Layout, VirtqueueFeatures.None);
        Assert.True(driver.TryAdd([new GuestRange(Buf, 8)], [], 1)); // buffer ID 0
        forge.WriteSlot(0, 0, 0, 3, PackedDescriptor.FlagAvail | PackedDescriptor.FlagUsed);
        Assert.False(driver.TryGetUsed(out _, out _));
        Assert.Equal(QueueError.UsedIdInvalid, driver.Error);
        Assert.False(driver.TryAdd([new GuestRange(Buf, 8)], [], 2));
    }

    [Fact]
    public void Saved_state_restores_and_continues()
    {
        using var forge = new PackedForge(5);
        using var driver = new PackedDriverVirtqueue<int>(forge.Memory, forge.Layout, VirtqueueFeatures.None);
        PackedQueueState state;
        using (PackedDeviceVirtqueue device = forge.AttachDevice())
        {
            for (int i = 0; i < 7; i++)
            {
                Use(driver, device, 1);
                device.PublishUsed();
                Assert.True(driver.TryGetUsed(out _, out _));
            }

            Assert.True(driver.TryAdd([new GuestRange(Buf, 8)], [], 99));
            Assert.True(device.TryPop(out DescriptorChain held));
            device.PushUsed(held.Id, 0);
            Assert.Throws<InvalidOperationException>(() => device.SaveState()); // a pushed used descriptor is unpublished
            device.PublishUsed();
            state = device.SaveState();
        }

        Assert.Equal((ushort)3, state.NextAvail); // 8 slots used in a ring of 5
        Assert.False(state.AvailWrapCounter);
        Assert.True(PackedDeviceVirtqueue.TryRestore(forge.Memory, state, out PackedDeviceVirtqueue? restored, out QueueError error), error.ToString());
        using (restored)
        {
            Assert.True(driver.TryGetUsed(out int token, out _));
            Assert.Equal(99, token);
            Use(driver, restored, 3);
            restored.PublishUsed();
            int back = 0;
            while (driver.TryGetUsed(out _, out _))
            {
                back++;
            }

            Assert.Equal(3, back);
        }

        var bad = state with { NextAvail = 5, NextUsed = 5 };
        Assert.False(PackedDeviceVirtqueue.TryRestore(forge.Memory, bad, out _, out QueueError e2));
        Assert.Equal(QueueError.InvalidSavedState, e2);
        var mismatched = state with { NextUsed = 1 };
        Assert.False(PackedDeviceVirtqueue.TryRestore(forge.Memory, mismatched, out _, out QueueError e3));
        Assert.Equal(QueueError.InvalidSavedState, e3);
    }

    [Fact]
    public void Free_slots_and_buffers_in_flight_follow_the_ring_across_laps()
    {
        // Free slots are derived from the ring positions and wrap counters; check them at every step of three
        // laps of mixed one- and two-slot buffers, including the full ring (positions equal, wraps differ).
        const int Q = 4;
        using var forge = new PackedForge(Q);
        using var driver = new PackedDriverVirtqueue<int>(forge.Memory, forge.Layout, VirtqueueFeatures.None);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        int usedSlots = 0;
        for (int round = 0; round < 6; round++)
        {
            Assert.True(driver.TryAdd([new GuestRange(Buf, 8)], [new GuestRange(Buf + 8, 8)], round)); // 2 slots
            Assert.True(driver.TryAdd([new GuestRange(Buf, 8)], [], 100 + round));                      // 1 slot
            Assert.True(driver.TryAdd([], [new GuestRange(Buf, 8)], 200 + round));                       // 1 slot
            Assert.Equal(0, driver.FreeDescriptors);
            Assert.Equal(3, driver.InFlight);
            Assert.False(driver.TryAdd([new GuestRange(Buf, 8)], [], -1)); // full: no room, not an error
            for (int i = 0; i < 3; i++)
            {
                Assert.True(device.TryPop(out DescriptorChain chain));
                device.PushUsed(chain.Id, 0);
            }

            device.FlushUsed();
            Assert.True(driver.TryGetUsed(out int first, out _));
            Assert.Equal(round, first);
            Assert.Equal(2, driver.FreeDescriptors);
            Assert.True(driver.TryGetUsed(out _, out _));
            Assert.True(driver.TryGetUsed(out _, out _));
            Assert.Equal(Q, driver.FreeDescriptors);
            Assert.Equal(0, driver.InFlight);
            usedSlots += Q;
        }

        Assert.False(driver.IsBroken);
        Assert.Equal(6 * Q, usedSlots);
    }

    [Fact]
    public void After_buffers_are_detached_the_queue_takes_no_more_until_reset()
    {
        using var forge = new PackedForge(4);
        using var driver = new PackedDriverVirtqueue<int>(forge.Memory, forge.Layout, VirtqueueFeatures.None);
        Assert.True(driver.TryAdd([new GuestRange(Buf, 8)], [], 1));
        Assert.True(driver.TryAdd([new GuestRange(Buf, 8)], [], 2));

        // Device reset: both buffers come back unused. The ring still holds their slots, so adding now would
        // reuse positions the reset device never saw; the driver refuses until Reset.
        Assert.True(driver.TryDetachUnused(out int a));
        Assert.True(driver.TryDetachUnused(out int b));
        Assert.False(driver.TryDetachUnused(out _));
        Assert.Equal(3, a + b);
        Assert.Equal(0, driver.InFlight);
        Assert.False(driver.TryAdd([new GuestRange(Buf, 8)], [], 3));
        driver.Reset();
        Assert.Equal(4, driver.FreeDescriptors);
        Assert.True(driver.TryAdd([new GuestRange(Buf, 8)], [], 3));
        Assert.Equal((Buf, 8u), (ReadAddress(forge, 0), forge.ReadSlot(0).Len)); // written from slot 0 again
    }

    private static ulong ReadAddress(PackedForge forge, int slot)
    {
        Assert.Equal(GuestMemoryError.None, forge.Memory.TryGetSpan(forge.Layout.DescriptorRingAddress + (ulong)(16 * slot), 8, out Span<byte> bytes));
        return BinaryPrimitives.ReadUInt64LittleEndian(bytes);
    }

    private static void Use(PackedDriverVirtqueue<int> driver, PackedDeviceVirtqueue device, int count)
    {
        for (int i = 0; i < count; i++)
        {
            Assert.True(driver.TryAdd([new GuestRange(Buf, 8)], [], i));
            driver.PublishAvailable();
            Assert.True(device.TryPop(out DescriptorChain c));
            device.PushUsed(c.Id, 0);
        }
    }

    private const ulong Buf = BufferBase;
}

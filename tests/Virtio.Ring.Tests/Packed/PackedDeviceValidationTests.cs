using System;
using Virtio.Ring.Packed;
using static Virtio.Ring.Tests.Packed.PackedForge;

namespace Virtio.Ring.Tests.Packed;

/// <summary>
/// One test per rule the packed device enforces, each with a hand-crafted malicious ring: a typed error and a
/// broken queue, never an exception, a hang or an access outside guest memory.
/// </summary>
public class PackedDeviceValidationTests
{
    private const ulong Buf = BufferBase;

    private static void AssertBroken(PackedDeviceVirtqueue device, QueueError expected)
    {
        Assert.False(device.TryPop(out _));
        Assert.Equal(expected, device.Error);
        for (int i = 0; i < 3; i++)
        {
            Assert.False(device.TryPop(out _));
            Assert.False(device.PublishUsed());
            Assert.Equal(NotificationRecheck.NothingPending, device.EnableAvailableNotifications());
        }

        Assert.Equal(expected, device.Error);
    }

    [Fact]
    public void Nothing_is_popped_from_a_zero_initialised_ring()
    {
        using var forge = new PackedForge(4);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        Assert.False(device.TryPop(out _));
        Assert.False(device.IsBroken);
    }

    [Fact]
    public void A_descriptor_marked_used_is_not_available()
    {
        using var forge = new PackedForge(4);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteSlot(0, Buf, 8, 0, PackedDescriptor.FlagAvail | PackedDescriptor.FlagUsed);
        Assert.False(device.TryPop(out _));
        Assert.False(device.IsBroken);
    }

    [Fact]
    public void Every_descriptor_of_a_list_must_be_available_2_8_6()
    {
        using var forge = new PackedForge(4);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteSlot(1, Buf, 8, 0, 0); // second descriptor never made available
        forge.WriteSlot(0, Buf, 8, 0, Avail | Next);
        AssertBroken(device, QueueError.DescriptorNotAvailable);
    }

    [Fact]
    public void A_list_longer_than_the_queue_is_rejected()
    {
        using var forge = new PackedForge(3);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        for (int i = 0; i < 3; i++)
        {
            forge.WriteSlot(i, Buf, 8, 0, Avail | Next); // NEXT on every slot: the list never ends
        }

        AssertBroken(device, QueueError.ChainTooLong);
    }

    [Fact]
    public void The_buffer_id_must_be_below_the_queue_size()
    {
        using var forge = new PackedForge(4);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteSlot(0, Buf, 8, 4, Avail);
        AssertBroken(device, QueueError.BufferIdOutOfRange);
    }

    [Fact]
    public void A_buffer_id_in_flight_cannot_be_made_available_again()
    {
        using var forge = new PackedForge(4);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteSlot(1, Buf, 8, 2, Avail);
        forge.WriteSlot(0, Buf, 8, 2, Avail);
        Assert.True(device.TryPop(out DescriptorChain first));
        Assert.Equal(2, first.Id);
        AssertBroken(device, QueueError.BufferIdInUse);
    }

    [Fact]
    public void No_more_than_queue_size_slots_may_be_in_flight()
    {
        using var forge = new PackedForge(3);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteSlot(1, Buf, 8, 0, Avail);
        forge.WriteSlot(0, Buf, 8, 0, Avail | Next); // buffer 0: slots 0-1
        forge.WriteSlot(2, Buf, 8, 1, Avail);        // buffer 1: slot 2
        Assert.True(device.TryPop(out _));
        Assert.True(device.TryPop(out _));

        // The device holds all three slots; the guest re-offers slot 0 in lap 2 with a free buffer ID anyway, as
        // a one-descriptor list (the device's fast path for those must decline it too).
        forge.WriteSlot(0, Buf, 8, 2, PackedDescriptor.FlagUsed);
        AssertBroken(device, QueueError.InFlightExceedsQueueSize);
    }

    [Fact]
    public void Exactly_queue_size_slots_may_be_in_flight_in_any_lap()
    {
        // The slots in flight are counted from the ring positions and wrap counters: check the boundary after
        // several laps, where both positions are equal and only the wrap counters tell full from empty.
        const int Q = 4;
        using var forge = new PackedForge(Q);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        bool wrap = true;
        int slot = 0;
        for (int lap = 0; lap < 3; lap++)
        {
            for (int i = 0; i < Q; i++)
            {
                forge.WriteSlot(slot, Buf, 8, (ushort)i, wrap ? Avail : PackedDescriptor.FlagUsed);
                slot++;
            }

            slot = 0;
            wrap = !wrap;
            for (int i = 0; i < Q; i++)
            {
                Assert.True(device.TryPop(out DescriptorChain chain), $"lap {lap} buffer {i}: {device.Error}");
                Assert.Equal(i, chain.Id);
            }

            Assert.Equal(Q, device.InFlight);
            Assert.False(device.TryPop(out _)); // full, nothing new: not an error
            Assert.False(device.IsBroken);
            for (int i = 0; i < Q; i++)
            {
                device.PushUsed((ushort)i, 0);
            }

            device.FlushUsed();
        }
    }

    [Fact]
    public void Indirect_requires_VIRTIO_F_INDIRECT_DESC()
    {
        using var forge = new PackedForge(4);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteAt(IndirectBase, Buf, 8, 0, 0);
        forge.WriteSlot(0, IndirectBase, 16, 0, Avail | Indirect);
        AssertBroken(device, QueueError.IndirectNotNegotiated);
    }

    [Fact]
    public void Indirect_with_next_is_rejected_2_8_19()
    {
        using var forge = new PackedForge(4, VirtqueueFeatures.IndirectDescriptors);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteAt(IndirectBase, Buf, 8, 0, 0);
        forge.WriteSlot(1, Buf, 8, 0, Avail);
        forge.WriteSlot(0, IndirectBase, 16, 0, Avail | Indirect | Next);
        AssertBroken(device, QueueError.IndirectWithNext);
    }

    [Fact]
    public void Indirect_inside_a_next_list_is_rejected_2_8_19()
    {
        using var forge = new PackedForge(4, VirtqueueFeatures.IndirectDescriptors);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteAt(IndirectBase, Buf, 8, 0, 0);
        forge.WriteSlot(1, IndirectBase, 16, 0, Avail | Indirect);
        forge.WriteSlot(0, Buf, 8, 0, Avail | Next);
        AssertBroken(device, QueueError.IndirectWithNext);
    }

    [Fact]
    public void Indirect_inside_an_indirect_table_is_rejected()
    {
        using var forge = new PackedForge(4, VirtqueueFeatures.IndirectDescriptors);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteAt(IndirectBase, IndirectBase, 16, 0, Indirect);
        forge.WriteSlot(0, IndirectBase, 16, 0, Avail | Indirect);
        AssertBroken(device, QueueError.NestedIndirect);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(17u)]
    public void Indirect_table_length_is_a_non_zero_multiple_of_16(uint length)
    {
        using var forge = new PackedForge(4, VirtqueueFeatures.IndirectDescriptors);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteSlot(0, IndirectBase, length, 0, Avail | Indirect);
        AssertBroken(device, QueueError.IndirectTableLength);
    }

    [Fact]
    public void An_indirect_table_longer_than_the_queue_is_rejected()
    {
        using var forge = new PackedForge(4, VirtqueueFeatures.IndirectDescriptors);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteSlot(0, IndirectBase, 16 * 5, 0, Avail | Indirect);
        AssertBroken(device, QueueError.ChainTooLong);
    }

    [Theory]
    [InlineData(MemorySize)]
    [InlineData(0xFFFF_FFFF_FFFF_FFF0UL)]
    public void Indirect_table_must_lie_in_guest_memory(ulong address)
    {
        using var forge = new PackedForge(4, VirtqueueFeatures.IndirectDescriptors);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteSlot(0, address, 32, 0, Avail | Indirect);
        AssertBroken(device, QueueError.IndirectTableNotInGuestMemory);
    }

    [Fact]
    public void Readable_after_writable_is_rejected()
    {
        using var forge = new PackedForge(4);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteSlot(1, Buf, 8, 0, Avail);
        forge.WriteSlot(0, Buf, 8, 0, Avail | Write | Next);
        AssertBroken(device, QueueError.ReadableAfterWritable);
    }

    [Fact]
    public void Readable_after_writable_inside_an_indirect_table_is_rejected()
    {
        using var forge = new PackedForge(4, VirtqueueFeatures.IndirectDescriptors);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteAt(IndirectBase, Buf, 8, 0, Write);
        forge.WriteAt(IndirectBase + 16, Buf, 8, 0, 0);
        forge.WriteSlot(0, IndirectBase, 32, 0, Avail | Indirect);
        AssertBroken(device, QueueError.ReadableAfterWritable);
    }

    [Fact]
    public void A_buffer_of_2_GiB_or_more_overflows()
    {
        using var forge = new PackedForge(4);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteSlot(0, 0, 0x8000_0000, 0, Avail);
        AssertBroken(device, QueueError.ChainLengthOverflow);
    }

    [Fact]
    public void List_lengths_may_not_add_up_past_2_pow_32()
    {
        using var forge = new PackedForge(4, memorySize: 0x8000_0000);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteSlot(2, 0, 0x7FFF_FFFF, 0, Avail);
        forge.WriteSlot(1, 0, 0x7FFF_FFFF, 0, Avail | Next);
        forge.WriteSlot(0, 0, 0x7FFF_FFFF, 0, Avail | Next);
        AssertBroken(device, QueueError.ChainLengthOverflow);
    }

    [Theory]
    [InlineData(MemorySize, 1u)]
    [InlineData(MemorySize - 8, 16u)]
    [InlineData(0xFFFF_FFFF_FFFF_FFF8UL, 16u)]
    public void Every_buffer_must_lie_inside_guest_memory(ulong address, uint length)
    {
        using var forge = new PackedForge(4);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteSlot(0, address, length, 0, Avail);
        AssertBroken(device, QueueError.BufferNotInGuestMemory);
        Assert.Equal(address, device.ErrorDetail);
    }

    [Fact]
    public void Descriptors_are_read_once_rewriting_them_after_the_pop_changes_nothing()
    {
        using var forge = new PackedForge(4);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteSlot(1, Buf + 0x100, 32, 3, Avail | Write);
        forge.WriteSlot(0, Buf, 16, 0, Avail | Next);
        Assert.True(device.TryPop(out DescriptorChain chain));
        forge.WriteSlot(0, 0xDEAD_0000_0000, 0xFFFF, 9, Avail | Write);
        forge.WriteSlot(1, 0xBEEF_0000_0000, 0xFFFF, 9, Avail);
        Assert.Equal(3, chain.Id);
        Assert.Equal(new GuestRange(Buf, 16), chain.GetRange(0));
        Assert.Equal(new GuestRange(Buf + 0x100, 32), chain.GetRange(1));
        Assert.Equal(32, chain.GetWritable(0).Length);
    }

    [Fact]
    public void Ring_parts_must_lie_in_guest_memory_and_be_aligned()
    {
        using GuestMemory memory = GuestMemory.Allocate(1 << 20);
        Assert.False(PackedDeviceVirtqueue.TryAttach(memory, new PackedQueueLayout(4, 1 << 20, 0x100, 0x104), VirtqueueFeatures.None, out _, out QueueError e1));
        Assert.Equal(QueueError.RingNotInGuestMemory, e1);
        Assert.False(PackedDeviceVirtqueue.TryAttach(memory, new PackedQueueLayout(4, 0x1008, 0x100, 0x104), VirtqueueFeatures.None, out _, out QueueError e2));
        Assert.Equal(QueueError.RingMisaligned, e2);
        Assert.False(PackedDeviceVirtqueue.TryAttach(memory, new PackedQueueLayout(0, 0x1000, 0x100, 0x104), VirtqueueFeatures.None, out _, out QueueError e3));
        Assert.Equal(QueueError.InvalidQueueSize, e3);
    }

    [Fact]
    public void Pushing_a_buffer_the_device_does_not_hold_is_a_caller_bug()
    {
        using var forge = new PackedForge(4);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        Assert.Throws<InvalidOperationException>(() => device.PushUsed(0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.PushUsed(4, 0));
    }

    [Fact]
    public void Random_garbage_rings_never_escape_guest_memory()
    {
        var rng = new Random(4242);
        using var forge = new PackedForge(13, VirtqueueFeatures.IndirectDescriptors | VirtqueueFeatures.EventIndex);
        int broken = 0;
        for (int round = 0; round < 2000; round++)
        {
            rng.NextBytes(forge.Span(RingBase, (int)PackedQueueLayout.CompactTotalBytes(13)));
            for (int i = 0; i < 13; i++)
            {
                if (rng.Next(2) == 0)
                {
                    ulong addr = rng.Next(3) == 0 ? IndirectBase : Buf + (ulong)rng.Next(1 << 20);
                    ushort flags = (ushort)((rng.Next(8) & 7) | (rng.Next(2) == 0 ? Avail : 0) | (rng.Next(4) == 0 ? PackedDescriptor.FlagUsed : 0));
                    forge.WriteSlot(i, addr, (uint)rng.Next(0, 64), (ushort)rng.Next(16), flags);
                }
            }

            rng.NextBytes(forge.Span(IndirectBase, 128));
            using PackedDeviceVirtqueue device = forge.AttachDevice();
            int pops = 0;
            while (pops < 64 && device.TryPop(out DescriptorChain chain))
            {
                pops++;
                for (int i = 0; i < chain.SegmentCount; i++)
                {
                    GuestRange r = chain.GetRange(i);
                    Assert.True(r.Address + r.Length <= MemorySize);
                }

                device.PushUsed(chain.Id, 0);
            }

            device.PublishUsed();
            broken += device.IsBroken ? 1 : 0;
        }

        Assert.InRange(broken, 1, 2000);
    }
}

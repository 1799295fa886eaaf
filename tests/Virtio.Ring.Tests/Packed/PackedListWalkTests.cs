using Virtio.Ring.Packed;
using static Virtio.Ring.Tests.Packed.PackedForge;

namespace Virtio.Ring.Tests.Packed;

/// <summary>
/// The device's walk of a packed list (2.8.6), with the region cache warm so that its fast walk meets each list:
/// lists that run past the flags one scan read, lists that wrap round the ring's end, and each rule broken in the
/// middle of an otherwise ordinary list, which must still give the rule's typed error.
/// </summary>
public class PackedListWalkTests
{
    private const ulong Buf = BufferBase;
    private const ushort Used = PackedDescriptor.FlagUsed;

    /// <summary>Pops and returns one one-descriptor buffer at slot 0, so the device has a cached region.</summary>
    private static PackedDeviceVirtqueue AttachWarm(PackedForge forge)
    {
        PackedDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteSlot(0, Buf, 8, 0, Avail);
        Assert.True(device.TryPop(out DescriptorChain warm));
        device.PushUsed(warm.Id, 0);
        device.PublishUsed();
        return device;
    }

    private static (ulong Address, uint Length)[] Segments(in DescriptorChain chain) => PopVerdict.SegmentsOf(chain);

    [Fact]
    public void A_list_longer_than_one_scan_is_read_whole()
    {
        using var forge = new PackedForge(16);
        using PackedDeviceVirtqueue device = AttachWarm(forge);
        for (int i = 0; i < 10; i++)
        {
            ushort flags = (ushort)(Avail | (i < 9 ? Next : 0) | (i >= 7 ? Write : 0));
            forge.WriteSlot(1 + i, Buf + (ulong)(i * 0x10), (uint)(i + 1), 3, flags);
        }

        Assert.True(device.TryPop(out DescriptorChain chain), device.Error.ToString());
        Assert.Equal(3, chain.Id);
        Assert.Equal(10, chain.SegmentCount);
        Assert.Equal(7, chain.ReadableCount);
        Assert.Equal(28u, chain.ReadableLength);
        Assert.Equal(27u, chain.WritableLength);
        for (int i = 0; i < 10; i++)
        {
            Assert.Equal((Buf + (ulong)(i * 0x10), (uint)(i + 1)), Segments(chain)[i]);
        }

        device.PushUsed(chain.Id, 5);
        device.PublishUsed();
        Assert.Equal((5u, (ushort)3, (ushort)(Avail | Used | Write)), forge.ReadSlot(1));
    }

    [Fact]
    public void A_list_wrapping_round_the_ring_end_switches_wrap_counter_2_8_1()
    {
        using var forge = new PackedForge(8);
        using PackedDeviceVirtqueue device = AttachWarm(forge);

        // Slots 1-5 take five one-descriptor buffers; the list under test then covers slots 6, 7, 0 and 1,
        // the last two in the second lap, where "available" is AVAIL clear and USED set.
        for (int i = 1; i <= 5; i++)
        {
            forge.WriteSlot(i, Buf, 8, (ushort)i, Avail);
            Assert.True(device.TryPop(out DescriptorChain one));
            device.PushUsed(one.Id, 0);
        }

        device.PublishUsed();
        forge.WriteSlot(6, Buf + 0x100, 1, 7, Avail | Next);
        forge.WriteSlot(7, Buf + 0x200, 2, 7, Avail | Next);
        forge.WriteSlot(0, Buf + 0x300, 3, 7, Used | Next);
        forge.WriteSlot(1, Buf + 0x400, 4, 7, Used | Write);

        Assert.True(device.TryPop(out DescriptorChain chain), device.Error.ToString());
        Assert.Equal([(Buf + 0x100, 1u), (Buf + 0x200, 2u), (Buf + 0x300, 3u), (Buf + 0x400, 4u)], Segments(chain));
        Assert.Equal(3, chain.ReadableCount);
        device.PushUsed(chain.Id, 4);
        device.PublishUsed();

        // The used descriptor goes over the list's first slot with the first lap's wrap counter (2.8.10).
        Assert.Equal((4u, (ushort)7, (ushort)(Avail | Used | Write)), forge.ReadSlot(6));
    }

    [Fact]
    public void A_later_descriptor_not_yet_available_breaks_the_queue_2_8_6()
    {
        using var forge = new PackedForge(16);
        using PackedDeviceVirtqueue device = AttachWarm(forge);
        for (int i = 1; i <= 6; i++)
        {
            forge.WriteSlot(i, Buf, 8, 2, (ushort)(Avail | Next));
        }

        forge.WriteSlot(7, Buf, 8, 2, 0); // beyond the first scan, and not available

        Assert.False(device.TryPop(out _));
        Assert.Equal(QueueError.DescriptorNotAvailable, device.Error);
    }

    [Fact]
    public void Readable_after_writable_deep_in_a_list_breaks_the_queue_2_8_4()
    {
        using var forge = new PackedForge(16);
        using PackedDeviceVirtqueue device = AttachWarm(forge);
        for (int i = 1; i <= 6; i++)
        {
            forge.WriteSlot(i, Buf, 8, 2, (ushort)(Avail | Next | (i >= 3 ? Write : 0)));
        }

        forge.WriteSlot(7, Buf, 8, 2, Avail); // readable after writable ones

        Assert.False(device.TryPop(out _));
        Assert.Equal(QueueError.ReadableAfterWritable, device.Error);
    }

    [Fact]
    public void A_buffer_outside_guest_memory_in_the_middle_of_a_list_breaks_the_queue()
    {
        using var forge = new PackedForge(16);
        using PackedDeviceVirtqueue device = AttachWarm(forge);
        forge.WriteSlot(1, Buf, 8, 2, Avail | Next);
        forge.WriteSlot(2, MemorySize - 4, 8, 2, Avail | Next); // crosses the end of guest memory
        forge.WriteSlot(3, Buf, 8, 2, Avail);

        Assert.False(device.TryPop(out _));
        Assert.Equal(QueueError.BufferNotInGuestMemory, device.Error);
    }

    [Fact]
    public void A_list_whose_id_is_in_flight_breaks_the_queue_2_8_6()
    {
        using var forge = new PackedForge(16);
        using PackedDeviceVirtqueue device = AttachWarm(forge);
        forge.WriteSlot(1, Buf, 8, 5, Avail);
        Assert.True(device.TryPop(out _)); // id 5 now in flight
        forge.WriteSlot(2, Buf, 8, 5, Avail | Next);
        forge.WriteSlot(3, Buf, 8, 5, Avail);

        Assert.False(device.TryPop(out _));
        Assert.Equal(QueueError.BufferIdInUse, device.Error);
    }

    [Fact]
    public void A_list_longer_than_the_queue_breaks_the_queue_with_a_warm_cache()
    {
        using var forge = new PackedForge(8);
        using PackedDeviceVirtqueue device = AttachWarm(forge);
        for (int i = 0; i < 8; i++)
        {
            // Slot 0 is the second lap's (USED set, AVAIL clear); the others the first's. NEXT everywhere.
            forge.WriteSlot(i, Buf, 8, 1, (ushort)((i == 0 ? Used : Avail) | Next));
        }

        Assert.False(device.TryPop(out _));
        Assert.Equal(QueueError.ChainTooLong, device.Error);
    }
}

using System;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Virtio.Ring.Packed;

namespace Virtio.Ring.Tests.Packed;

/// <summary>VIRTIO 1.2, 2.8: packed descriptor and event suppression layouts, and golden bytes.</summary>
public class PackedLayoutTests
{
    [Fact]
    public void Packed_descriptor_is_16_bytes_addr_len_id_flags()
    {
        Assert.Equal(16, Unsafe.SizeOf<PackedDescriptor>());
        Assert.Equal(0, Marshal.OffsetOf<PackedDescriptor>("_addr").ToInt32());
        Assert.Equal(8, Marshal.OffsetOf<PackedDescriptor>("_len").ToInt32());
        Assert.Equal(12, Marshal.OffsetOf<PackedDescriptor>("_id").ToInt32());
        Assert.Equal(14, Marshal.OffsetOf<PackedDescriptor>("_flags").ToInt32());
        var d = new PackedDescriptor(0x1122334455667788, 0xAABBCCDD, 0x0102, 0x8082);
        Assert.Equal(
            new byte[] { 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xDD, 0xCC, 0xBB, 0xAA, 0x02, 0x01, 0x82, 0x80 },
            MemoryMarshal.AsBytes(new ReadOnlySpan<PackedDescriptor>(in d)).ToArray());
    }

    [Fact]
    public void Flag_values_match_the_spec()
    {
        Assert.Equal(1, PackedDescriptor.FlagNext);
        Assert.Equal(2, PackedDescriptor.FlagWrite);
        Assert.Equal(4, PackedDescriptor.FlagIndirect);
        Assert.Equal(0x80, PackedDescriptor.FlagAvail);
        Assert.Equal(0x8000, PackedDescriptor.FlagUsed);
        Assert.Equal(0, EventSuppression.FlagsEnable);
        Assert.Equal(1, EventSuppression.FlagsDisable);
        Assert.Equal(2, EventSuppression.FlagsDesc);
    }

    [Theory]
    [InlineData(true, 0x0080, 0x8080)]
    [InlineData(false, 0x8000, 0x0000)]
    public void Available_and_used_bits_follow_the_wrap_counter_2_8_1(bool wrap, int available, int used)
    {
        Assert.Equal(available, PackedDescriptor.AvailableBits(wrap));
        Assert.Equal(used, PackedDescriptor.UsedBits(wrap));
        Assert.True(PackedDescriptor.IsAvailable((ushort)available, wrap));
        Assert.False(PackedDescriptor.IsAvailable((ushort)available, !wrap));
        Assert.True(PackedDescriptor.IsUsed((ushort)used, wrap));
        Assert.False(PackedDescriptor.IsAvailable((ushort)used, wrap));
        Assert.False(PackedDescriptor.IsUsed(0, true)); // the zero-initialised ring is neither (first lap)
        Assert.False(PackedDescriptor.IsAvailable(0, true));
    }

    [Fact]
    public void Event_suppression_is_4_bytes_desc_then_flags()
    {
        Assert.Equal(4, Unsafe.SizeOf<EventSuppression>());
        Assert.Equal(0, Marshal.OffsetOf<EventSuppression>("_desc").ToInt32());
        Assert.Equal(2, Marshal.OffsetOf<EventSuppression>("_flags").ToInt32());
        var e = new EventSuppression(offset: 5, wrapCounter: true, flags: EventSuppression.FlagsDesc);
        Assert.Equal(new byte[] { 0x05, 0x80, 0x02, 0x00 }, MemoryMarshal.AsBytes(new ReadOnlySpan<EventSuppression>(in e)).ToArray());
        Assert.Equal(5, e.Offset);
        Assert.True(e.WrapCounter);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(255)]
    [InlineData(32768)]
    public void Any_size_from_1_to_32768_is_valid(int q)
    {
        PackedQueueLayout l = PackedQueueLayout.Compact(0x1000, q);
        Assert.Equal(QueueError.None, l.Validate());
        Assert.Equal(16 * q, PackedQueueLayout.DescriptorRingBytes(q));
        Assert.Equal(0x1000UL + (ulong)(16 * q), l.DriverAreaAddress);
        Assert.Equal(l.DriverAreaAddress + 4, l.DeviceAreaAddress);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(32769)]
    public void Sizes_outside_1_to_32768_are_invalid(int q) =>
        Assert.Equal(QueueError.InvalidQueueSize, new PackedQueueLayout(q, 0, 0x1000, 0x1004).Validate());

    [Theory]
    [InlineData(8UL, 0x1000UL, 0x1004UL)]
    [InlineData(0UL, 0x1002UL, 0x1004UL)]
    [InlineData(0UL, 0x1000UL, 0x1006UL)]
    public void Parts_must_be_aligned(ulong ring, ulong driver, ulong device) =>
        Assert.Equal(QueueError.RingMisaligned, new PackedQueueLayout(4, ring, driver, device).Validate());

    /// <summary>
    /// Q=4: a 16-byte readable element at 0x100000 and a 32-byte writable one at 0x101000 as buffer ID 0, then
    /// used with 32 bytes written. Bytes from 2.8.13 and 2.8.1.
    /// </summary>
    [Fact]
    public void Golden_bytes_for_a_two_descriptor_list_and_its_used_descriptor()
    {
        using var forge = new PackedForge(4);
        using var driver = new PackedDriverVirtqueue<int>(forge.Memory, forge.Layout, VirtqueueFeatures.None);
        Assert.True(driver.TryAdd([new GuestRange(0x10_0000, 0x10)], [new GuestRange(0x10_1000, 0x20)], 7));
        byte[] expected =
        [
            0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x81, 0x00, // NEXT|AVAIL
            0x00, 0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x82, 0x00, // WRITE|AVAIL
            .. new byte[32],
        ];
        Assert.Equal(expected, forge.Span(forge.Layout.DescriptorRingAddress, 64).ToArray());

        using PackedDeviceVirtqueue device = forge.AttachDevice();
        Assert.True(device.TryPop(out DescriptorChain chain));
        Assert.Equal(0, chain.Id);
        device.PushUsed(chain.Id, 0x20);
        Assert.True(device.PublishUsed());

        // Slot 0 becomes the used descriptor: id 0, len 32, flags AVAIL|USED|WRITE (wrap counter 1); addr untouched.
        byte[] used = [0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x82, 0x80];
        Assert.Equal(used, forge.Span(forge.Layout.DescriptorRingAddress, 16).ToArray());
        Assert.True(driver.TryGetUsed(out int token, out uint len));
        Assert.Equal((7, 0x20u), (token, len));
    }

    [Fact]
    public void Golden_bytes_for_an_indirect_list()
    {
        using var forge = new PackedForge(4, VirtqueueFeatures.IndirectDescriptors);
        using var pool = new IndirectDescriptorPool(forge.Memory, PackedForge.IndirectBase, 1, 4);
        using var driver = new PackedDriverVirtqueue<int>(forge.Memory, forge.Layout, forge.Features, pool);
        Assert.True(driver.TryAdd([new GuestRange(0x10_0000, 0x10)], [new GuestRange(0x10_1000, 0x20)], 7));
        byte[] ring = [0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x84, 0x00];
        Assert.Equal(ring, forge.Span(forge.Layout.DescriptorRingAddress, 16).ToArray());
        byte[] table =
        [
            0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00,
        ];
        Assert.Equal(table, forge.Span(PackedForge.IndirectBase, 32).ToArray());
    }

    [Fact]
    public void Second_lap_descriptors_carry_inverted_bits()
    {
        using var forge = new PackedForge(2);
        using var driver = new PackedDriverVirtqueue<int>(forge.Memory, forge.Layout, VirtqueueFeatures.None);
        using PackedDeviceVirtqueue device = forge.AttachDevice();
        for (int i = 0; i < 2; i++)
        {
            Assert.True(driver.TryAdd([new GuestRange(0x10_0000, 8)], [], i));
        }

        for (int i = 0; i < 2; i++)
        {
            Assert.True(device.TryPop(out DescriptorChain c));
            device.PushUsed(c.Id, 0);
        }

        device.PublishUsed();
        while (driver.TryGetUsed(out _, out _))
        {
        }

        Assert.True(driver.TryAdd([new GuestRange(0x10_0000, 8)], [], 9)); // lap 2: wrap counter 0
        Assert.Equal(PackedDescriptor.FlagUsed, forge.ReadSlot(0).Flags);
        Assert.True(device.TryPop(out DescriptorChain again));
        device.PushUsed(again.Id, 0);
        device.PublishUsed();
        Assert.Equal(0, forge.ReadSlot(0).Flags); // used in lap 2: AVAIL = USED = 0
        Assert.True(driver.TryGetUsed(out int token, out _));
        Assert.Equal(9, token);
    }
}

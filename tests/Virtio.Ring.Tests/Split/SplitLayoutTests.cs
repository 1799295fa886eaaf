using System;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Virtio.Ring.Split;

namespace Virtio.Ring.Tests.Split;

/// <summary>VIRTIO 1.x 2.7: sizes, alignments and field offsets of the split ring, and golden bytes.</summary>
public class SplitLayoutTests
{
    [Fact]
    public void Descriptor_is_16_bytes_addr_len_flags_next()
    {
        Assert.Equal(16, Unsafe.SizeOf<SplitDescriptor>());
        Assert.Equal(16, Marshal.SizeOf<SplitDescriptor>());
        Assert.Equal(0, Marshal.OffsetOf<SplitDescriptor>("_addr").ToInt32());
        Assert.Equal(8, Marshal.OffsetOf<SplitDescriptor>("_len").ToInt32());
        Assert.Equal(12, Marshal.OffsetOf<SplitDescriptor>("_flags").ToInt32());
        Assert.Equal(14, Marshal.OffsetOf<SplitDescriptor>("_next").ToInt32());
    }

    [Fact]
    public void Descriptor_fields_are_little_endian_on_the_wire()
    {
        var d = new SplitDescriptor(0x1122334455667788, 0xAABBCCDD, 0x0102, 0x0304);
        byte[] bytes = MemoryMarshal.AsBytes(new ReadOnlySpan<SplitDescriptor>(in d)).ToArray();
        Assert.Equal(
            new byte[] { 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xDD, 0xCC, 0xBB, 0xAA, 0x02, 0x01, 0x04, 0x03 },
            bytes);
    }

    [Fact]
    public void Descriptor_flag_values_match_the_spec()
    {
        Assert.Equal(1, SplitDescriptor.FlagNext);
        Assert.Equal(2, SplitDescriptor.FlagWrite);
        Assert.Equal(4, SplitDescriptor.FlagIndirect);
        Assert.Equal(1, SplitQueueLayout.AvailFlagNoInterrupt);
        Assert.Equal(1, SplitQueueLayout.UsedFlagNoNotify);
    }

    [Fact]
    public void Used_element_is_8_bytes_id_then_len()
    {
        Assert.Equal(8, Unsafe.SizeOf<UsedElement>());
        Assert.Equal(0, Marshal.OffsetOf<UsedElement>("_id").ToInt32());
        Assert.Equal(4, Marshal.OffsetOf<UsedElement>("_len").ToInt32());
        var e = new UsedElement(0x01020304, 0x0A0B0C0D);
        Assert.Equal(
            new byte[] { 0x04, 0x03, 0x02, 0x01, 0x0D, 0x0C, 0x0B, 0x0A },
            MemoryMarshal.AsBytes(new ReadOnlySpan<UsedElement>(in e)).ToArray());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(256)]
    [InlineData(32768)]
    public void Area_sizes_and_event_offsets_follow_2_7(int q)
    {
        Assert.Equal(16 * q, SplitQueueLayout.DescriptorTableBytes(q));
        Assert.Equal(6 + (2 * q), SplitQueueLayout.AvailRingBytes(q));
        Assert.Equal(6 + (8 * q), SplitQueueLayout.UsedRingBytes(q));
        Assert.Equal(4 + (2 * q), SplitQueueLayout.UsedEventOffset(q));
        Assert.Equal(4 + (8 * q), SplitQueueLayout.AvailEventOffset(q));
    }

    [Theory]
    [InlineData(1, 0x1000, 0x1010, 0x2000)]
    [InlineData(256, 0x0, 0x1000, 0x2000)]     // 16*256 + 6 + 512 = 4614 -> used at 8192
    [InlineData(128, 0x0, 0x800, 0x1000)]      // 2048 + 262 = 2310 -> 4096
    [InlineData(32768, 0x0, 0x80000, 0x91000)] // 524288 + 65542 = 589830 -> 593920 = 0x91000
    public void Legacy_layout_puts_used_ring_at_QueueAlign(int q, ulong baseGpa, ulong avail, ulong used)
    {
        SplitQueueLayout l = SplitQueueLayout.Legacy(baseGpa, q);
        Assert.Equal(baseGpa, l.DescriptorTableAddress);
        Assert.Equal(avail, l.DriverAreaAddress);
        Assert.Equal(used, l.DeviceAreaAddress);
        Assert.Equal(used - baseGpa + (ulong)SplitQueueLayout.UsedRingBytes(q), SplitQueueLayout.LegacyTotalBytes(q));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(65536)]
    [InlineData(-1)]
    public void Queue_size_must_be_a_power_of_two_up_to_32768(int q)
    {
        Assert.False(SplitQueueLayout.IsValidQueueSize(q));
        Assert.Equal(QueueError.InvalidQueueSize, new SplitQueueLayout(q, 0, 0x1000, 0x2000).Validate());
    }

    [Fact]
    public void Compact_layout_is_aligned()
    {
        for (int q = 1; q <= 32768; q *= 2)
        {
            SplitQueueLayout l = SplitQueueLayout.Compact(0x1000, q);
            Assert.Equal(QueueError.None, l.Validate());
            Assert.True(l.DeviceAreaAddress >= l.DriverAreaAddress + (ulong)SplitQueueLayout.AvailRingBytes(q));
        }
    }

    /// <summary>
    /// Golden bytes: Q=4, one chain of a 16-byte device-readable buffer at 0x100000 and a 32-byte device-writable
    /// buffer at 0x101000, made available and then used with len 32. Every byte is written out from 2.7.5-2.7.8.
    /// </summary>
    [Fact]
    public void Golden_bytes_for_a_two_descriptor_chain()
    {
        using var forge = new RingForge(4);
        using var driver = new SplitDriverVirtqueue<int>(forge.Memory, forge.Layout, VirtqueueFeatures.None);
        Assert.True(driver.TryAdd([new GuestRange(0x10_0000, 0x10)], [new GuestRange(0x10_1000, 0x20)], 7));
        Assert.True(driver.PublishAvailable());

        byte[] expectedDesc =
        [
            0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, // desc[0]: NEXT -> 1
            0x00, 0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // desc[1]: WRITE
            .. new byte[32],
        ];
        Assert.Equal(expectedDesc, forge.Span(forge.Layout.DescriptorTableAddress, 64).ToArray());

        // flags=0, idx=1, ring[0]=0 (head), ring[1..3]=0, used_event=0
        byte[] expectedAvail = [0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
        Assert.Equal(expectedAvail, forge.Span(forge.Layout.DriverAreaAddress, 14).ToArray());

        using SplitDeviceVirtqueue device = forge.AttachDevice();
        Assert.True(device.TryPop(out DescriptorChain chain));
        device.PushUsed(chain.Id, 0x20);
        Assert.True(device.PublishUsed());

        // flags=0, idx=1, ring[0]={id 0, len 0x20}
        byte[] expectedUsed = [0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00];
        Assert.Equal(expectedUsed, forge.Span(forge.Layout.DeviceAreaAddress, 12).ToArray());
    }

    [Fact]
    public void Golden_bytes_for_an_indirect_chain()
    {
        using var forge = new RingForge(4, VirtqueueFeatures.IndirectDescriptors);
        using var pool = new IndirectDescriptorPool(forge.Memory, RingForge.IndirectBase, 2, 4);
        using var driver = new SplitDriverVirtqueue<int>(forge.Memory, forge.Layout, forge.Features, pool);
        Assert.True(driver.TryAdd([new GuestRange(0x10_0000, 0x10)], [new GuestRange(0x10_1000, 0x20)], 7));
        driver.PublishAvailable();

        // Ring descriptor 0: addr = table 0 at 0x80000, len = 2 * 16, flags = INDIRECT.
        byte[] expectedRingDesc = [0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00];
        Assert.Equal(expectedRingDesc, forge.Span(forge.Layout.DescriptorTableAddress, 16).ToArray());
        byte[] expectedTable =
        [
            0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00,
            0x00, 0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
        ];
        Assert.Equal(expectedTable, forge.Span(RingForge.IndirectBase, 32).ToArray());
    }
}

using System;
using Virtio.Ring.Split;

namespace Virtio.Ring.Tests.Split;

/// <summary>
/// One test per rule the device enforces on guest-written ring memory. Each feeds a hand-crafted malicious ring
/// and expects a typed error and a broken queue: no exception, no hang, no access outside guest memory.
/// </summary>
public class SplitDeviceValidationTests
{
    private const ushort Next = SplitDescriptor.FlagNext;
    private const ushort Write = SplitDescriptor.FlagWrite;
    private const ushort Indirect = SplitDescriptor.FlagIndirect;
    private const ulong Buf = RingForge.BufferBase;

    private static void AssertBroken(SplitDeviceVirtqueue device, QueueError expected)
    {
        Assert.False(device.TryPop(out _));
        Assert.Equal(expected, device.Error);
        Assert.True(device.IsBroken);

        // A broken queue stays broken and quiet: no exception storm, nothing popped, nothing published.
        for (int i = 0; i < 3; i++)
        {
            Assert.False(device.TryPop(out _));
            Assert.False(device.PublishUsed());
            Assert.Equal(NotificationRecheck.NothingPending, device.EnableAvailableNotifications());
            device.PushUsed(0, 0);
        }

        Assert.Equal(expected, device.Error);
    }

    [Fact]
    public void Avail_idx_may_not_move_more_than_queue_size_2_7_6()
    {
        using var forge = new RingForge(8);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteAvailIdx(9);
        AssertBroken(device, QueueError.AvailIndexJump);
        Assert.Equal(9UL, device.ErrorDetail);
    }

    [Fact]
    public void Avail_idx_exactly_queue_size_ahead_is_accepted()
    {
        using var forge = new RingForge(8);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        for (ushort i = 0; i < 8; i++)
        {
            forge.WriteDescriptor(i, Buf, 8, 0);
            forge.WriteAvailEntry(i, i);
        }

        forge.WriteAvailIdx(8);
        for (int i = 0; i < 8; i++)
        {
            Assert.True(device.TryPop(out DescriptorChain chain));
            Assert.Equal(i, chain.Id);
        }

        Assert.False(device.TryPop(out _));
        Assert.False(device.IsBroken);
    }

    [Fact]
    public void Avail_idx_moving_backwards_is_a_jump()
    {
        using var forge = new RingForge(8);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.OfferSimple(0, 0, Buf, 8);
        Assert.True(device.TryPop(out _));
        forge.WriteAvailIdx(0); // 0 - 1 = 65535 > 8
        AssertBroken(device, QueueError.AvailIndexJump);
    }

    [Fact]
    public void No_more_than_queue_size_chains_may_be_in_flight()
    {
        using var forge = new RingForge(2);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.OfferSimple(0, 0, Buf, 8);
        forge.OfferSimple(1, 1, Buf, 8);
        Assert.True(device.TryPop(out _));
        Assert.True(device.TryPop(out _));

        // Both chains are still held by the device; the guest offers head 0 again.
        forge.WriteAvailEntry(0, 0);
        forge.WriteAvailIdx(3);
        AssertBroken(device, QueueError.InFlightExceedsQueueSize);
    }

    [Fact]
    public void Head_index_must_be_below_queue_size()
    {
        using var forge = new RingForge(8);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteAvailEntry(0, 8);
        forge.WriteAvailIdx(1);
        AssertBroken(device, QueueError.HeadIndexOutOfRange);
        Assert.Equal(8UL, device.ErrorDetail);
    }

    [Fact]
    public void Next_index_must_be_below_queue_size()
    {
        using var forge = new RingForge(8);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptor(0, Buf, 8, Next, next: 8);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.NextIndexOutOfRange);
    }

    [Fact]
    public void A_looping_chain_is_longer_than_the_queue()
    {
        using var forge = new RingForge(8);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptor(0, Buf, 8, Next, next: 1);
        forge.WriteDescriptor(1, Buf, 8, Next, next: 0);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.ChainTooLong);
    }

    [Fact]
    public void A_self_loop_in_a_queue_of_one_is_caught()
    {
        using var forge = new RingForge(1);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptor(0, Buf, 8, Next, next: 0);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.ChainTooLong);
    }

    [Fact]
    public void A_chain_using_every_descriptor_is_accepted()
    {
        using var forge = new RingForge(8);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        for (ushort i = 0; i < 8; i++)
        {
            forge.WriteDescriptor(i, Buf + (ulong)(i * 16), 16, i < 7 ? Next : (ushort)0, (ushort)(i + 1));
        }

        forge.MakeFirstChainAvailable(head: 0);
        Assert.True(device.TryPop(out DescriptorChain chain));
        Assert.Equal(8, chain.SegmentCount);
        Assert.Equal(128u, chain.ReadableLength);
    }

    [Fact]
    public void A_looping_indirect_table_is_caught()
    {
        using var forge = new RingForge(8, VirtqueueFeatures.IndirectDescriptors);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptorAt(RingForge.IndirectBase, Buf, 8, Next, 1);
        forge.WriteDescriptorAt(RingForge.IndirectBase + 16, Buf, 8, Next, 0);
        forge.WriteDescriptor(0, RingForge.IndirectBase, 32, Indirect);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.ChainTooLong);
    }

    [Fact]
    public void Indirect_table_entries_count_towards_the_queue_size_limit()
    {
        using var forge = new RingForge(2, VirtqueueFeatures.IndirectDescriptors);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        for (int i = 0; i < 3; i++)
        {
            forge.WriteDescriptorAt(RingForge.IndirectBase + (ulong)(16 * i), Buf, 8, i < 2 ? Next : (ushort)0, (ushort)(i + 1));
        }

        forge.WriteDescriptor(0, RingForge.IndirectBase, 48, Indirect);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.ChainTooLong);
    }

    [Fact]
    public void Indirect_requires_VIRTIO_F_INDIRECT_DESC()
    {
        using var forge = new RingForge(8);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptorAt(RingForge.IndirectBase, Buf, 8, 0, 0);
        forge.WriteDescriptor(0, RingForge.IndirectBase, 16, Indirect);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.IndirectNotNegotiated);
    }

    [Fact]
    public void Indirect_and_next_on_the_same_descriptor_is_rejected()
    {
        using var forge = new RingForge(8, VirtqueueFeatures.IndirectDescriptors);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptorAt(RingForge.IndirectBase, Buf, 8, 0, 0);
        forge.WriteDescriptor(0, RingForge.IndirectBase, 16, Indirect | Next, next: 1);
        forge.WriteDescriptor(1, Buf, 8, 0);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.IndirectWithNext);
    }

    [Fact]
    public void Indirect_inside_an_indirect_table_is_rejected()
    {
        using var forge = new RingForge(8, VirtqueueFeatures.IndirectDescriptors);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptorAt(RingForge.IndirectBase, RingForge.IndirectBase + 0x100, 16, Indirect, 0);
        forge.WriteDescriptorAt(RingForge.IndirectBase + 0x100, Buf, 8, 0, 0);
        forge.WriteDescriptor(0, RingForge.IndirectBase, 16, Indirect);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.NestedIndirect);
    }

    [Fact]
    public void An_indirect_table_aliasing_the_descriptor_table_cannot_nest()
    {
        using var forge = new RingForge(8, VirtqueueFeatures.IndirectDescriptors);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptor(0, forge.Layout.DescriptorTableAddress, 16 * 8, Indirect); // points at itself
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.NestedIndirect);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(8u)]
    [InlineData(17u)]
    [InlineData(33u)]
    public void Indirect_table_length_is_a_non_zero_multiple_of_16(uint length)
    {
        using var forge = new RingForge(8, VirtqueueFeatures.IndirectDescriptors);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptorAt(RingForge.IndirectBase, Buf, 8, 0, 0);
        forge.WriteDescriptor(0, RingForge.IndirectBase, length, Indirect);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.IndirectTableLength);
    }

    [Theory]
    [InlineData(RingForge.MemorySize)]             // just past guest memory
    [InlineData(RingForge.MemorySize - 16)]        // table runs off the end
    [InlineData(0xFFFF_FFFF_FFFF_FFF0UL)]          // addr + len wraps
    public void Indirect_table_must_lie_in_guest_memory(ulong tableAddress)
    {
        using var forge = new RingForge(8, VirtqueueFeatures.IndirectDescriptors);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptor(0, tableAddress, 32, Indirect);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.IndirectTableNotInGuestMemory);
    }

    [Fact]
    public void Indirect_next_index_must_be_inside_the_table()
    {
        using var forge = new RingForge(8, VirtqueueFeatures.IndirectDescriptors);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptorAt(RingForge.IndirectBase, Buf, 8, Next, 2); // table has 2 entries
        forge.WriteDescriptor(0, RingForge.IndirectBase, 32, Indirect);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.NextIndexOutOfRange);
    }

    [Fact]
    public void Direct_descriptors_followed_by_one_indirect_descriptor_are_accepted_2_7_5_3_2()
    {
        using var forge = new RingForge(8, VirtqueueFeatures.IndirectDescriptors);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptorAt(RingForge.IndirectBase, Buf + 0x100, 32, Write, 0);
        forge.WriteDescriptor(0, Buf, 16, Next, next: 1);
        forge.WriteDescriptor(1, RingForge.IndirectBase, 16, Indirect | Write); // WRITE on it is ignored
        forge.MakeFirstChainAvailable(head: 0);
        Assert.True(device.TryPop(out DescriptorChain chain));
        Assert.Equal(1, chain.ReadableCount);
        Assert.Equal(1, chain.WritableCount);
        Assert.Equal(16u, chain.ReadableLength);
        Assert.Equal(32u, chain.WritableLength);
        Assert.Equal(new GuestRange(Buf + 0x100, 32), chain.GetRange(1));
    }

    [Fact]
    public void A_buffer_of_2_GiB_or_more_overflows()
    {
        using var forge = new RingForge(8);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptor(0, 0, 0x8000_0000, 0);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.ChainLengthOverflow);
    }

    [Fact]
    public void Chain_lengths_may_not_add_up_past_2_pow_32()
    {
        // Three 2 GiB - 1 buffers overlapping one sparse 2 GiB region: the sum check fires before the third is used.
        using var forge = new RingForge(8, memorySize: 0x8000_0000);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptor(0, 0, 0x7FFF_FFFF, Next, 1);
        forge.WriteDescriptor(1, 0, 0x7FFF_FFFF, Next, 2);
        forge.WriteDescriptor(2, 0, 0x7FFF_FFFF, 0);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.ChainLengthOverflow);
    }

    [Fact]
    public void Readable_after_writable_is_rejected_2_7_4_2()
    {
        using var forge = new RingForge(8);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptor(0, Buf, 8, Write | Next, 1);
        forge.WriteDescriptor(1, Buf + 8, 8, 0);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.ReadableAfterWritable);
    }

    [Fact]
    public void Readable_after_writable_across_an_indirect_table_is_rejected()
    {
        using var forge = new RingForge(8, VirtqueueFeatures.IndirectDescriptors);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptorAt(RingForge.IndirectBase, Buf, 8, 0, 0); // readable inside the table
        forge.WriteDescriptor(0, Buf, 8, Write | Next, 1);
        forge.WriteDescriptor(1, RingForge.IndirectBase, 16, Indirect);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.ReadableAfterWritable);
    }

    [Theory]
    [InlineData(RingForge.MemorySize, 1u)]               // starts past the end
    [InlineData(RingForge.MemorySize - 8, 16u)]          // runs past the end
    [InlineData(0xFFFF_FFFF_FFFF_FFF8UL, 16u)]           // addr + len wraps
    [InlineData(0x8000_0000_0000_0000UL, 0u)]            // zero length but unmapped
    public void Every_buffer_must_lie_inside_guest_memory(ulong address, uint length)
    {
        using var forge = new RingForge(8);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptor(0, address, length, 0);
        forge.MakeFirstChainAvailable(head: 0);
        AssertBroken(device, QueueError.BufferNotInGuestMemory);
        Assert.Equal(address, device.ErrorDetail);
    }

    [Fact]
    public void A_buffer_spanning_two_regions_is_rejected()
    {
        using GuestMemory memory = new GuestMemoryBuilder()
            .AddAllocatedRegion(0, 1 << 20)
            .AddAllocatedRegion(1 << 20, 1 << 20)
            .Build();
        SplitQueueLayout layout = SplitQueueLayout.Compact(0x1000, 4);
        Assert.True(SplitDeviceVirtqueue.TryAttach(memory, layout, VirtqueueFeatures.None, out SplitDeviceVirtqueue? device, out _));
        using (device)
        {
            Assert.Equal(GuestMemoryError.None, memory.TryGetSpan(layout.DescriptorTableAddress, 16, out Span<byte> d));
            BitConverter.TryWriteBytes(d, (ulong)((1 << 20) - 8));
            BitConverter.TryWriteBytes(d[8..], 16u);
            Assert.Equal(GuestMemoryError.None, memory.TryGetSpan(layout.DriverAreaAddress, 6, out Span<byte> avail));
            avail[2] = 1; // idx = 1, ring[0] = 0
            AssertBroken(device, QueueError.BufferNotInGuestMemory);
        }
    }

    [Fact]
    public void Descriptors_are_read_once_rewriting_them_after_the_pop_changes_nothing()
    {
        using var forge = new RingForge(8);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        forge.WriteDescriptor(0, Buf, 16, Next, 1);
        forge.WriteDescriptor(1, Buf + 0x100, 32, Write);
        forge.MakeFirstChainAvailable(head: 0);
        Assert.True(device.TryPop(out DescriptorChain chain));

        // The guest now points both descriptors outside memory and flips the WRITE flag.
        forge.WriteDescriptor(0, 0xDEAD_0000_0000, 0xFFFF, Write | Next, 5);
        forge.WriteDescriptor(1, 0xBEEF_0000_0000, 0xFFFF, 0);

        Assert.Equal(new GuestRange(Buf, 16), chain.GetRange(0));
        Assert.Equal(new GuestRange(Buf + 0x100, 32), chain.GetRange(1));
        Assert.Equal(16, chain.GetReadable(0).Length);
        Assert.Equal(32, chain.GetWritable(0).Length);
        Assert.False(device.IsBroken);
    }

    [Fact]
    public void Ring_areas_must_lie_in_guest_memory()
    {
        using GuestMemory memory = GuestMemory.Allocate(1 << 20);
        var outside = new SplitQueueLayout(256, 1 << 20, 0x1000, 0x2000);
        Assert.False(SplitDeviceVirtqueue.TryAttach(memory, outside, VirtqueueFeatures.None, out _, out QueueError e1));
        Assert.Equal(QueueError.RingNotInGuestMemory, e1);

        var straddling = new SplitQueueLayout(256, 0, 0x1000, (1 << 20) - 0x100);
        Assert.False(SplitDeviceVirtqueue.TryAttach(memory, straddling, VirtqueueFeatures.None, out _, out QueueError e2));
        Assert.Equal(QueueError.RingNotInGuestMemory, e2);
    }

    [Theory]
    [InlineData(8UL, 0x1000UL, 0x2000UL)]
    [InlineData(0UL, 0x1001UL, 0x2000UL)]
    [InlineData(0UL, 0x1000UL, 0x2002UL)]
    public void Ring_areas_must_be_aligned(ulong desc, ulong avail, ulong used)
    {
        using GuestMemory memory = GuestMemory.Allocate(1 << 20);
        Assert.False(SplitDeviceVirtqueue.TryAttach(memory, new SplitQueueLayout(16, desc, avail, used), VirtqueueFeatures.None, out _, out QueueError error));
        Assert.Equal(QueueError.RingMisaligned, error);
    }

    [Fact]
    public void Queue_size_from_the_guest_is_validated()
    {
        using GuestMemory memory = GuestMemory.Allocate(1 << 20);
        Assert.False(SplitDeviceVirtqueue.TryAttach(memory, new SplitQueueLayout(100, 0, 0x1000, 0x2000), VirtqueueFeatures.None, out _, out QueueError error));
        Assert.Equal(QueueError.InvalidQueueSize, error);
    }

    /// <summary>
    /// Random ring memory, many times over: the device either pops valid chains or breaks with a typed error, and
    /// every span it hands out lies inside guest memory. It never throws.
    /// </summary>
    [Fact]
    public void Random_garbage_rings_never_escape_guest_memory()
    {
        var rng = new Random(12345);
        using var forge = new RingForge(16, VirtqueueFeatures.IndirectDescriptors | VirtqueueFeatures.EventIndex);
        Span<byte> all = forge.Span(0, (int)RingForge.MemorySize);
        int broken = 0;
        for (int round = 0; round < 2000; round++)
        {
            Span<byte> ring = forge.Span(RingForge.RingBase, (int)SplitQueueLayout.CompactTotalBytes(16));
            rng.NextBytes(ring);
            // Point some descriptors at real memory so that deeper rules are reached too.
            for (int i = 0; i < 16; i++)
            {
                if (rng.Next(2) == 0)
                {
                    ulong addr = rng.Next(3) == 0 ? RingForge.IndirectBase : Buf + (ulong)rng.Next(1 << 20);
                    forge.WriteDescriptor(i, addr, (uint)rng.Next(0, 256), (ushort)rng.Next(8), (ushort)rng.Next(20));
                }
            }

            rng.NextBytes(forge.Span(RingForge.IndirectBase, 256));
            using SplitDeviceVirtqueue device = forge.AttachDevice();
            int pops = 0;
            while (pops < 64 && device.TryPop(out DescriptorChain chain))
            {
                pops++;
                for (int i = 0; i < chain.SegmentCount; i++)
                {
                    GuestRange r = chain.GetRange(i);
                    Assert.True(r.Address + r.Length <= RingForge.MemorySize);
                }

                foreach (ReadOnlySpan<byte> s in chain.Readable)
                {
                    Assert.True(Overlaps(all, s));
                }

                device.PushUsed(chain.Id, 0);
            }

            device.PublishUsed();
            broken += device.IsBroken ? 1 : 0;
        }

        Assert.InRange(broken, 1, 2000);
    }

    private static unsafe bool Overlaps(Span<byte> outer, ReadOnlySpan<byte> inner)
    {
        fixed (byte* o = outer)
        fixed (byte* i = inner)
        {
            return inner.IsEmpty || (i >= o && i + inner.Length <= o + outer.Length);
        }
    }
}

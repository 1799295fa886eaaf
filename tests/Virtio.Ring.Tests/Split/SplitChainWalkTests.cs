using System;
using Virtio.Ring.Split;

namespace Virtio.Ring.Tests.Split;

/// <summary>
/// The device walks a chain by its <c>next</c> fields wherever they point (2.7.5): the walk's shortcut for
/// consecutive descriptors, its cached guest memory region and its growable scratch must never change what it
/// reads. Each test places decoys where a wrong guess would land, and pops its chain twice: the first pop
/// finds the region cache empty (the complete walk runs), the second takes the fast walk; both must agree.
/// </summary>
public class SplitChainWalkTests
{
    private const ushort Next = SplitDescriptor.FlagNext;
    private const ushort Write = SplitDescriptor.FlagWrite;
    private const ushort Indirect = SplitDescriptor.FlagIndirect;
    private const ulong Buf = RingForge.BufferBase;
    private const ulong Decoy = Buf + 0x8000; // a valid buffer: a walk that read a decoy would pop a wrong chain, not fail

    private static (ulong Address, uint Length)[] Segments(in DescriptorChain chain) => PopVerdict.SegmentsOf(chain);

    /// <summary>Offers the chain at <paramref name="head"/> twice and returns the second pop's view of it.</summary>
    private static (ulong Address, uint Length)[] PopTwice(RingForge forge, SplitDeviceVirtqueue device, ushort head, out int readable)
    {
        forge.WriteAvailEntry(0, head);
        forge.WriteAvailEntry(1, head);
        forge.WriteAvailIdx(2);
        Assert.True(device.TryPop(out DescriptorChain first), device.Error.ToString());
        (ulong, uint)[] firstSegments = Segments(first);
        int firstReadable = first.ReadableCount;
        device.PushUsed(first.Id, 0);
        Assert.True(device.TryPop(out DescriptorChain second), device.Error.ToString());
        Assert.Equal(head, second.Id);
        Assert.Equal(firstSegments, Segments(second));
        Assert.Equal(firstReadable, second.ReadableCount);
        readable = second.ReadableCount;
        return Segments(second);
    }

    [Fact]
    public void A_chain_is_followed_by_next_not_by_table_order_2_7_5()
    {
        using var forge = new RingForge(16);

        // 5 -> 2 -> 3 -> 9 -> 8: backwards, consecutive, forwards, backwards. Entries 6, 4 and 10 (the ones a
        // walker guessing "index + 1" would read) hold decoys.
        forge.WriteDescriptor(5, Buf + 0x000, 10, Next, 2);
        forge.WriteDescriptor(2, Buf + 0x100, 20, Next, 3);
        forge.WriteDescriptor(3, Buf + 0x200, 30, Next, 9);
        forge.WriteDescriptor(9, Buf + 0x300, 40, Next | Write, 8);
        forge.WriteDescriptor(8, Buf + 0x400, 50, Write);
        forge.WriteDescriptor(6, Decoy, 1, 0);
        forge.WriteDescriptor(4, Decoy, 1, 0);
        forge.WriteDescriptor(10, Decoy, 1, 0);
        using SplitDeviceVirtqueue device = forge.AttachDevice();

        Assert.Equal([(Buf, 10u), (Buf + 0x100, 20u), (Buf + 0x200, 30u), (Buf + 0x300, 40u), (Buf + 0x400, 50u)], PopTwice(forge, device, 5, out int readable));
        Assert.Equal(3, readable);
    }

    [Fact]
    public void A_chain_ending_at_the_last_entry_then_wrapping_by_next_is_followed()
    {
        using var forge = new RingForge(8);
        forge.WriteDescriptor(6, Buf, 1, Next, 7);
        forge.WriteDescriptor(7, Buf + 0x10, 2, Next, 0); // the following entry would be past the table
        forge.WriteDescriptor(0, Buf + 0x20, 3, 0);
        using SplitDeviceVirtqueue device = forge.AttachDevice();

        Assert.Equal([(Buf, 1u), (Buf + 0x10, 2u), (Buf + 0x20, 3u)], PopTwice(forge, device, 6, out _));
    }

    [Fact]
    public void An_indirect_table_is_followed_by_next_too_2_7_5_3()
    {
        using var forge = new RingForge(8, VirtqueueFeatures.IndirectDescriptors);
        ulong table = RingForge.IndirectBase;
        forge.WriteDescriptorAt(table + (16 * 0), Buf + 0x000, 4, Next, 3);
        forge.WriteDescriptorAt(table + (16 * 3), Buf + 0x100, 5, Next, 1);
        forge.WriteDescriptorAt(table + (16 * 1), Buf + 0x200, 6, Write);
        forge.WriteDescriptorAt(table + (16 * 2), Decoy, 1, 0);
        forge.WriteDescriptorAt(table + (16 * 4), Decoy, 1, 0);
        forge.WriteDescriptor(1, Buf + 0x300, 7, Next, 2); // a direct part first
        forge.WriteDescriptor(2, table, 16 * 5, Indirect);
        using SplitDeviceVirtqueue device = forge.AttachDevice();

        Assert.Equal([(Buf + 0x300, 7u), (Buf, 4u), (Buf + 0x100, 5u), (Buf + 0x200, 6u)], PopTwice(forge, device, 1, out int readable));
        Assert.Equal(3, readable);
    }

    [Fact]
    public void Buffers_alternating_between_memory_regions_translate_each_to_its_own_region()
    {
        const ulong High = 0x1_0000_0000;
        GuestMemory memory = new GuestMemoryBuilder()
            .AddAllocatedRegion(0, RingForge.MemorySize)
            .AddAllocatedRegion(High, 1 << 20)
            .Build();
        using var forge = new RingForge(memory, 16);
        for (int i = 0; i < 6; i++)
        {
            ulong address = (i % 2 == 0 ? Buf : High) + (ulong)(i * 0x100);
            forge.WriteDescriptor(i, address, 8, i < 5 ? Next : (ushort)0, (ushort)(i + 1));
            memory.TryGetSpan(address, 8, out Span<byte> bytes);
            bytes.Fill((byte)(0x40 + i));
        }

        for (int round = 0; round < 3; round++)
        {
            forge.WriteAvailEntry(round, 0);
        }

        using SplitDeviceVirtqueue device = forge.AttachDevice();
        for (int round = 0; round < 3; round++)
        {
            forge.WriteAvailIdx((ushort)(round + 1));
            Assert.True(device.TryPop(out DescriptorChain chain));
            Assert.Equal(6, chain.ReadableCount);
            for (int k = 0; k < 6; k++)
            {
                // The guest address is rebuilt from the segment's region: each must come back as written.
                Assert.Equal((k % 2 == 0 ? Buf : High) + (ulong)(k * 0x100), chain.GetRange(k).Address);
            }

            int i = 0;
            foreach (ReadOnlySpan<byte> segment in chain.Readable)
            {
                Assert.Equal(8, segment.Length);
                Assert.True(segment.IndexOfAnyExcept((byte)(0x40 + i)) < 0, $"segment {i} reads its own region's bytes");
                i++;
            }

            device.PushUsed(chain.Id, 0);
        }
    }

    [Fact]
    public void A_chain_longer_than_the_initial_scratch_is_popped_whole()
    {
        const int Length = 40;
        using var forge = new RingForge(64);
        for (int i = 0; i < Length; i++)
        {
            forge.WriteDescriptor(i, Buf + (ulong)(i * 0x10), (uint)i + 1, i < Length - 1 ? Next : Write, (ushort)(i + 1));
        }

        using SplitDeviceVirtqueue device = forge.AttachDevice();

        (ulong Address, uint Length)[] segments = PopTwice(forge, device, 0, out int readable);
        Assert.Equal(Length, segments.Length);
        Assert.Equal(Length - 1, readable);
        for (int i = 0; i < Length; i++)
        {
            Assert.Equal((Buf + (ulong)(i * 0x10), (uint)i + 1), segments[i]);
        }
    }

    [Fact]
    public void A_rule_broken_deep_in_an_ordinary_chain_is_reported_and_nothing_is_popped()
    {
        using var forge = new RingForge(16);
        for (int i = 0; i < 10; i++)
        {
            forge.WriteDescriptor(i, Buf + (ulong)(i * 0x10), 16, (ushort)(Next | (i >= 5 ? Write : 0)), (ushort)(i + 1));
        }

        forge.WriteDescriptor(10, Buf + 0x200, 16, 0); // readable after writable
        forge.OfferSimple(0, 12, Buf, 16); // warms the region cache, so the chain below meets the fast walk
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        Assert.True(device.TryPop(out DescriptorChain warm));
        device.PushUsed(warm.Id, 0);
        forge.WriteAvailEntry(1, 0);
        forge.WriteAvailIdx(2);

        Assert.False(device.TryPop(out _));
        Assert.Equal(QueueError.ReadableAfterWritable, device.Error);
        Assert.Equal(10UL, device.ErrorDetail);
    }
}

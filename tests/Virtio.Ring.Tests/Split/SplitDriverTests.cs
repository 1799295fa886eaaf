using System;
using System.Buffers.Binary;
using Virtio.Ring.Split;

namespace Virtio.Ring.Tests.Split;

/// <summary>Driver-side rules: its own bookkeeping, defence against a misbehaving device, detach and reset.</summary>
public class SplitDriverTests
{
    [Fact]
    public void Driver_initialises_ring_memory_to_zero()
    {
        using var forge = new RingForge(8);
        forge.Span(RingForge.RingBase, (int)SplitQueueLayout.CompactTotalBytes(8)).Fill(0xAB);
        using var driver = new SplitDriverVirtqueue<int>(forge.Memory, forge.Layout, VirtqueueFeatures.None);
        Assert.True(forge.Span(forge.Layout.DescriptorTableAddress, SplitQueueLayout.DescriptorTableBytes(8)).IndexOfAnyExcept((byte)0) < 0);
        Assert.True(forge.Span(forge.Layout.DriverAreaAddress, SplitQueueLayout.AvailRingBytes(8)).IndexOfAnyExcept((byte)0) < 0);
        Assert.True(forge.Span(forge.Layout.DeviceAreaAddress, SplitQueueLayout.UsedRingBytes(8)).IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public void Nothing_is_visible_to_the_device_before_Publish()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.None);
        Assert.True(pair.Driver.TryAdd([new GuestRange(pair.BufferBase, 8)], [], 1));
        Assert.False(pair.Device.TryPop(out _));
        pair.Driver.PublishAvailable();
        Assert.True(pair.Device.TryPop(out _));
    }

    [Fact]
    public void Driver_bookkeeping_survives_a_device_scribbling_on_descriptors()
    {
        using var pair = new SplitPair(4, VirtqueueFeatures.None);
        GuestRange[] two = [new(pair.BufferBase, 8), new(pair.BufferBase + 8, 8)];
        Assert.True(pair.Driver.TryAdd(two, [], 1));
        pair.Driver.PublishAvailable();
        Assert.True(pair.Device.TryPop(out DescriptorChain chain));

        // Garbage over the whole table, next fields included.
        pair.Span(pair.Layout.DescriptorTableAddress, 64).Fill(0xFF);
        pair.Device.PushUsed(chain.Id, 0);
        pair.Device.PublishUsed();
        Assert.True(pair.Driver.TryGetUsed(out int token, out _));
        Assert.Equal(1, token);
        Assert.Equal(4, pair.Driver.FreeDescriptors);

        // The free list is intact: four single chains fit again.
        for (int i = 0; i < 4; i++)
        {
            Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], i));
        }
    }

    [Fact]
    public void A_used_id_beyond_the_queue_breaks_the_driver_queue()
    {
        using var pair = new SplitPair(4, VirtqueueFeatures.None);
        Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], 1));
        pair.Driver.PublishAvailable();
        WriteUsed(pair, slot: 0, id: 4, idx: 1);
        Assert.False(pair.Driver.TryGetUsed(out _, out _));
        Assert.Equal(QueueError.UsedIdInvalid, pair.Driver.Error);
        Assert.False(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], 2));
        Assert.False(pair.Driver.PublishAvailable());
    }

    [Fact]
    public void A_used_id_that_is_not_a_head_in_flight_breaks_the_driver_queue()
    {
        using var pair = new SplitPair(4, VirtqueueFeatures.None);
        Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8), new(pair.BufferBase, 8)], [], 1)); // descs 0,1
        pair.Driver.PublishAvailable();
        WriteUsed(pair, slot: 0, id: 1, idx: 1); // 1 is inside the chain, not its head
        Assert.False(pair.Driver.TryGetUsed(out _, out _));
        Assert.Equal(QueueError.UsedIdInvalid, pair.Driver.Error);
    }

    [Fact]
    public void A_chain_used_twice_breaks_the_driver_queue()
    {
        using var pair = new SplitPair(4, VirtqueueFeatures.None);
        Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], 1));
        Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], 2));
        pair.Driver.PublishAvailable();
        WriteUsed(pair, slot: 0, id: 0, idx: 0);
        WriteUsed(pair, slot: 1, id: 0, idx: 2);
        Assert.True(pair.Driver.TryGetUsed(out int token, out _));
        Assert.Equal(1, token);
        Assert.False(pair.Driver.TryGetUsed(out _, out _));
        Assert.Equal(QueueError.UsedIdInvalid, pair.Driver.Error);
    }

    [Fact]
    public void The_used_index_may_not_run_ahead_of_the_chains_in_flight()
    {
        using var pair = new SplitPair(4, VirtqueueFeatures.None);
        Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], 1));
        pair.Driver.PublishAvailable();
        WriteUsed(pair, slot: 0, id: 0, idx: 2);
        Assert.False(pair.Driver.TryGetUsed(out _, out _));
        Assert.Equal(QueueError.UsedIndexJump, pair.Driver.Error);
    }

    [Fact]
    public void The_device_cannot_use_a_chain_that_was_not_published()
    {
        using var pair = new SplitPair(4, VirtqueueFeatures.None);
        Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], 1));
        WriteUsed(pair, slot: 0, id: 0, idx: 1);
        Assert.False(pair.Driver.TryGetUsed(out _, out _));
        Assert.Equal(QueueError.UsedIndexJump, pair.Driver.Error);
    }

    [Fact]
    public void Detach_unused_returns_every_token_in_flight_then_reset_starts_over()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.IndirectDescriptors, indirectTables: 2, indirectEntries: 4);
        for (int i = 0; i < 5; i++)
        {
            GuestRange[] segs = i % 2 == 0 ? [new(pair.BufferBase, 8)] : [new(pair.BufferBase, 8), new(pair.BufferBase, 8)];
            Assert.True(pair.Driver.TryAdd(segs, [], 100 + i));
        }

        pair.Driver.PublishAvailable();
        Assert.True(pair.Device.TryPop(out DescriptorChain c));
        pair.Device.PushUsed(c.Id, 0);
        pair.Device.PublishUsed();
        Assert.True(pair.Driver.TryGetUsed(out int first, out _));
        Assert.Equal(100, first);

        Assert.Throws<InvalidOperationException>(() => pair.Driver.Reset());

        var detached = new System.Collections.Generic.List<int>();
        while (pair.Driver.TryDetachUnused(out int token))
        {
            detached.Add(token);
        }

        detached.Sort();
        Assert.Equal([101, 102, 103, 104], detached);
        Assert.Equal(8, pair.Driver.FreeDescriptors);
        Assert.Equal(2, pair.Pool!.FreeTables);

        pair.Driver.Reset();
        Assert.True(SplitDeviceVirtqueue.TryAttach(pair.Memory, pair.Layout, pair.Driver.Features, out SplitDeviceVirtqueue? fresh, out _));
        using (fresh)
        {
            Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], 7));
            pair.Driver.PublishAvailable();
            Assert.True(fresh.TryPop(out DescriptorChain again));
            fresh.PushUsed(again.Id, 3);
            fresh.PublishUsed();
            Assert.True(pair.Driver.TryGetUsed(out int token, out uint len));
            Assert.Equal((7, 3u), (token, len));
        }
    }

    [Fact]
    public void Tokens_of_reference_type_are_released_when_used()
    {
        using var forge = new RingForge(4);
        using var driver = new SplitDriverVirtqueue<object>(forge.Memory, forge.Layout, VirtqueueFeatures.None);
        using SplitDeviceVirtqueue device = forge.AttachDevice();
        var weak = AddAndReturn(driver, device);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Assert.False(weak.IsAlive);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static WeakReference AddAndReturn(SplitDriverVirtqueue<object> driver, SplitDeviceVirtqueue device)
    {
        object token = new byte[100];
        Assert.True(driver.TryAdd([new(RingForge.BufferBase, 8)], [], token));
        driver.PublishAvailable();
        Assert.True(device.TryPop(out DescriptorChain c));
        device.PushUsed(c.Id, 0);
        device.PublishUsed();
        Assert.True(driver.TryGetUsed(out object? back, out _));
        Assert.Same(token, back);
        return new WeakReference(token);
    }

    private static void WriteUsed(SplitPair pair, int slot, uint id, ushort idx)
    {
        Span<byte> e = pair.Span(pair.Layout.DeviceAreaAddress + 4 + (ulong)(8 * slot), 8);
        BinaryPrimitives.WriteUInt32LittleEndian(e, id);
        BinaryPrimitives.WriteUInt32LittleEndian(e[4..], 0);
        BinaryPrimitives.WriteUInt16LittleEndian(pair.Span(pair.Layout.DeviceAreaAddress + 2, 2), idx);
    }
}

using System;
using System.Collections.Generic;

namespace Virtio.Ring.Tests.BothFormats;

/// <summary>
/// <c>VIRTIO_F_IN_ORDER</c> on both formats (split 2.7.9, packed 2.8.8): buffers are used in the order they were
/// made available, and a device may return a whole batch with one used element naming its last buffer.
/// </summary>
public class InOrderTests
{
    public static TheoryData<VirtqueueFormat, int, VirtqueueFeatures> Queues()
    {
        var data = new TheoryData<VirtqueueFormat, int, VirtqueueFeatures>();
        foreach (VirtqueueFormat format in new[] { VirtqueueFormat.Split, VirtqueueFormat.Packed })
        {
            int[] sizes = format == VirtqueueFormat.Split ? [1, 2, 256, 32768] : [1, 3, 255, 32768];
            foreach (int q in sizes)
            {
                data.Add(format, q, VirtqueueFeatures.InOrder);
                data.Add(format, q, VirtqueueFeatures.InOrder | VirtqueueFeatures.EventIndex | VirtqueueFeatures.IndirectDescriptors);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Queues))]
    public void Batches_return_every_buffer_in_order_with_the_right_lengths(VirtqueueFormat format, int q, VirtqueueFeatures features)
    {
        bool indirect = (features & VirtqueueFeatures.IndirectDescriptors) != 0;
        using var pair = new QueuePair(format, q, features, indirectTables: indirect ? Math.Min(q, 32) : 0, indirectEntries: 4);
        var rng = new Random(q + (int)format * 1000);
        int total = Math.Max(3 * q, 3000);
        int sent = 0;
        int received = 0;
        var writableOf = new Dictionary<int, uint>();
        var expectedLength = new Dictionary<int, uint>();
        Span<GuestRange> readable = stackalloc GuestRange[4];
        Span<GuestRange> writable = stackalloc GuestRange[4];
        var popped = new List<(ushort Id, int Token)>();
        while (received < total)
        {
            while (sent < total)
            {
                int segments = rng.Next(1, Math.Min(q, 4) + 1);
                int w = rng.Next(0, segments + 1);
                uint writableBytes = 0;
                for (int i = 0; i < segments - w; i++)
                {
                    readable[i] = new GuestRange(pair.BufferBase + (ulong)(i * 64), 64);
                }

                for (int i = 0; i < w; i++)
                {
                    writable[i] = new GuestRange(pair.BufferBase + 4096 + (ulong)(i * 64), 32);
                    writableBytes += 32;
                }

                if (!pair.Driver.TryAdd(readable[..(segments - w)], writable[..w], sent))
                {
                    break;
                }

                writableOf[sent] = writableBytes;
                sent++;
            }

            pair.Driver.PublishAvailable();

            // The device pops everything, in order, then returns it in batches of random size.
            int token = received + popped.Count;
            while (pair.Device.TryPop(out DescriptorChain chain))
            {
                popped.Add((chain.Id, token++));
            }

            Assert.False(pair.Device.IsBroken, pair.Device.Error.ToString());
            int done = 0;
            while (done < popped.Count)
            {
                int batch = rng.Next(1, popped.Count - done + 1);
                (ushort lastId, int lastToken) = popped[done + batch - 1];
                for (int i = done; i < done + batch - 1; i++)
                {
                    expectedLength[popped[i].Token] = writableOf[popped[i].Token]; // covered: fully written
                }

                uint lastLength = (uint)rng.Next(0, (int)writableOf[lastToken] + 1);
                expectedLength[lastToken] = lastLength;
                if (batch == 1 && rng.Next(2) == 0)
                {
                    pair.Device.PushUsed(lastId, lastLength);
                }
                else
                {
                    pair.Device.PushUsedBatch(lastId, lastLength);
                }

                done += batch;
            }

            popped.Clear();
            pair.Device.PublishUsed();
            while (pair.Driver.TryGetUsed(out int back, out uint length))
            {
                Assert.Equal(received, back);
                Assert.Equal(expectedLength[back], length);
                received++;
            }

            Assert.Equal(QueueError.None, pair.Driver.Error);
        }

        Assert.Equal(0, pair.Driver.InFlight);
        Assert.Equal(q, pair.Driver.FreeDescriptors);
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void A_device_may_not_skip_ahead_with_PushUsed(VirtqueueFormat format)
    {
        using var pair = new QueuePair(format, 8, VirtqueueFeatures.InOrder);
        for (int i = 0; i < 3; i++)
        {
            Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], i));
        }

        pair.Driver.PublishAvailable();
        var ids = new List<ushort>();
        while (pair.Device.TryPop(out DescriptorChain c))
        {
            ids.Add(c.Id);
        }

        Assert.Throws<InvalidOperationException>(() => pair.Device.PushUsed(ids[1], 0));
        pair.Device.PushUsed(ids[0], 0);
        pair.Device.PushUsedBatch(ids[2], 0);
        Assert.Throws<InvalidOperationException>(() => pair.Device.PushUsedBatch(ids[2], 0));
    }

    [Fact]
    public void Without_IN_ORDER_batches_are_refused()
    {
        using var pair = new QueuePair(VirtqueueFormat.Split, 8, VirtqueueFeatures.None);
        Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], 1));
        pair.Driver.PublishAvailable();
        Assert.True(pair.Device.TryPop(out DescriptorChain c));
        ushort id = c.Id;
        Assert.Throws<InvalidOperationException>(() => pair.Device.PushUsedBatch(id, 0));
    }

    [Fact]
    public void The_split_driver_uses_descriptors_in_ring_order()
    {
        using var pair = new QueuePair(VirtqueueFormat.Split, 8, VirtqueueFeatures.InOrder);
        int expectedHead = 0;
        for (int round = 0; round < 20; round++)
        {
            int segments = 1 + (round % 3);
            var ranges = new GuestRange[segments];
            Array.Fill(ranges, new GuestRange(pair.BufferBase, 8));
            Assert.True(pair.Driver.TryAdd(ranges, [], round));
            pair.Driver.PublishAvailable();
            Assert.True(pair.Device.TryPop(out DescriptorChain c));
            Assert.Equal(expectedHead, c.Id);
            expectedHead = (expectedHead + segments) % 8;
            pair.Device.PushUsed(c.Id, 0);
            pair.Device.PublishUsed();
            Assert.True(pair.Driver.TryGetUsed(out int token, out _));
            Assert.Equal(round, token);
        }
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void A_used_id_that_is_not_in_flight_breaks_the_in_order_driver(VirtqueueFormat format)
    {
        using var pair = new QueuePair(format, 4, VirtqueueFeatures.InOrder);
        Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], 1));
        pair.Driver.PublishAvailable();
        Assert.True(pair.Device.TryPop(out DescriptorChain c));
        pair.Device.PushUsed(c.Id, 0);
        pair.Device.PublishUsed();

        // Rewrite the used id the device published to one that was never handed out.
        if (format == VirtqueueFormat.Split)
        {
            pair.Span(pair.Addresses.DeviceAreaAddress + 4, 4)[0] = 3;
        }
        else
        {
            pair.Span(pair.Addresses.DescriptorAreaAddress + 12, 2)[0] = 3;
        }

        Assert.False(pair.Driver.TryGetUsed(out _, out _));
        Assert.Equal(QueueError.UsedIdInvalid, pair.Driver.Error);
    }

    public static TheoryData<VirtqueueFormat> Formats() => new() { VirtqueueFormat.Split, VirtqueueFormat.Packed };
}

using System;
using System.Buffers.Binary;

namespace Virtio.Ring.Tests.Split;

/// <summary>Driver and device exchanging buffers on one thread: chains go out, come back, payloads intact.</summary>
public class SplitRoundTripTests
{
    public static TheoryData<int, VirtqueueFeatures, int> Configurations()
    {
        var data = new TheoryData<int, VirtqueueFeatures, int>();
        foreach (int q in new[] { 1, 2, 256, 32768 })
        {
            foreach (VirtqueueFeatures f in new[]
            {
                VirtqueueFeatures.None,
                VirtqueueFeatures.EventIndex,
                VirtqueueFeatures.IndirectDescriptors,
                VirtqueueFeatures.IndirectDescriptors | VirtqueueFeatures.EventIndex,
            })
            {
                data.Add(q, f, (f & VirtqueueFeatures.IndirectDescriptors) != 0 ? Math.Min(q, 64) : 0);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Configurations))]
    public void Single_and_multi_segment_chains_round_trip(int q, VirtqueueFeatures features, int indirectTables)
    {
        using var pair = new SplitPair(q, features, indirectTables, indirectEntries: 8);
        var rng = new Random(q);
        int maxSegments = Math.Min(q, 4); // 2.7.5.3.1: no chain longer than Q, indirect or not

        int sent = 0;
        int received = 0;
        const int Total = 3000;
        Span<GuestRange> readable = stackalloc GuestRange[4];
        Span<GuestRange> writable = stackalloc GuestRange[4];
        while (received < Total)
        {
            // Fill the queue as far as it goes, then drain it.
            while (sent < Total)
            {
                int segments = rng.Next(1, maxSegments + 1);
                int r = rng.Next(0, segments + 1);
                int w = segments - r;
                ulong slot = pair.BufferBase + ((ulong)(sent % 4096) * 1024);
                for (int i = 0; i < r; i++)
                {
                    readable[i] = new GuestRange(slot + (ulong)(i * 64), 64);
                    WritePattern(pair.Span(readable[i].Address, 64), sent, i);
                }

                for (int i = 0; i < w; i++)
                {
                    writable[i] = new GuestRange(slot + 512 + (ulong)(i * 64), 64);
                }

                if (!pair.Driver.TryAdd(readable[..r], writable[..w], sent))
                {
                    break;
                }

                sent++;
            }

            pair.Driver.PublishAvailable();
            while (pair.Device.TryPop(out DescriptorChain chain))
            {
                int i = 0;
                foreach (ReadOnlySpan<byte> s in chain.Readable)
                {
                    Assert.Equal(64, s.Length);
                    int seq = BinaryPrimitives.ReadInt32LittleEndian(s);
                    Assert.True(VerifyPattern(s, seq, i++));
                }

                uint written = 0;
                foreach (Span<byte> s in chain.Writable)
                {
                    s.Fill((byte)chain.Id);
                    written += (uint)s.Length;
                }

                Assert.Equal(chain.WritableLength, written);
                pair.Device.PushUsed(chain.Id, written);
            }

            pair.Device.PublishUsed();
            int before = received;
            while (pair.Driver.TryGetUsed(out int token, out uint len))
            {
                Assert.Equal(received, token); // one thread, FIFO device: tokens return in order
                Assert.Equal(0u, len % 64);
                received++;
            }

            Assert.True(received > before, "every round trip makes progress");
        }

        Assert.False(pair.Device.IsBroken);
        Assert.False(pair.Driver.IsBroken);
        Assert.Equal(q, pair.Driver.FreeDescriptors);
        Assert.Equal(0, pair.Driver.InFlight);
        Assert.Equal(0, pair.Device.InFlight);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(256)]
    public void Indices_wrap_past_65535(int q)
    {
        using var pair = new SplitPair(q, VirtqueueFeatures.EventIndex);
        const int Total = 70_000 * 2;
        int received = 0;
        for (int sent = 0; sent < Total;)
        {
            while (sent < Total && pair.Driver.TryAdd([new GuestRange(pair.BufferBase, 8)], [], sent))
            {
                sent++;
            }

            pair.Driver.PublishAvailable();
            while (pair.Device.TryPop(out DescriptorChain chain))
            {
                pair.Device.PushUsed(chain.Id, 0);
            }

            pair.Device.PublishUsed();
            while (pair.Driver.TryGetUsed(out int token, out _))
            {
                Assert.Equal(received++, token);
            }
        }

        Assert.Equal(Total, received);
        Assert.Equal(unchecked((ushort)Total), pair.Device.NextAvail);
        Assert.False(pair.Device.IsBroken);
    }

    [Fact]
    public void Legacy_contiguous_layout_round_trips()
    {
        using var pair = new SplitPair(256, VirtqueueFeatures.None, legacyLayout: true);
        Assert.Equal(pair.Layout.DescriptorTableAddress + 4096 + 4096, pair.Layout.DeviceAreaAddress);
        Assert.True(pair.Driver.TryAdd([new GuestRange(pair.BufferBase, 4)], [new GuestRange(pair.BufferBase + 4, 4)], 1));
        pair.Driver.PublishAvailable();
        Assert.True(pair.Device.TryPop(out DescriptorChain chain));
        Assert.Equal(4, chain.CopyToWritable([1, 2, 3, 4]));
        pair.Device.PushUsed(chain.Id, 4);
        pair.Device.PublishUsed();
        Assert.True(pair.Driver.TryGetUsed(out int token, out uint len));
        Assert.Equal((1, 4u), (token, len));
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, pair.Span(pair.BufferBase + 4, 4).ToArray());
    }

    [Fact]
    public void Out_of_order_completion_returns_each_token_once()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.None);
        for (int i = 0; i < 8; i++)
        {
            Assert.True(pair.Driver.TryAdd([new GuestRange(pair.BufferBase, 8)], [], i * 10));
        }

        Assert.False(pair.Driver.TryAdd([new GuestRange(pair.BufferBase, 8)], [], 99)); // full
        pair.Driver.PublishAvailable();
        Span<ushort> ids = stackalloc ushort[8];
        for (int i = 0; i < 8; i++)
        {
            Assert.True(pair.Device.TryPop(out DescriptorChain chain));
            ids[i] = chain.Id;
        }

        for (int i = 7; i >= 0; i--)
        {
            pair.Device.PushUsed(ids[i], (uint)i);
        }

        pair.Device.PublishUsed();
        for (int i = 7; i >= 0; i--)
        {
            Assert.True(pair.Driver.TryGetUsed(out int token, out uint len));
            Assert.Equal(i * 10, token);
            Assert.Equal((uint)i, len);
        }

        Assert.False(pair.Driver.TryGetUsed(out _, out _));
        Assert.Equal(8, pair.Driver.FreeDescriptors);
    }

    [Fact]
    public void Indirect_chain_costs_one_ring_descriptor_and_falls_back_when_the_pool_is_empty()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.IndirectDescriptors, indirectTables: 1, indirectEntries: 4);
        GuestRange[] three = [new(pair.BufferBase, 8), new(pair.BufferBase + 8, 8), new(pair.BufferBase + 16, 8)];
        Assert.True(pair.Driver.TryAdd(three, [], 1));
        Assert.Equal(7, pair.Driver.FreeDescriptors);
        Assert.True(pair.Driver.TryAdd(three, [], 2)); // pool exhausted: direct chain of 3
        Assert.Equal(4, pair.Driver.FreeDescriptors);
        Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], 3)); // single buffers never go indirect
        Assert.Equal(3, pair.Driver.FreeDescriptors);
        pair.Driver.PublishAvailable();
        for (int i = 0; i < 3; i++)
        {
            Assert.True(pair.Device.TryPop(out DescriptorChain chain));
            Assert.Equal(i < 2 ? 3 : 1, chain.SegmentCount);
            pair.Device.PushUsed(chain.Id, 0);
        }

        pair.Device.PublishUsed();
        while (pair.Driver.TryGetUsed(out _, out _))
        {
        }

        Assert.Equal(8, pair.Driver.FreeDescriptors);
        Assert.Equal(1, pair.Pool!.FreeTables);
    }

    [Fact]
    public void A_chain_longer_than_the_queue_is_a_caller_bug()
    {
        using var pair = new SplitPair(2, VirtqueueFeatures.None);
        GuestRange[] three = [new(pair.BufferBase, 8), new(pair.BufferBase, 8), new(pair.BufferBase, 8)];
        Assert.Throws<ArgumentException>(() => pair.Driver.TryAdd(three, [], 0));
        Assert.Throws<ArgumentException>(() => pair.Driver.TryAdd([], [], 0));
    }

    [Fact]
    public void Gather_and_scatter_helpers_cross_segment_boundaries()
    {
        using var pair = new SplitPair(8, VirtqueueFeatures.None);
        byte[] data = new byte[10];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = (byte)(i + 1);
        }

        data.AsSpan(0, 3).CopyTo(pair.Span(pair.BufferBase, 3));
        data.AsSpan(3, 7).CopyTo(pair.Span(pair.BufferBase + 100, 7));
        Assert.True(pair.Driver.TryAdd(
            [new(pair.BufferBase, 3), new(pair.BufferBase + 100, 7)],
            [new(pair.BufferBase + 200, 4), new(pair.BufferBase + 300, 4)],
            0));
        pair.Driver.PublishAvailable();
        Assert.True(pair.Device.TryPop(out DescriptorChain chain));
        byte[] gathered = new byte[16];
        Assert.Equal(10, chain.CopyReadableTo(gathered));
        Assert.Equal(data, gathered[..10]);
        Assert.Equal(8, chain.CopyToWritable(data)); // only 8 bytes of room
        Assert.Equal(data[..4], pair.Span(pair.BufferBase + 200, 4).ToArray());
        Assert.Equal(data[4..8], pair.Span(pair.BufferBase + 300, 4).ToArray());
        Assert.True(chain.IsWritable(2));
        Assert.False(chain.IsWritable(1));
        Assert.Throws<ArgumentOutOfRangeException>(() => GetWritable(pair, 2));
    }

    private static int GetWritable(SplitPair pair, int index)
    {
        pair.Driver.TryAdd([new(pair.BufferBase, 1)], [new(pair.BufferBase + 1, 1)], 1);
        pair.Driver.PublishAvailable();
        pair.Device.TryPop(out DescriptorChain chain);
        return chain.GetWritable(index).Length;
    }

    internal static void WritePattern(Span<byte> buffer, int seq, int segment)
    {
        BinaryPrimitives.WriteInt32LittleEndian(buffer, seq);
        for (int i = 4; i < buffer.Length; i++)
        {
            buffer[i] = (byte)(seq * 31 + segment * 7 + i);
        }
    }

    internal static bool VerifyPattern(ReadOnlySpan<byte> buffer, int seq, int segment)
    {
        if (BinaryPrimitives.ReadInt32LittleEndian(buffer) != seq)
        {
            return false;
        }

        for (int i = 4; i < buffer.Length; i++)
        {
            if (buffer[i] != (byte)(seq * 31 + segment * 7 + i))
            {
                return false;
            }
        }

        return true;
    }
}

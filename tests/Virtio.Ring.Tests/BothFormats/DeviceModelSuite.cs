using System;
using System.Buffers.Binary;
using System.Collections.Generic;

namespace Virtio.Ring.Tests.BothFormats;

/// <summary>
/// The device-model suite, run unchanged over both ring formats through <see cref="DeviceVirtqueue"/> and
/// <see cref="DriverVirtqueue{TToken}"/>: what a device like the balloon relies on.
/// </summary>
public class DeviceModelSuite
{
    public static TheoryData<VirtqueueFormat, int, VirtqueueFeatures> Queues()
    {
        var data = new TheoryData<VirtqueueFormat, int, VirtqueueFeatures>();
        foreach (VirtqueueFormat format in new[] { VirtqueueFormat.Split, VirtqueueFormat.Packed })
        {
            int[] sizes = format == VirtqueueFormat.Split ? [1, 2, 256, 32768] : [1, 3, 255, 32768];
            foreach (int q in sizes)
            {
                foreach (VirtqueueFeatures f in new[]
                {
                    VirtqueueFeatures.None,
                    VirtqueueFeatures.EventIndex,
                    VirtqueueFeatures.IndirectDescriptors | VirtqueueFeatures.EventIndex,
                })
                {
                    data.Add(format, q, f);
                }
            }
        }

        return data;
    }

    public static TheoryData<VirtqueueFormat> Formats() => new() { VirtqueueFormat.Split, VirtqueueFormat.Packed };

    [Theory]
    [MemberData(nameof(Queues))]
    public void Buffers_round_trip_across_many_wraps_with_lists_straddling_the_wrap_point(VirtqueueFormat format, int q, VirtqueueFeatures features)
    {
        bool indirect = (features & VirtqueueFeatures.IndirectDescriptors) != 0;
        using var pair = new QueuePair(format, q, features, indirectTables: indirect ? Math.Min(q, 32) : 0, indirectEntries: 4);
        var rng = new Random(q * 7 + (int)format);
        int maxSegments = Math.Min(q, 4);
        Span<GuestRange> readable = stackalloc GuestRange[4];
        Span<GuestRange> writable = stackalloc GuestRange[4];
        int total = Math.Max(3 * q, 4000);
        int sent = 0;
        int received = 0;
        while (received < total)
        {
            while (sent < total)
            {
                int segments = rng.Next(1, maxSegments + 1);
                int r = rng.Next(0, segments + 1);
                ulong slot = pair.BufferBase + ((ulong)(sent % 8192) * 1024);
                for (int i = 0; i < r; i++)
                {
                    readable[i] = new GuestRange(slot + (ulong)(i * 64), 64);
                    BinaryPrimitives.WriteInt32LittleEndian(pair.Span(readable[i].Address, 4), sent);
                }

                for (int i = 0; i < segments - r; i++)
                {
                    writable[i] = new GuestRange(slot + 512 + (ulong)(i * 64), 64);
                }

                if (!pair.Driver.TryAdd(readable[..r], writable[..(segments - r)], sent))
                {
                    break;
                }

                sent++;
            }

            pair.Driver.PublishAvailable();
            while (pair.Device.TryPop(out DescriptorChain chain))
            {
                foreach (ReadOnlySpan<byte> s in chain.Readable)
                {
                    Assert.Equal(64, s.Length);
                }

                pair.Device.PushUsed(chain.Id, chain.WritableLength);
            }

            Assert.False(pair.Device.IsBroken, pair.Device.Error.ToString());
            pair.Device.PublishUsed();
            int before = received;
            while (pair.Driver.TryGetUsed(out int token, out uint len))
            {
                Assert.Equal(received, token);
                Assert.Equal(0u, len % 64);
                received++;
            }

            Assert.True(received > before, $"progress at {received} ({pair.Driver.Error})");
        }

        Assert.Equal(0, pair.Driver.InFlight);
        Assert.Equal(0, pair.Device.InFlight);
        Assert.Equal(q, pair.Driver.FreeDescriptors);
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Completions_out_of_order_return_every_token_once(VirtqueueFormat format)
    {
        using var pair = new QueuePair(format, 8, VirtqueueFeatures.None);
        for (int round = 0; round < 50; round++)
        {
            int n = 0;
            while (pair.Driver.TryAdd([new(pair.BufferBase, 8)], [new(pair.BufferBase + 8, 8)], round * 100 + n))
            {
                n++;
            }

            pair.Driver.PublishAvailable();
            var ids = new List<ushort>();
            while (pair.Device.TryPop(out DescriptorChain chain))
            {
                ids.Add(chain.Id);
            }

            Assert.Equal(n, ids.Count);
            ids.Reverse();
            foreach (ushort id in ids)
            {
                pair.Device.PushUsed(id, 3);
            }

            pair.Device.PublishUsed();
            var tokens = new HashSet<int>();
            while (pair.Driver.TryGetUsed(out int token, out uint len))
            {
                Assert.Equal(3u, len);
                Assert.True(tokens.Add(token));
            }

            Assert.Equal(n, tokens.Count);
        }
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void A_broken_device_reports_a_typed_error_and_stays_quiet(VirtqueueFormat format)
    {
        using var pair = new QueuePair(format, 8, VirtqueueFeatures.None);
        Assert.True(pair.Driver.TryAdd([new(0xFFFF_0000_0000, 8)], [], 1)); // outside guest memory
        pair.Driver.PublishAvailable();
        Assert.False(pair.Device.TryPop(out _));
        Assert.Equal(QueueError.BufferNotInGuestMemory, pair.Device.Error);
        Assert.True(pair.Device.IsBroken);
        Assert.False(pair.Device.TryPop(out _));
        Assert.False(pair.Device.PublishUsed());
        Assert.Equal(NotificationRecheck.NothingPending, pair.Device.EnableAvailableNotifications());
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Reset_mid_traffic_loses_no_buffer_and_uses_none_twice(VirtqueueFormat format)
    {
        using var pair = new QueuePair(format, 16, VirtqueueFeatures.EventIndex);
        var outstanding = new HashSet<int>();
        for (int i = 0; i < 10; i++)
        {
            Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], i));
            outstanding.Add(i);
        }

        pair.Driver.PublishAvailable();
        for (int i = 0; i < 4; i++)
        {
            Assert.True(pair.Device.TryPop(out DescriptorChain c));
            if (i % 2 == 0)
            {
                pair.Device.PushUsed(c.Id, 0);
            }
        }

        pair.Device.PublishUsed();
        while (pair.Driver.TryGetUsed(out int token, out _))
        {
            Assert.True(outstanding.Remove(token));
        }

        // Device reset: the driver takes every buffer still in flight back, then starts over.
        while (pair.Driver.TryDetachUnused(out int token))
        {
            Assert.True(outstanding.Remove(token));
        }

        Assert.Empty(outstanding);
        pair.Driver.Reset();
        pair.ReattachDevice();
        for (int i = 100; i < 116; i++)
        {
            Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], i));
        }

        pair.Driver.PublishAvailable();
        int seen = 0;
        while (pair.Device.TryPop(out DescriptorChain c))
        {
            pair.Device.PushUsed(c.Id, 0);
            seen++;
        }

        pair.Device.PublishUsed();
        Assert.Equal(16, seen);
        var back = new HashSet<int>();
        while (pair.Driver.TryGetUsed(out int token, out _))
        {
            Assert.True(back.Add(token));
        }

        Assert.Equal(16, back.Count);
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Notifications_are_suppressed_and_never_lost(VirtqueueFormat format)
    {
        foreach (VirtqueueFeatures features in new[] { VirtqueueFeatures.None, VirtqueueFeatures.EventIndex })
        {
            using var pair = new QueuePair(format, 8, features);
            Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], 1));
            Assert.True(pair.Driver.PublishAvailable()); // notifications start enabled

            pair.Device.DisableAvailableNotifications();
            Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], 2));
            Assert.False(pair.Driver.PublishAvailable());
            Assert.Equal(NotificationRecheck.BuffersPending, pair.Device.EnableAvailableNotifications()); // the re-check sees what came without a kick

            while (pair.Device.TryPop(out DescriptorChain c))
            {
                pair.Device.PushUsed(c.Id, 0);
            }

            Assert.Equal(NotificationRecheck.NothingPending, pair.Device.EnableAvailableNotifications());
            Assert.True(pair.Device.PublishUsed()); // the driver wants interrupts
            while (pair.Driver.TryGetUsed(out _, out _))
            {
            }

            Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], 3));
            Assert.True(pair.Driver.PublishAvailable()); // re-armed when the device found the ring empty

            pair.Driver.DisableUsedNotifications();
            Assert.True(pair.Device.TryPop(out DescriptorChain last));
            pair.Device.PushUsed(last.Id, 0);
            Assert.False(pair.Device.PublishUsed());
            Assert.Equal(NotificationRecheck.BuffersPending, pair.Driver.EnableUsedNotifications()); // already used: the re-check reports it
            Assert.True(pair.Driver.TryGetUsed(out int token, out _));
            Assert.Equal(3, token);
        }
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Publishing_without_a_decision_still_leaves_the_decision_to_cover_it(VirtqueueFormat format)
    {
        foreach (VirtqueueFeatures features in new[] { VirtqueueFeatures.None, VirtqueueFeatures.EventIndex })
        {
            using var pair = new QueuePair(format, 8, features);
            Assert.True(pair.Driver.TryAdd([new(pair.BufferBase, 8)], [], 1));
            pair.Driver.FlushAvailable();
            Assert.True(pair.Device.TryPop(out DescriptorChain c)); // visible without a kick decision
            Assert.True(pair.Driver.PublishAvailable());                      // the decision still covers it

            pair.Device.PushUsed(c.Id, 0);
            pair.Device.FlushUsed();
            Assert.True(pair.Driver.TryGetUsed(out int token, out _)); // visible without an interrupt decision
            Assert.Equal(1, token);
            Assert.True(pair.Device.PublishUsed());                   // and the decision covers it
            Assert.False(pair.Device.PublishUsed());                  // once
        }
    }
}

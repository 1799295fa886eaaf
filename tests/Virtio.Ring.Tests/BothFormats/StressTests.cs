using System;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Threading;

namespace Virtio.Ring.Tests.BothFormats;

/// <summary>
/// A driver thread and a device thread exchange millions of buffers through one queue, split or packed. Every buffer is
/// checked: the device verifies each request's payload checksum, the driver verifies each response, and every
/// sequence number comes back exactly once. Set VIRTIO_STRESS_BUFFERS for a longer run.
/// </summary>
public class StressTests
{
    private const int SlotBytes = 256;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(120);
    private static readonly TimeSpan LostNotification = TimeSpan.FromSeconds(10);

    public static TheoryData<VirtqueueFormat, string, VirtqueueFeatures, bool, int> Modes()
    {
        var data = new TheoryData<VirtqueueFormat, string, VirtqueueFeatures, bool, int>();
        foreach (VirtqueueFormat format in new[] { VirtqueueFormat.Split, VirtqueueFormat.Packed })
        {
            data.Add(format, "polling", VirtqueueFeatures.None, false, 1_500_000);
            data.Add(format, "polling, event idx, indirect", VirtqueueFeatures.EventIndex | VirtqueueFeatures.IndirectDescriptors, false, 1_000_000);
            data.Add(format, "notifications, event idx", VirtqueueFeatures.EventIndex, true, 1_000_000);
            data.Add(format, "notifications, flags, indirect", VirtqueueFeatures.IndirectDescriptors, true, 1_000_000);
            data.Add(format, "in order, batched used, polling", VirtqueueFeatures.InOrder | VirtqueueFeatures.IndirectDescriptors, false, 1_000_000);
            data.Add(format, "in order, batched used, notifications", VirtqueueFeatures.InOrder | VirtqueueFeatures.EventIndex, true, 1_000_000);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void Two_threads_exchange_every_buffer_exactly_once_intact(VirtqueueFormat format, string mode, VirtqueueFeatures features, bool notify, int buffers)
    {
        _ = mode;
        if (int.TryParse(Environment.GetEnvironmentVariable("VIRTIO_STRESS_BUFFERS"), out int overrideCount) && overrideCount > 0)
        {
            buffers = overrideCount;
        }

        const int Q = 256;
        int slots = Q;
        bool indirect = (features & VirtqueueFeatures.IndirectDescriptors) != 0;
        using var pair = new QueuePair(format, Q, features, indirectTables: indirect ? Q : 0, indirectEntries: 4);
        using var kick = new SemaphoreSlim(0);
        using var interrupt = new SemaphoreSlim(0);
        using var start = new Barrier(2);
        var stopwatch = Stopwatch.StartNew();
        string? deviceFailure = null;
        string? driverFailure = null;

        bool batched = (features & VirtqueueFeatures.InOrder) != 0;
        var deviceThread = new Thread(() => deviceFailure = RunDevice(pair, buffers, notify, batched, kick, interrupt, start, stopwatch)) { Name = "device" };
        var driverThread = new Thread(() => driverFailure = RunDriver(pair, buffers, slots, notify, kick, interrupt, start, stopwatch)) { Name = "driver" };
        deviceThread.Start();
        driverThread.Start();
        Assert.True(driverThread.Join(Deadline + TimeSpan.FromSeconds(5)), "driver thread finished");
        Assert.True(deviceThread.Join(TimeSpan.FromSeconds(15)), "device thread finished");
        Assert.Null(deviceFailure);
        Assert.Null(driverFailure);
        Assert.False(pair.Device.IsBroken);
        Assert.Equal(QueueError.None, pair.Driver.Error);
        Assert.Equal(Q, pair.Driver.FreeDescriptors);
    }

    private static string? RunDevice(QueuePair pair, int buffers, bool notify, bool batched, SemaphoreSlim kick, SemaphoreSlim interrupt, Barrier start, Stopwatch clock)
    {
        DeviceVirtqueue q = pair.Device;
        Span<byte> response = stackalloc byte[8];
        if (!start.SignalAndWait(Deadline))
        {
            return "device: the driver thread never started";
        }

        int done = 0;
        var spin = new SpinWait();
        while (done < buffers)
        {
            if (clock.Elapsed > Deadline)
            {
                return $"device: deadline passed after {done} buffers";
            }

            bool any = false;
            int lastId = -1;
            while (q.TryPop(out DescriptorChain chain))
            {
                any = true;
                var crc = default(Fnv1a);
                int seq = -1;
                foreach (ReadOnlySpan<byte> s in chain.Readable)
                {
                    seq = seq < 0 ? BinaryPrimitives.ReadInt32LittleEndian(s) : seq;
                    crc.Append(s);
                }

                uint checksum = crc.Hash;
                BinaryPrimitives.WriteInt32LittleEndian(response, seq);
                BinaryPrimitives.WriteUInt32LittleEndian(response[4..], checksum);
                int written = chain.CopyToWritable(response);
                if (batched)
                {
                    lastId = chain.Id; // one used element for the whole drain (IN_ORDER)
                }
                else
                {
                    q.PushUsed(chain.Id, (uint)written);
                }

                done++;
            }

            if (lastId >= 0)
            {
                q.PushUsedBatch((ushort)lastId, 8);
            }

            if (q.IsBroken)
            {
                return $"device broke: {q.Error} ({q.ErrorDetail})";
            }

            if (q.PublishUsed() && notify)
            {
                interrupt.Release();
            }

            if (any || done == buffers)
            {
                spin = default;
                continue;
            }

            if (!notify)
            {
                spin.SpinOnce(sleep1Threshold: -1);
                continue;
            }

            // Interrupt-driven: re-enable, re-check, then wait for a kick. A lost kick shows up as a timeout.
            if (q.EnableAvailableNotifications() == NotificationRecheck.BuffersPending)
            {
                continue;
            }

            if (!kick.Wait(LostNotification))
            {
                return $"device: no kick for {LostNotification.TotalSeconds} s after {done} buffers (lost notification)";
            }

            q.DisableAvailableNotifications();
        }

        return null;
    }

    private static string? RunDriver(QueuePair pair, int buffers, int slots, bool notify, SemaphoreSlim kick, SemaphoreSlim interrupt, Barrier start, Stopwatch clock)
    {
        DriverVirtqueue<int> q = pair.Driver;
        var seen = new bool[buffers];
        var freeSlots = new int[slots];
        var slotOfSeq = new int[buffers];
        int freeCount = slots;
        for (int i = 0; i < slots; i++)
        {
            freeSlots[i] = i;
        }

        Span<GuestRange> readable = stackalloc GuestRange[3];
        Span<GuestRange> writable = stackalloc GuestRange[1];
        if (!start.SignalAndWait(Deadline))
        {
            return "driver: the device thread never started";
        }

        int sent = 0;
        int received = 0;
        var spin = new SpinWait();
        while (received < buffers)
        {
            if (clock.Elapsed > Deadline)
            {
                return $"driver: deadline passed, sent {sent}, received {received}";
            }

            bool progress = false;
            while (sent < buffers && freeCount > 0)
            {
                int slot = freeSlots[freeCount - 1];
                ulong gpa = pair.BufferBase + ((ulong)slot * SlotBytes);
                int segments = 1 + (sent % 3);
                for (int i = 0; i < segments; i++)
                {
                    int length = 16 + ((sent + i) % 48);
                    readable[i] = new GuestRange(gpa + (ulong)(i * 64), (uint)length);
                    Fill(pair.Span(readable[i].Address, length), sent, i);
                }

                writable[0] = new GuestRange(gpa + 192, 8);
                if (!q.TryAdd(readable[..segments], writable, sent))
                {
                    break;
                }

                freeCount--;
                slotOfSeq[sent] = slot;
                sent++;
                progress = true;
            }

            if (q.PublishAvailable() && notify)
            {
                kick.Release();
            }

            while (q.TryGetUsed(out int seq, out uint length))
            {
                progress = true;
                if ((uint)seq >= (uint)buffers || seen[seq])
                {
                    return $"driver: token {seq} returned twice or never sent";
                }

                seen[seq] = true;
                int slot = slotOfSeq[seq];
                ulong gpa = pair.BufferBase + ((ulong)slot * SlotBytes);
                ReadOnlySpan<byte> response = pair.Span(gpa + 192, 8);
                uint expected = ExpectedChecksum(pair, gpa, seq);
                if (length != 8 || BinaryPrimitives.ReadInt32LittleEndian(response) != seq
                    || BinaryPrimitives.ReadUInt32LittleEndian(response[4..]) != expected)
                {
                    return $"driver: buffer {seq} came back corrupted";
                }

                freeSlots[freeCount++] = slot;
                received++;
            }

            if (q.Error != QueueError.None)
            {
                return $"driver broke: {q.Error}";
            }

            if (progress)
            {
                spin = default;
                continue;
            }

            if (!notify)
            {
                spin.SpinOnce(sleep1Threshold: -1);
                continue;
            }

            // TryGetUsed re-armed notifications (used_event, or the flag left clear) and re-checked; now wait.
            if (q.EnableUsedNotifications() == NotificationRecheck.BuffersPending)
            {
                continue;
            }

            if (!interrupt.Wait(LostNotification))
            {
                return $"driver: no interrupt for {LostNotification.TotalSeconds} s, sent {sent}, received {received} (lost notification)";
            }
        }

        return null;
    }

    private static void Fill(Span<byte> buffer, int seq, int segment)
    {
        BinaryPrimitives.WriteInt32LittleEndian(buffer, seq);
        for (int i = 4; i < buffer.Length; i++)
        {
            buffer[i] = (byte)((seq * 131) + (segment * 17) + i);
        }
    }

    private static uint ExpectedChecksum(QueuePair pair, ulong gpa, int seq)
    {
        var crc = default(Fnv1a);
        int segments = 1 + (seq % 3);
        Span<byte> expected = stackalloc byte[64];
        for (int i = 0; i < segments; i++)
        {
            int length = 16 + ((seq + i) % 48);
            Fill(expected[..length], seq, i);
            crc.Append(expected[..length]);
        }

        return crc.Hash;
    }

    /// <summary>FNV-1a over the bytes appended, seeded so that an all-zero input does not hash to zero.</summary>
    private struct Fnv1a
    {
        private uint _hash;
        private bool _started;

        public readonly uint Hash => _started ? _hash : 2166136261u;

        public void Append(ReadOnlySpan<byte> bytes)
        {
            if (!_started)
            {
                _hash = 2166136261u;
                _started = true;
            }

            foreach (byte b in bytes)
            {
                _hash = (_hash ^ b) * 16777619u;
            }
        }
    }
}

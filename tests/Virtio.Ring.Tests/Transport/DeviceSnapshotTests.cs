using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;

namespace Virtio.Ring.Tests.Transport;

/// <summary>
/// Whole-device snapshots (<see cref="VirtioDevice.SaveState"/>, <see cref="VirtioMmioTransport.SaveState"/>):
/// saved mid-traffic, restored into a fresh device over the same guest memory (a live update), traffic resumes
/// with no buffer lost or repeated, on both ring formats and with packed buffers in flight; and a snapshot is
/// checked like guest input.
/// </summary>
public class DeviceSnapshotTests
{
    private const ulong Version1 = 1UL << VirtioFeatureBits.Version1;
    private const ulong EventIdx = 1UL << VirtioFeatureBits.EventIdx;
    private const ulong Packed = 1UL << VirtioFeatureBits.RingPacked;
    private const ulong InOrder = 1UL << VirtioFeatureBits.InOrder;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    public static TheoryData<QueueThreading, ulong> Modes()
    {
        var data = new TheoryData<QueueThreading, ulong>();
        foreach (QueueThreading t in new[] { QueueThreading.Inline, QueueThreading.WorkerPerQueue })
        {
            data.Add(t, Version1 | EventIdx);
            data.Add(t, Version1);
            data.Add(t, Version1 | Packed | EventIdx);
            data.Add(t, Version1 | Packed);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void Restored_mid_traffic_with_buffers_in_flight_the_device_loses_and_repeats_nothing(QueueThreading threading, ulong wanted)
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = threading });
        WorkerLifecycleTests.Initialize(rig, wanted);
        var outstanding = new HashSet<int>();
        var done = new HashSet<int>();
        int next = 0;

        void Send(int n)
        {
            int sent = rig.Send(next, n);
            for (int i = 0; i < sent; i++)
            {
                outstanding.Add(next + i);
            }

            next += sent;
        }

        void Take(int atLeast)
        {
            List<int> back = rig.ReceiveAtLeast(atLeast, Bound);
            Assert.True(back.Count >= atLeast, $"{back.Count} of {atLeast} came back");
            foreach (int token in back)
            {
                Assert.True(outstanding.Remove(token), $"token {token} twice");
                Assert.True(done.Add(token));
            }
        }

        Send(5);
        Take(5);

        // Three buffers the device pops and holds (in flight on a packed ring: IDs and slots in the snapshot).
        rig.Device.Hold = true;
        Send(3);
        Assert.True(System.Threading.SpinWait.SpinUntil(() => rig.Device.HeldCount == 3, Bound));

        // Two more published but never kicked: the device has not seen them.
        rig.Device.Hold = false;
        for (int i = 0; i < 2; i++)
        {
            int token = next++;
            ulong slot = MmioRig.DataBase + ((ulong)token * 16);
            BitConverter.TryWriteBytes(rig.Span(slot, 4), token);
            Assert.True(rig.Queue!.TryAdd([new GuestRange(slot, 4)], [new GuestRange(slot + 8, 4)], token));
            outstanding.Add(token);
        }

        rig.Queue!.FlushAvailable();

        // Live update: the device is saved, disposed, rebuilt and restored over the same guest memory.
        Assert.Equal(DeviceStateError.None, rig.ReplaceDevice());
        Assert.Equal(DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk | DeviceStatus.DriverOk, rig.Driver.Status);
        Assert.Equal(3, rig.Device.HeldCount); // the model's own state came along

        Take(2);                       // restored and served once: the two unkicked ones come back
        Assert.Equal(3, rig.Device.CompleteHeld());
        Take(3);                       // the three that were in flight across the snapshot
        Send(7);
        Take(7);

        Assert.Empty(outstanding);
        Assert.Equal(next, done.Count);
        Assert.Null(rig.Device.LastFault);
    }

    [Fact]
    public void Packed_in_order_buffers_in_flight_survive_a_snapshot_in_their_order()
    {
        using var rig = new MmioRig(deviceFeatures: InOrder);
        WorkerLifecycleTests.Initialize(rig, Version1 | Packed | InOrder);
        rig.Device.Hold = true;
        Assert.Equal(4, rig.Send(0, 4));
        Assert.Equal(4, rig.Device.HeldCount);
        Assert.Equal(DeviceStateError.None, rig.ReplaceDevice());
        Assert.Equal(4, rig.Device.CompleteHeld()); // in pop order, which IN_ORDER requires of PushUsed
        List<int> back = rig.ReceiveAtLeast(4, Bound);
        Assert.Equal([0, 1, 2, 3], back);
        Assert.Null(rig.Device.LastFault);
    }

    [Fact]
    public void A_reset_device_and_a_configured_but_not_running_one_round_trip()
    {
        using var rig = new MmioRig();
        Assert.Equal(DeviceStateError.None, rig.ReplaceDevice());
        Assert.Equal(DeviceStatus.Reset, rig.Driver.Status);

        Assert.True(rig.Driver.Initialize(Version1 | EventIdx));
        Assert.True(rig.SetupQueue0(16));
        rig.Device.SetValue(0xABCD);
        uint generation = rig.Device.ConfigGeneration;
        Assert.Equal(DeviceStateError.None, rig.ReplaceDevice());
        Assert.Equal(DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk, rig.Driver.Status);
        Assert.True(rig.Device.IsQueueReady(0));
        Assert.Equal(generation, rig.Device.ConfigGeneration);
        Span<byte> value = stackalloc byte[4];
        rig.Driver.ReadConfig(0, value);
        Assert.Equal(0xABCDu, BinaryPrimitives.ReadUInt32LittleEndian(value));
        rig.Driver.SetDriverOk();
        Assert.Equal(3, rig.Send(0, 3));
        Assert.Equal(3, rig.Receive().Length);
    }

    [Fact]
    public void The_transport_keeps_its_pending_interrupt_and_raises_the_line_after_restore()
    {
        using var rig = new MmioRig();
        WorkerLifecycleTests.Initialize(rig, Version1);
        rig.Device.SetValue(1); // a configuration change interrupt, not acknowledged
        Assert.True(rig.LineLevel);
        int before = rig.Interrupts;
        Assert.Equal(DeviceStateError.None, rig.ReplaceDevice());
        Assert.Equal(VirtioInterruptReason.ConfigurationChange, rig.Transport.InterruptStatus);
        Assert.Equal(before + 1, rig.Interrupts);
    }

    [Fact]
    public void Every_truncation_of_a_snapshot_is_refused_without_an_exception_and_leaves_the_device_reset()
    {
        using var rig = new MmioRig();
        WorkerLifecycleTests.Initialize(rig, Version1 | Packed);
        rig.Device.Hold = true;
        rig.Send(0, 2);
        byte[] state = rig.Device.SaveState();
        using var memory = GuestMemory.Allocate(1 << 20);
        for (int length = 0; length < state.Length; length++)
        {
            using var device = new EchoDevice(rig.Memory);
            Assert.False(device.TryRestoreState(state.AsSpan(0, length), out DeviceStateError error));
            Assert.NotEqual(DeviceStateError.None, error);
            Assert.Equal(DeviceStatus.Reset, device.Status);
            Assert.False(device.IsQueueReady(0));
        }

        using var whole = new EchoDevice(rig.Memory);
        Assert.True(whole.TryRestoreState(state, out _));
        byte[] longer = [.. state, 0];
        Assert.False(whole.TryRestoreState(longer, out DeviceStateError trailing));
        Assert.Equal(DeviceStateError.Malformed, trailing);
    }

    [Fact]
    public void Random_corruption_never_throws_and_a_refused_snapshot_leaves_a_usable_device()
    {
        using var rig = new MmioRig();
        WorkerLifecycleTests.Initialize(rig, Version1 | Packed | EventIdx);
        rig.Device.Hold = true;
        rig.Send(0, 3);
        byte[] state = rig.Device.SaveState();
        var rng = new Random(5);
        for (int i = 0; i < 3000; i++)
        {
            byte[] bad = (byte[])state.Clone();
            for (int k = rng.Next(1, 4); k > 0; k--)
            {
                bad[rng.Next(bad.Length)] ^= (byte)(1 << rng.Next(8));
            }

            using var device = new EchoDevice(rig.Memory);
            if (!device.TryRestoreState(bad, out _))
            {
                Assert.Equal(DeviceStatus.Reset, device.Status);
            }
        }
    }

    [Fact]
    public void A_snapshot_is_checked_field_by_field()
    {
        using var rig = new MmioRig();
        WorkerLifecycleTests.Initialize(rig, Version1 | Packed);
        rig.Device.Hold = true;
        rig.Send(0, 2);
        byte[] good = rig.Device.SaveState();

        Assert.Equal(DeviceStateError.WrongMagic, Restore(Patch(good, 0, 0xFF)));
        Assert.Equal(DeviceStateError.UnsupportedVersion, Restore(Patch(good, 4, 2)));
        Assert.Equal(DeviceStateError.DeviceMismatch, Restore(Patch(good, 6, 43)));             // device ID
        Assert.Equal(DeviceStateError.InvalidStatus, Restore(Patch(good, StatusOffset, 0x0F & ~0x08))); // DRIVER_OK without FEATURES_OK
        Assert.Equal(DeviceStateError.InvalidStatus, Restore(Patch(good, StatusOffset, 0x20)));  // an unknown bit
        Assert.Equal(DeviceStateError.InvalidFeatures, Restore(Patch(good, NegotiatedOffset + 7, 0x80))); // bit 63: not offered
        using var other = new EchoDevice(rig.Memory, queues: 3);
        Assert.False(other.TryRestoreState(good, out DeviceStateError mismatch));
        Assert.Equal(DeviceStateError.DeviceMismatch, mismatch);

        // A packed queue whose in-flight IDs do not add up to the slots between its positions.
        int queue0 = QueueOffset;
        int inFlightCount = queue0 + 2 + 1 + 1 + 24 + 4 + 1 + 2 + 1 + 2 + 1 + 1;
        Assert.Equal(2, BinaryPrimitives.ReadUInt16LittleEndian(good.AsSpan(inFlightCount)));
        Assert.Equal(2, good[inFlightCount + 2 + 2]); // each echo request is a readable and a writable descriptor: 2 slots
        Assert.Equal(DeviceStateError.InvalidRingState, Restore(Patch(good, inFlightCount + 2 + 2, 3)));  // first buffer: 3 slots
        Assert.Equal(DeviceStateError.InvalidRingState, Restore(Patch(good, inFlightCount + 2 + 2, 0)));  // first buffer: no slot
        byte[] duplicate = (byte[])good.Clone();
        good.AsSpan(inFlightCount + 2, 2).CopyTo(duplicate.AsSpan(inFlightCount + 6)); // second ID = first ID
        Assert.Equal(DeviceStateError.InvalidRingState, Restore(duplicate));
        Assert.Equal(DeviceStateError.InvalidRingState, Restore(Patch(good, inFlightCount + 2 + 1, 0x7F))); // ID above Q
        Assert.Equal(DeviceStateError.InvalidQueueConfiguration, Restore(Patch(good, queue0 + 1, 0x7F)));  // size above the maximum
        Assert.Equal(DeviceStateError.ModelStateRejected, Restore(Patch(good, good.Length - (6 * 2) - 4, 0x7F))); // model: held count

        DeviceStateError Restore(byte[] state)
        {
            using var device = new EchoDevice(rig.Memory);
            device.TryRestoreState(state, out DeviceStateError error);
            return error;
        }
    }

    // Offsets in the version 1 format (see VirtioDevice.Snapshot.cs).
    private const int StatusOffset = 4 + 2 + 4 + 8 + 4 + 4;
    private const int NegotiatedOffset = StatusOffset + 1 + 8;
    private const int QueueOffset = NegotiatedOffset + 8 + 4 + 4 + EchoDevice.ConfigBytes;

    private static byte[] Patch(byte[] state, int offset, byte value)
    {
        byte[] copy = (byte[])state.Clone();
        copy[offset] = value;
        return copy;
    }
}

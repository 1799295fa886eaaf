using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;
using R = Virtio.Ring.Transport.Mmio.VirtioMmioRegisters;

namespace Virtio.Ring.Tests.Transport;

/// <summary>virtio-mmio (VIRTIO 1.2, 4.2) and the device model behind it, driven through the registers only.</summary>
public class VirtioMmioTests
{
    private const ulong Version1 = 1UL << VirtioFeatureBits.Version1;
    private const ulong EventIdx = 1UL << VirtioFeatureBits.EventIdx;
    private const ulong Packed = 1UL << VirtioFeatureBits.RingPacked;
    private const ulong NotificationData = 1UL << VirtioFeatureBits.NotificationData;
    private const ulong RingReset = 1UL << VirtioFeatureBits.RingReset;

    public static TheoryData<ulong> RingFormats() => new() { Version1 | EventIdx, Version1 | EventIdx | Packed, Version1, Version1 | Packed };

    [Fact]
    public void Identification_registers()
    {
        using var rig = new MmioRig();
        Assert.Equal(0x74726976u, rig.Transport.Read(R.MagicValue, 4));
        Assert.Equal(2u, rig.Transport.Read(R.Version, 4));
        Assert.Equal(EchoDevice.Id, rig.Transport.Read(R.DeviceId, 4));
        Assert.Equal(0x1AF4u, rig.Transport.Read(R.VendorId, 4));
        Assert.True(rig.Driver.IsPresent);
        Assert.Equal(rig.Device.DeviceFeatures, rig.Driver.ReadDeviceFeatures());
        rig.Transport.Write(R.DeviceFeaturesSel, 4, 2);
        Assert.Equal(0u, rig.Transport.Read(R.DeviceFeatures, 4)); // banks beyond 1 read 0
    }

    [Fact]
    public void Shared_memory_registers_report_no_region()
    {
        using var rig = new MmioRig();
        rig.Transport.Write(R.ShmSel, 4, 0);
        Assert.Equal(0xFFFF_FFFFu, rig.Transport.Read(R.ShmLenLow, 4));
        Assert.Equal(0xFFFF_FFFFu, rig.Transport.Read(R.ShmLenHigh, 4));
        Assert.Equal(0xFFFF_FFFFu, rig.Transport.Read(R.ShmBaseLow, 4));
        Assert.Equal(0xFFFF_FFFFu, rig.Transport.Read(R.ShmBaseHigh, 4));
    }

    [Fact]
    public void QueueSizeMax_is_zero_for_a_queue_that_does_not_exist()
    {
        using var rig = new MmioRig();
        rig.Transport.Write(R.QueueSel, 4, 0);
        Assert.Equal(256u, rig.Transport.Read(R.QueueSizeMax, 4));
        rig.Transport.Write(R.QueueSel, 4, 2);
        Assert.Equal(0u, rig.Transport.Read(R.QueueSizeMax, 4));
    }

    [Theory]
    [MemberData(nameof(RingFormats))]
    public void The_initialisation_sequence_of_3_1_1_then_buffers_flow_through_the_transport(ulong wanted)
    {
        using var rig = new MmioRig();
        Assert.True(rig.Driver.Initialize(wanted));
        Assert.Equal(DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk, rig.Driver.Status);
        Assert.Equal(wanted, rig.Device.NegotiatedFeatures);
        Assert.True(rig.SetupQueue0());
        rig.Driver.SetDriverOk();
        Assert.Equal(DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk | DeviceStatus.DriverOk, rig.Driver.Status);

        var seen = new HashSet<int>();
        int next = 0;
        for (int round = 0; round < 50; round++)
        {
            int sent = rig.Send(next, 10);
            Assert.True(sent == 10, $"round {round}: {sent} sent, {rig.Queue!.InFlight} in flight, device {rig.Device.Echoed}");
            next += sent;
            Assert.Equal(VirtioInterruptReason.UsedBuffer, rig.Driver.TakeInterrupts() & VirtioInterruptReason.UsedBuffer);
            foreach (int token in rig.Receive())
            {
                Assert.True(seen.Add(token));
            }
        }

        Assert.Equal(next, seen.Count);
        Assert.Equal(500, rig.Device.Echoed);
        Assert.True(rig.Interrupts > 0);
        Assert.Equal(VirtioInterruptReason.None, rig.Transport.InterruptStatus);
    }

    [Fact]
    public void Features_the_device_did_not_offer_are_refused_at_FEATURES_OK()
    {
        using var rig = new MmioRig();
        rig.Driver.Reset();
        rig.Transport.Write(R.Status, 4, 1);
        rig.Transport.Write(R.Status, 4, 3);
        Assert.False(rig.Driver.Negotiate(Version1 | (1UL << 60)));
        Assert.Equal(DeviceStatus.Failed, rig.Driver.Status & DeviceStatus.Failed);
        Assert.Equal(0UL, rig.Device.NegotiatedFeatures);
    }

    [Fact]
    public void A_modern_device_refuses_a_driver_without_VERSION_1()
    {
        using var rig = new MmioRig();
        rig.Driver.Reset();
        rig.Transport.Write(R.Status, 4, 3);
        rig.Transport.Write(R.Status, 4, 1);
        rig.Transport.Write(R.Status, 4, 3);
        Assert.False(rig.Driver.Negotiate(EventIdx));
    }

    [Fact]
    public void The_device_model_can_refuse_a_feature_combination()
    {
        using var rig = new MmioRig();
        rig.Device.FeatureCheck = f => (f & Packed) == 0;
        Assert.False(rig.Driver.Initialize(Version1 | Packed));
        Assert.True(rig.Driver.Initialize(Version1));
    }

    [Fact]
    public void Status_bits_follow_the_order_of_3_1_1_and_are_never_cleared()
    {
        using var rig = new MmioRig();
        rig.Driver.Reset();
        rig.Transport.Write(R.Status, 4, (uint)DeviceStatus.Driver);           // DRIVER before ACKNOWLEDGE
        Assert.Equal(DeviceStatus.Reset, rig.Driver.Status);
        rig.Transport.Write(R.Status, 4, 1);
        rig.Transport.Write(R.Status, 4, 1 | 8);                               // FEATURES_OK before DRIVER
        Assert.Equal(DeviceStatus.Acknowledge, rig.Driver.Status);
        rig.Transport.Write(R.Status, 4, 1 | 2);
        rig.Transport.Write(R.Status, 4, 1 | 2 | 4);                           // DRIVER_OK before FEATURES_OK
        Assert.Equal(DeviceStatus.Acknowledge | DeviceStatus.Driver, rig.Driver.Status);
        rig.Transport.Write(R.Status, 4, 1);                                   // clearing DRIVER
        Assert.Equal(DeviceStatus.Acknowledge | DeviceStatus.Driver, rig.Driver.Status);
        Assert.True(rig.Driver.Negotiate(Version1));
        rig.Transport.Write(R.DriverFeaturesSel, 4, 0);
        rig.Transport.Write(R.DriverFeatures, 4, 0);                           // features are fixed now
        Assert.Equal(Version1, rig.Device.DriverFeatures);
    }

    [Fact]
    public void Queues_cannot_be_enabled_before_FEATURES_OK_nor_changed_while_ready()
    {
        using var rig = new MmioRig();
        rig.Driver.Reset();
        rig.Transport.Write(R.Status, 4, 1);
        rig.Transport.Write(R.Status, 4, 3);
        Assert.False(rig.SetupQueue0());                   // no FEATURES_OK yet
        Assert.True(rig.Driver.Negotiate(Version1));
        Assert.True(rig.SetupQueue0(16));
        rig.Transport.Write(R.QueueSel, 4, 0);
        rig.Transport.Write(R.QueueSize, 4, 8);            // ignored: the queue is live
        rig.Transport.Write(R.QueueDescLow, 4, 0x5000);
        Assert.Equal(16, rig.Device.QueueSize(0));
        Assert.Equal(MmioRig.RingBase, rig.Device.QueueAddresses(0).DescriptorAreaAddress);
        Assert.False(rig.Driver.SetupQueue(0, rig.Device.QueueAddresses(0))); // already in use
    }

    [Fact]
    public void A_queue_outside_guest_memory_sets_DEVICE_NEEDS_RESET()
    {
        using var rig = new MmioRig();
        Assert.True(rig.Driver.Initialize(Version1));
        Assert.False(rig.Driver.SetupQueue(0, new VirtqueueAddresses(16, 1UL << 40, 0x2000, 0x3000)));
        Assert.Equal(DeviceStatus.DeviceNeedsReset, rig.Driver.Status & DeviceStatus.DeviceNeedsReset);
        Assert.Equal(QueueError.RingNotInGuestMemory, rig.Device.LastQueueError);
        rig.Driver.Reset();
        Assert.Equal(DeviceStatus.Reset, rig.Driver.Status);
    }

    [Fact]
    public void A_queue_the_guest_breaks_sets_DEVICE_NEEDS_RESET_and_a_config_interrupt()
    {
        using var rig = new MmioRig();
        Assert.True(rig.Driver.Initialize(Version1));
        Assert.True(rig.SetupQueue0());
        rig.Driver.SetDriverOk();
        Assert.True(rig.Queue!.TryAdd([new GuestRange(1UL << 50, 8)], [], 1)); // outside guest memory
        rig.Queue.PublishAvailable();
        rig.Driver.Notify(0);
        Assert.Equal(DeviceStatus.DeviceNeedsReset, rig.Driver.Status & DeviceStatus.DeviceNeedsReset);
        Assert.Equal(VirtioInterruptReason.ConfigurationChange, rig.Driver.TakeInterrupts());
        Assert.Equal(QueueError.BufferNotInGuestMemory, rig.Device.LastQueueError);

        // Further notifications are ignored until the driver resets the device.
        int served = rig.Device.Notifications;
        rig.Driver.Notify(0);
        Assert.Equal(served, rig.Device.Notifications);
    }

    [Theory]
    [MemberData(nameof(RingFormats))]
    public void Reset_in_the_middle_of_traffic_loses_no_buffer_and_uses_none_twice(ulong wanted)
    {
        using var rig = new MmioRig();
        Assert.True(rig.Driver.Initialize(wanted));
        Assert.True(rig.SetupQueue0(32));
        rig.Driver.SetDriverOk();
        var outstanding = new HashSet<int>();
        var done = new HashSet<int>();

        // Buffers the device has not seen yet: published but never notified.
        for (int i = 0; i < 6; i++)
        {
            ulong slot = MmioRig.DataBase + ((ulong)i * 16);
            BitConverter.TryWriteBytes(rig.Span(slot, 4), i);
            Assert.True(rig.Queue!.TryAdd([new GuestRange(slot, 4)], [new GuestRange(slot + 8, 4)], i));
            outstanding.Add(i);
        }

        rig.Queue!.PublishAvailable();
        int sent = rig.Send(6, 4); // these four get a kick: the device echoes all ten
        for (int i = 6; i < 6 + sent; i++)
        {
            outstanding.Add(i);
        }

        foreach (int token in rig.Receive())
        {
            Assert.True(outstanding.Remove(token));
            Assert.True(done.Add(token));
        }

        // More buffers, then the device is reset before it sees them.
        for (int i = 100; i < 105; i++)
        {
            ulong slot = MmioRig.DataBase + ((ulong)(i % 1024) * 16);
            BitConverter.TryWriteBytes(rig.Span(slot, 4), i);
            Assert.True(rig.Queue.TryAdd([new GuestRange(slot, 4)], [new GuestRange(slot + 8, 4)], i));
            outstanding.Add(i);
        }

        rig.Queue.PublishAvailable();
        rig.Driver.Reset();
        Assert.Equal(DeviceStatus.Reset, rig.Driver.Status);
        while (rig.Queue.TryDetachUnused(out int token))
        {
            Assert.True(outstanding.Remove(token));
            Assert.DoesNotContain(token, done);
        }

        Assert.Empty(outstanding);

        // Start over; every new buffer comes back exactly once.
        Assert.True(rig.Driver.Initialize(wanted));
        Assert.True(rig.SetupQueue0(32));
        rig.Driver.SetDriverOk();
        Assert.Equal(8, rig.Send(200, 8));
        int[] back = rig.Receive();
        Assert.Equal(8, back.Length);
        foreach (int token in back)
        {
            Assert.True(done.Add(token));
        }
    }

    [Fact]
    public void Config_reads_retry_until_the_generation_is_stable()
    {
        using var rig = new MmioRig();
        Assert.True(rig.Driver.Initialize(Version1));
        rig.Driver.SetDriverOk();
        var racing = new RacingBus(rig.Transport, () => rig.Device.SetValue(0xABCD_0000u + (uint)rig.Device.ConfigGeneration), changes: 3);
        var driver = new VirtioMmioDriver(racing);
        byte[] config = new byte[8];
        uint generationBefore = rig.Device.ConfigGeneration;
        driver.ReadConfig(0, config);
        Assert.Equal(generationBefore + 3, rig.Device.ConfigGeneration);
        Assert.Equal(0xABCD_0000u + generationBefore + 2, BinaryPrimitives.ReadUInt32LittleEndian(config)); // the value after the last change
        Assert.Equal(3 * 2, racing.ConfigReads); // three attempts of two 4-byte reads: the first two saw changes
        Assert.Equal(VirtioInterruptReason.ConfigurationChange, rig.Driver.TakeInterrupts());
    }

    [Fact]
    public void Config_space_is_accessed_at_the_width_of_the_field()
    {
        using var rig = new MmioRig();
        Assert.Equal(7u, rig.Transport.Read(R.Config, 4));
        Assert.Equal(7u, rig.Transport.Read(R.Config, 1));
        Assert.Equal(0u, rig.Transport.Read(R.Config + 1, 2));
        rig.Transport.Write(R.Config + 4, 2, 0x1234);
        rig.Transport.Write(R.Config + 6, 1, 0x56);
        byte[] scratch = new byte[4];
        rig.Driver.ReadConfig(4, scratch);
        Assert.Equal(0x0056_1234u, BinaryPrimitives.ReadUInt32LittleEndian(scratch));
        rig.Driver.WriteConfig(4, [1, 2, 3, 4]);
        Assert.Equal(0x0403_0201u, rig.Transport.Read(R.Config + 4, 4));
    }

    [Theory]
    [InlineData(R.Status, 2, false)]              // control registers take 32-bit accesses only
    [InlineData(R.Status + 1, 4, false)]          // misaligned
    [InlineData(0x0f0UL, 4, false)]               // unknown offset
    [InlineData(R.QueueNotify, 4, false)]         // write-only, read
    [InlineData(R.MagicValue, 4, true)]           // read-only, written
    [InlineData(R.Config + 6, 4, false)]          // config read past the end
    [InlineData(R.Config + 8, 1, true)]           // config write past the end
    [InlineData(R.Config, 8, false)]              // no 8-byte accesses
    [InlineData(0xFFFF_FFFF_FFFF_FFF0UL, 4, true)] // far outside
    public void Invalid_accesses_are_ignored_and_reported_never_thrown(ulong offset, int size, bool write)
    {
        using var rig = new MmioRig();
        var faults = new List<(ulong, int, bool)>();
        rig.Transport.InvalidAccess = (o, s, w) => faults.Add((o, s, w));
        DeviceStatus before = rig.Device.Status;
        if (write)
        {
            rig.Transport.Write(offset, size, 0xFFFF_FFFF);
        }
        else
        {
            Assert.Equal(0u, rig.Transport.Read(offset, size));
        }

        Assert.Equal(1, rig.Transport.InvalidAccesses);
        Assert.Single(faults);
        Assert.Equal(before, rig.Device.Status);
    }

    [Fact]
    public void InterruptACK_clears_only_the_acknowledged_bits()
    {
        using var rig = new MmioRig();
        Assert.True(rig.Driver.Initialize(Version1));
        rig.Driver.SetDriverOk();
        rig.Transport.Raise(VirtioInterruptReason.UsedBuffer, 0);
        rig.Device.SetValue(1);
        Assert.Equal(3u, rig.Transport.Read(R.InterruptStatus, 4));
        rig.Transport.Write(R.InterruptAck, 4, 1);
        Assert.Equal(2u, rig.Transport.Read(R.InterruptStatus, 4));
        rig.Transport.Write(R.InterruptAck, 4, 2);
        Assert.Equal(0u, rig.Transport.Read(R.InterruptStatus, 4));
    }

    [Fact]
    public void NOTIFICATION_DATA_reaches_the_device()
    {
        using var rig = new MmioRig();
        Assert.True(rig.Driver.Initialize(Version1 | NotificationData));
        Assert.True(rig.SetupQueue0());
        rig.Driver.SetDriverOk();
        rig.Driver.Notify(0, data: 0x8005);
        Assert.Equal(0x8005_0000u, rig.Device.LastNotificationData);
    }

    [Fact]
    public void A_single_queue_reset_with_RING_RESET()
    {
        using var rig = new MmioRig();
        Assert.True(rig.Driver.Initialize(Version1 | RingReset | EventIdx));
        Assert.True(rig.SetupQueue0());
        rig.Driver.SetDriverOk();
        Assert.Equal(4, rig.Send(0, 4));
        Assert.Equal(4, rig.Receive().Length);
        Assert.True(rig.Driver.ResetQueue(0));
        Assert.False(rig.Device.IsQueueReady(0));
        Assert.True(rig.SetupQueue0()); // a fresh ring at the same place
        Assert.Equal(0u, rig.Transport.Read(R.QueueReset, 4));
        Assert.Equal(4, rig.Send(10, 4));
        Assert.Equal(new[] { 10, 11, 12, 13 }, rig.Receive());
    }

    [Fact]
    public void Legacy_version_1_sets_queues_up_with_QueuePFN()
    {
        using var rig = new MmioRig(legacy: true);
        VirtioMmioTransport t = rig.Transport;
        Assert.Equal(1u, t.Read(R.Version, 4));
        t.Write(R.Status, 4, 0);
        t.Write(R.Status, 4, 1);
        t.Write(R.Status, 4, 3);
        t.Write(R.DeviceFeaturesSel, 4, 1);
        Assert.Equal(0u, t.Read(R.DeviceFeatures, 4)); // legacy drivers see 32 feature bits
        t.Write(R.DeviceFeaturesSel, 4, 0);
        uint offered = t.Read(R.DeviceFeatures, 4);
        t.Write(R.DriverFeaturesSel, 4, 0);
        t.Write(R.DriverFeatures, 4, offered & (uint)EventIdx);
        t.Write(R.LegacyGuestPageSize, 4, 4096);
        t.Write(R.QueueSel, 4, 0);
        t.Write(R.QueueSize, 4, 16);
        t.Write(R.LegacyQueueAlign, 4, 4096);
        t.Write(R.LegacyQueuePfn, 4, (uint)(MmioRig.RingBase / 4096));
        Assert.Equal((uint)(MmioRig.RingBase / 4096), t.Read(R.LegacyQueuePfn, 4));
        t.Write(R.Status, 4, 1 | 2 | 4);
        Assert.Equal(DeviceStatus.DriverOk, rig.Device.Status & DeviceStatus.DriverOk);
        Assert.Equal(EventIdx, rig.Device.NegotiatedFeatures);

        // The guest's split queue in the legacy contiguous layout.
        var layout = Virtio.Ring.Split.SplitQueueLayout.Legacy(MmioRig.RingBase, 16);
        using var queue = new Virtio.Ring.Split.SplitDriverVirtqueue<int>(rig.Memory, layout, VirtqueueFeatures.EventIndex);
        for (int i = 0; i < 5; i++)
        {
            ulong slot = MmioRig.DataBase + ((ulong)i * 16);
            BitConverter.TryWriteBytes(rig.Span(slot, 4), i);
            Assert.True(queue.TryAdd([new GuestRange(slot, 4)], [new GuestRange(slot + 8, 4)], i));
        }

        Assert.True(queue.PublishAvailable());
        t.Write(R.QueueNotify, 4, 0);
        for (int i = 0; i < 5; i++)
        {
            Assert.True(queue.TryGetUsed(out int token, out uint length));
            Assert.Equal((i, 4u), (token, length));
        }
    }

    /// <summary>A bus that lets the device change its config between the driver's config reads.</summary>
    private sealed class RacingBus(IVirtioMmioBus inner, Action change, int changes) : IVirtioMmioBus
    {
        private int _left = changes;

        public int ConfigReads { get; private set; }

        public uint Read(ulong offset, int size)
        {
            uint value = inner.Read(offset, size);
            if (offset >= R.Config)
            {
                ConfigReads++;
                if (_left > 0)
                {
                    _left--;
                    change();
                }
            }

            return value;
        }

        public void Write(ulong offset, int size, uint value) => inner.Write(offset, size, value);
    }
}

using System;
using Virtio.Ring.Transport;
using R = Virtio.Ring.Transport.Mmio.VirtioMmioRegisters;

namespace Virtio.Ring.Tests.Transport;

/// <summary>A device chooses the transport features it offers (VIRTIO 1.2, 6); VERSION_1 always.</summary>
public class DeviceOptionsTests
{
    private const ulong Version1 = 1UL << VirtioFeatureBits.Version1;
    private const ulong EventIdx = 1UL << VirtioFeatureBits.EventIdx;
    private const ulong Packed = 1UL << VirtioFeatureBits.RingPacked;
    private const ulong NotificationData = 1UL << VirtioFeatureBits.NotificationData;
    private const ulong RingReset = 1UL << VirtioFeatureBits.RingReset;

    [Fact]
    public void The_default_offer_is_the_documented_set()
    {
        using var rig = new MmioRig();
        Assert.Equal(VirtioDevice.DefaultTransportFeatures, rig.Driver.ReadDeviceFeatures());
    }

    [Fact]
    public void A_device_that_leaves_out_the_packed_ring_gets_a_split_queue_from_a_driver_that_wanted_packed()
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { TransportFeatures = Version1 | EventIdx });
        ulong offered = rig.Driver.ReadDeviceFeatures();
        Assert.Equal(0UL, offered & (Packed | NotificationData | RingReset));
        Assert.True(rig.Driver.Initialize(Version1 | EventIdx | Packed | NotificationData));
        Assert.Equal(Version1 | EventIdx, rig.Driver.NegotiatedFeatures);
        Assert.True(rig.SetupQueue0(16));
        rig.Driver.SetDriverOk();
        Assert.Equal(VirtqueueFormat.Split, rig.Queue!.Format);
        Assert.Equal(4, rig.Send(0, 4));
        Assert.Equal(4, rig.Receive().Length);
    }

    [Fact]
    public void A_feature_the_device_left_out_is_refused_at_FEATURES_OK()
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { TransportFeatures = Version1 });
        rig.Driver.Reset();
        rig.Transport.Write(R.Status, 4, (uint)DeviceStatus.Acknowledge);
        rig.Transport.Write(R.Status, 4, (uint)(DeviceStatus.Acknowledge | DeviceStatus.Driver));
        Assert.False(rig.Driver.Negotiate(Version1 | Packed)); // writes Packed although it was not offered
        Assert.Equal((DeviceStatus)0, rig.Driver.Status & DeviceStatus.FeaturesOk);
        rig.Driver.Reset();
        Assert.True(rig.Driver.Initialize(Version1 | RingReset));
        Assert.False(rig.Driver.ResetQueue(0)); // RING_RESET was not offered: QueueReset does nothing
    }

    [Fact]
    public void VERSION_1_is_offered_even_when_the_options_leave_it_out()
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { TransportFeatures = 0 });
        Assert.Equal(Version1, rig.Driver.ReadDeviceFeatures());
    }

    [Fact]
    public void Transport_features_the_library_does_not_implement_are_a_caller_error()
    {
        using var memory = GuestMemory.Allocate(1 << 20);
        Assert.Throws<ArgumentException>(() => new EchoDevice(memory, options: new VirtioDeviceOptions
        {
            TransportFeatures = VirtioDevice.DefaultTransportFeatures | (1UL << VirtioFeatureBits.AccessPlatform),
        }));
    }

    [Fact]
    public void The_queues_a_device_shows_can_depend_on_the_negotiated_features()
    {
        using var rig = new MmioRig();
        rig.Device.QueueCountRule = f => (f & EventIdx) != 0 ? 2 : 1;
        rig.Transport.Write(R.QueueSel, 4, 1);
        Assert.Equal(256u, rig.Transport.Read(R.QueueSizeMax, 4)); // before FEATURES_OK: every slot
        Assert.True(rig.Driver.Initialize(Version1));
        Assert.Equal(1, rig.Device.PresentQueueCount);
        rig.Transport.Write(R.QueueSel, 4, 1);
        Assert.Equal(0u, rig.Transport.Read(R.QueueSizeMax, 4));   // queue 1 does not exist without EVENT_IDX
        Assert.False(rig.Driver.SetupQueue(1, VirtqueueAddresses.Compact(VirtqueueFormat.Split, 0x8000, 16)));
        Assert.True(rig.Driver.Initialize(Version1 | EventIdx));
        Assert.Equal(2, rig.Device.PresentQueueCount);
        Assert.True(rig.Driver.SetupQueue(1, VirtqueueAddresses.Compact(VirtqueueFormat.Split, 0x8000, 16)));
        rig.Driver.Reset();
        Assert.Equal(2, rig.Device.PresentQueueCount); // a reset shows every slot again (here: both)
    }

    [Fact]
    public void A_device_can_refuse_writes_to_its_read_only_configuration_fields()
    {
        using var rig = new MmioRig();
        rig.Device.ConfigWritableRule = (offset, length) => offset >= 4; // value (0..3) is the device's
        Assert.True(rig.Driver.Initialize(Version1));
        rig.Driver.WriteConfig(0, [1, 2, 3, 4]);
        rig.Driver.WriteConfig(4, [5, 6, 7, 8]);
        Span<byte> config = stackalloc byte[8];
        rig.Driver.ReadConfig(0, config);
        Assert.Equal(new byte[] { 7, 0, 0, 0, 5, 6, 7, 8 }, config.ToArray());
    }
}

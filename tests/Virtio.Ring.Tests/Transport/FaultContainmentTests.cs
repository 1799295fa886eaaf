using System;
using System.Threading;
using Virtio.Ring.Transport;
using R = Virtio.Ring.Transport.Mmio.VirtioMmioRegisters;

namespace Virtio.Ring.Tests.Transport;

/// <summary>
/// A device model's exception is contained at the device-model boundary (and so is a queue the guest broke):
/// the device sets DEVICE_NEEDS_RESET with a configuration change notification (VIRTIO 1.2, 2.1.2), the VMM is
/// told through <see cref="VirtioDevice.Faulted"/>, and the transport never throws into the exit handler.
/// </summary>
public class FaultContainmentTests
{
    private const ulong Version1 = 1UL << VirtioFeatureBits.Version1;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    public static TheoryData<QueueThreading> Threadings() =>
        new() { QueueThreading.Inline, QueueThreading.WorkerPerQueue, QueueThreading.WorkerPerDevice };

    [Theory]
    [MemberData(nameof(Threadings))]
    public void A_model_that_throws_sets_NEEDS_RESET_and_reports_the_exception(QueueThreading threading)
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = threading });
        using var reported = new ManualResetEventSlim();
        VirtioDeviceFault? seen = null;
        rig.Device.Faulted += (_, f) =>
        {
            seen = f;
            reported.Set();
        };
        WorkerLifecycleTests.Initialize(rig, Version1);
        var bug = new InvalidOperationException("model bug");
        rig.Device.ThrowOnNotify = bug;

        rig.Send(0, 1); // the transport's Write returns normally, whatever the model does
        Assert.True(reported.Wait(Bound));

        Assert.Equal(DeviceStatus.DeviceNeedsReset, rig.Driver.Status & DeviceStatus.DeviceNeedsReset);
        Assert.True(rig.WaitForInterrupt(Bound));
        Assert.Equal(VirtioInterruptReason.ConfigurationChange, rig.Driver.TakeInterrupts() & VirtioInterruptReason.ConfigurationChange);
        Assert.NotNull(seen);
        Assert.Equal(VirtioDeviceFaultKind.ModelException, seen!.Kind);
        Assert.Equal("OnQueueNotify", seen.Source);
        Assert.Equal(0, seen.QueueIndex);
        Assert.Same(bug, seen.Exception);
        Assert.Same(seen, rig.Device.LastFault);

        // The guest resets; the device works again.
        rig.Device.ThrowOnNotify = null;
        rig.Driver.Reset();
        Assert.Null(rig.Device.LastFault);
        WorkerLifecycleTests.Initialize(rig, Version1);
        Assert.Equal(2, rig.Send(10, 2));
        Assert.Equal(2, rig.ReceiveAtLeast(2, Bound).Count);
    }

    [Fact]
    public void A_faulted_handler_that_throws_does_not_take_the_device_down()
    {
        using var rig = new MmioRig();
        rig.Device.Faulted += (_, _) => throw new InvalidOperationException("VMM handler bug");
        WorkerLifecycleTests.Initialize(rig, Version1);
        rig.Device.ThrowOnNotify = new FormatException();
        rig.Send(0, 1);
        Assert.Equal(DeviceStatus.DeviceNeedsReset, rig.Driver.Status & DeviceStatus.DeviceNeedsReset);
    }

    [Fact]
    public void OnDriverOk_throwing_leaves_DRIVER_OK_set_with_NEEDS_RESET()
    {
        using var rig = new MmioRig();
        rig.Device.ThrowOnDriverOk = new InvalidOperationException();
        Assert.True(rig.Driver.Initialize(Version1));
        rig.Driver.SetDriverOk();
        Assert.Equal(DeviceStatus.DriverOk | DeviceStatus.DeviceNeedsReset, rig.Driver.Status & (DeviceStatus.DriverOk | DeviceStatus.DeviceNeedsReset));
        Assert.Equal("OnDriverOk", rig.Device.LastFault!.Source);
    }

    [Fact]
    public void OnReset_throwing_still_resets_the_device_and_reports()
    {
        using var rig = new MmioRig();
        WorkerLifecycleTests.Initialize(rig, Version1);
        rig.Device.ThrowOnReset = new InvalidOperationException();
        int faults = 0;
        rig.Device.Faulted += (_, f) => faults += f.Source == "OnReset" ? 1 : 0;
        rig.Transport.Write(R.Status, 4, 0);
        Assert.Equal(1, faults);
        Assert.Equal(DeviceStatus.Reset, rig.Driver.Status & ~DeviceStatus.DeviceNeedsReset);
        Assert.False(rig.Device.IsQueueReady(0));
    }

    [Fact]
    public void AcceptFeatures_throwing_refuses_FEATURES_OK_and_reports()
    {
        using var rig = new MmioRig();
        rig.Device.FeatureCheck = _ => throw new InvalidOperationException();
        Assert.False(rig.Driver.Initialize(Version1));
        Assert.Equal(VirtioDeviceFaultKind.ModelException, rig.Device.LastFault!.Kind);
        Assert.Equal("AcceptFeatures", rig.Device.LastFault.Source);
    }

    [Theory]
    [MemberData(nameof(Threadings))]
    public void A_queue_the_guest_breaks_is_reported_as_a_fault_with_its_error(QueueThreading threading)
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = threading });
        using var reported = new ManualResetEventSlim();
        rig.Device.Faulted += (_, _) => reported.Set();
        WorkerLifecycleTests.Initialize(rig, Version1);
        Assert.True(rig.Queue!.TryAdd([new GuestRange(1UL << 50, 8)], [], 1)); // outside guest memory
        rig.Queue.PublishAvailable();
        rig.Driver.Notify(0);
        Assert.True(reported.Wait(Bound));
        VirtioDeviceFault fault = rig.Device.LastFault!;
        Assert.Equal(VirtioDeviceFaultKind.QueueBroken, fault.Kind);
        Assert.Equal(QueueError.BufferNotInGuestMemory, fault.QueueError);
        Assert.Equal(1UL << 50, fault.QueueErrorDetail);
        Assert.Equal(DeviceStatus.DeviceNeedsReset, rig.Driver.Status & DeviceStatus.DeviceNeedsReset);
    }
}

using System;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Transport.Mmio;

/// <summary>
/// The guest driver's view of a virtio-mmio device (VIRTIO 1.2, 4.2.3): device discovery, the initialisation
/// sequence of 3.1.1, queue setup, notifications, interrupt handling and configuration reads with the
/// generation-count retry loop. In-process simulations and tests use it to drive a device exactly as a guest would,
/// through the registers only.
/// </summary>
public sealed class VirtioMmioDriver
{
    private const int ConfigRetryLimit = 10_000;
    private readonly IVirtioMmioBus _bus;

    /// <summary>Drives the device behind <paramref name="bus"/>.</summary>
    public VirtioMmioDriver(IVirtioMmioBus bus)
    {
        ArgumentNullException.ThrowIfNull(bus);
        _bus = bus;
    }

    /// <summary>True when the window holds a virtio-mmio device (MagicValue "virt", Version 1 or 2, DeviceID not 0).</summary>
    public bool IsPresent =>
        Read(VirtioMmioRegisters.MagicValue) == VirtioMmioRegisters.Magic
        && Read(VirtioMmioRegisters.Version) is 1 or 2
        && Read(VirtioMmioRegisters.DeviceId) != 0;

    /// <summary>The Version register.</summary>
    public uint Version => Read(VirtioMmioRegisters.Version);

    /// <summary>The DeviceID register.</summary>
    public uint DeviceId => Read(VirtioMmioRegisters.DeviceId);

    /// <summary>The Status register.</summary>
    public DeviceStatus Status => (DeviceStatus)Read(VirtioMmioRegisters.Status);

    /// <summary>
    /// The ConfigGeneration register (4.2.2): it changes whenever the device changed its configuration space, so a
    /// driver can tell "changed since I last read" with one register read. Legacy (Version 1) devices have no such
    /// register: 0.
    /// </summary>
    public uint ConfigGeneration => Version == 1 ? 0 : Read(VirtioMmioRegisters.ConfigGeneration);

    /// <summary>Features negotiated by <see cref="Initialize"/>.</summary>
    public ulong NegotiatedFeatures { get; private set; }

    /// <summary>All 64 offered feature bits (both DeviceFeaturesSel banks).</summary>
    public ulong ReadDeviceFeatures()
    {
        Write(VirtioMmioRegisters.DeviceFeaturesSel, 0);
        ulong low = Read(VirtioMmioRegisters.DeviceFeatures);
        Write(VirtioMmioRegisters.DeviceFeaturesSel, 1);
        ulong high = Read(VirtioMmioRegisters.DeviceFeatures);
        return low | (high << 32);
    }

    /// <summary>
    /// Steps 1-6 of 3.1.1: reset, ACKNOWLEDGE, DRIVER, read the offered features, accept
    /// <paramref name="wanted"/> ∩ offered, FEATURES_OK, and re-read the status. Returns false (after setting
    /// FAILED) when the device did not accept the features. Queues come next (<see cref="SetupQueue"/>), then
    /// <see cref="SetDriverOk"/>.
    /// </summary>
    public bool Initialize(ulong wanted)
    {
        Reset();
        WriteStatus(DeviceStatus.Acknowledge);
        WriteStatus(DeviceStatus.Acknowledge | DeviceStatus.Driver);
        ulong accepted = ReadDeviceFeatures() & wanted;
        return Negotiate(accepted);
    }

    /// <summary>
    /// Writes exactly <paramref name="features"/> as the driver's features and sets FEATURES_OK (steps 4-6 of
    /// 3.1.1, with no intersection: a test can offer what the device does not). False, with FAILED set, when the
    /// device refused them.
    /// </summary>
    public bool Negotiate(ulong features)
    {
        Write(VirtioMmioRegisters.DriverFeaturesSel, 0);
        Write(VirtioMmioRegisters.DriverFeatures, (uint)features);
        Write(VirtioMmioRegisters.DriverFeaturesSel, 1);
        Write(VirtioMmioRegisters.DriverFeatures, (uint)(features >> 32));
        DeviceStatus status = Status;
        WriteStatus(status | DeviceStatus.FeaturesOk);
        if ((Status & DeviceStatus.FeaturesOk) == 0)
        {
            WriteStatus(Status | DeviceStatus.Failed);
            return false;
        }

        NegotiatedFeatures = features;
        return true;
    }

    /// <summary>QueueSizeMax of queue <paramref name="index"/>: 0 when the queue does not exist.</summary>
    public int QueueSizeMax(int index)
    {
        Write(VirtioMmioRegisters.QueueSel, (uint)index);
        return (int)Math.Min(Read(VirtioMmioRegisters.QueueSizeMax), 32768u);
    }

    /// <summary>
    /// Step 7 of 3.1.1 for one queue: selects it, checks it exists and is not in use, writes its size and the
    /// three area addresses, and sets QueueReady. Returns false when the queue does not exist, is too small for
    /// <paramref name="addresses"/>.QueueSize, or the device did not make it ready.
    /// </summary>
    public bool SetupQueue(int index, in VirtqueueAddresses addresses)
    {
        Write(VirtioMmioRegisters.QueueSel, (uint)index);
        if (Read(VirtioMmioRegisters.QueueReady) != 0)
        {
            return false;
        }

        uint max = Read(VirtioMmioRegisters.QueueSizeMax);
        if (max == 0 || (uint)addresses.QueueSize > max)
        {
            return false;
        }

        Write(VirtioMmioRegisters.QueueSize, (uint)addresses.QueueSize);
        Write64(VirtioMmioRegisters.QueueDescLow, addresses.DescriptorAreaAddress);
        Write64(VirtioMmioRegisters.QueueDriverLow, addresses.DriverAreaAddress);
        Write64(VirtioMmioRegisters.QueueDeviceLow, addresses.DeviceAreaAddress);
        Write(VirtioMmioRegisters.QueueReady, 1);
        return Read(VirtioMmioRegisters.QueueReady) == 1;
    }

    /// <summary>Resets one queue (needs VIRTIO_F_RING_RESET) and waits for the device to report it done.</summary>
    public bool ResetQueue(int index)
    {
        Write(VirtioMmioRegisters.QueueSel, (uint)index);
        Write(VirtioMmioRegisters.QueueReset, 1);
        return Read(VirtioMmioRegisters.QueueReset) == 1;
    }

    /// <summary>Step 8 of 3.1.1: DRIVER_OK.</summary>
    public void SetDriverOk() => WriteStatus(Status | DeviceStatus.DriverOk);

    /// <summary>Writes 0 to Status and waits until it reads back 0 (4.2.3.1: the reset is complete).</summary>
    public void Reset()
    {
        Write(VirtioMmioRegisters.Status, 0);
        for (int i = 0; i < ConfigRetryLimit && Status != DeviceStatus.Reset; i++)
        {
        }
    }

    /// <summary>
    /// QueueNotify for queue <paramref name="index"/>. With VIRTIO_F_NOTIFICATION_DATA pass the driver's next
    /// position in <paramref name="data"/> (split: next avail idx; packed: next offset and wrap counter in bit 15).
    /// </summary>
    public void Notify(int index, ushort data = 0) =>
        Write(VirtioMmioRegisters.QueueNotify, (uint)(ushort)index | ((uint)data << 16));

    /// <summary>Reads InterruptStatus and acknowledges what it found (the guest's interrupt handler).</summary>
    public VirtioInterruptReason TakeInterrupts()
    {
        uint status = Read(VirtioMmioRegisters.InterruptStatus);
        if (status != 0)
        {
            Write(VirtioMmioRegisters.InterruptAck, status);
        }

        return (VirtioInterruptReason)status;
    }

    /// <summary>
    /// Reads configuration space consistently (4.2.3.1.1, 2.5.1): reads ConfigGeneration, the fields, and
    /// ConfigGeneration again, retrying until both match. Accesses are 4, 2 or 1 bytes wide as alignment allows.
    /// Legacy devices have no generation counter; their config is read once.
    /// </summary>
    public void ReadConfig(int offset, Span<byte> destination)
    {
        for (int attempt = 0; attempt < ConfigRetryLimit; attempt++)
        {
            uint before = Version == 1 ? 0 : Read(VirtioMmioRegisters.ConfigGeneration);
            int at = 0;
            while (at < destination.Length)
            {
                int width = Width(offset + at, destination.Length - at);
                uint value = _bus.Read(VirtioMmioRegisters.Config + (ulong)(offset + at), width);
                for (int b = 0; b < width; b++)
                {
                    destination[at + b] = (byte)(value >> (8 * b));
                }

                at += width;
            }

            uint after = Version == 1 ? 0 : Read(VirtioMmioRegisters.ConfigGeneration);
            if (before == after)
            {
                return;
            }
        }

        ThrowHelper.ThrowInvalidOperation("The device kept changing its configuration while it was read.");
    }

    /// <summary>Writes configuration space, 4, 2 or 1 bytes at a time as alignment allows.</summary>
    public void WriteConfig(int offset, ReadOnlySpan<byte> source)
    {
        int at = 0;
        while (at < source.Length)
        {
            int width = Width(offset + at, source.Length - at);
            uint value = 0;
            for (int b = 0; b < width; b++)
            {
                value |= (uint)source[at + b] << (8 * b);
            }

            _bus.Write(VirtioMmioRegisters.Config + (ulong)(offset + at), width, value);
            at += width;
        }
    }

    private static int Width(int offset, int remaining) =>
        remaining >= 4 && offset % 4 == 0 ? 4 : remaining >= 2 && offset % 2 == 0 ? 2 : 1;

    private void WriteStatus(DeviceStatus status) => Write(VirtioMmioRegisters.Status, (uint)status);

    private void Write64(int lowOffset, ulong value)
    {
        Write(lowOffset, (uint)value);
        Write(lowOffset + 4, (uint)(value >> 32));
    }

    private uint Read(int offset) => _bus.Read((ulong)offset, 4);

    private void Write(int offset, uint value) => _bus.Write((ulong)offset, 4, value);
}

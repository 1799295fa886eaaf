using System;

namespace Virtio.Ring.Tests.BothFormats;

/// <summary>
/// A driver and a device on one queue of either format, through the format-independent API: the fixture of the
/// shared device-model suite.
/// </summary>
internal sealed class QueuePair : IDisposable
{
    public const ulong RingBase = 0x1000;

    public QueuePair(VirtqueueFormat format, int queueSize, VirtqueueFeatures features, int indirectTables = 0, int indirectEntries = 16)
    {
        Format = format;
        ulong ringBytes = 16UL * (ulong)queueSize + 8 + (2UL * (ulong)queueSize) + 8 + (8UL * (ulong)queueSize) + 8 + 4096;
        ulong poolBase = AlignUp(RingBase + ringBytes, 4096);
        ulong poolBytes = indirectTables == 0 ? 0 : IndirectDescriptorPool.BytesFor(indirectTables, indirectEntries);
        BufferBase = AlignUp(poolBase + poolBytes, 4096);
        Memory = GuestMemory.Allocate(AlignUp(BufferBase + (64UL << 20), 4096));
        FeatureBits = ToBits(format, features);
        Addresses = VirtqueueAddresses.Compact(format, RingBase, queueSize);
        Pool = indirectTables == 0 ? null : new IndirectDescriptorPool(Memory, poolBase, indirectTables, indirectEntries);
        Driver = new DriverVirtqueue<int>(Memory, Addresses, FeatureBits, Pool);
        Assert.True(DeviceVirtqueue.TryAttach(Memory, Addresses, FeatureBits, out DeviceVirtqueue? device, out QueueError error), error.ToString());
        Device = device!;
        Assert.Equal(format, Device.Format);
        Assert.Equal(format, Driver.Format);
    }

    public VirtqueueFormat Format { get; }

    public GuestMemory Memory { get; }

    public VirtqueueAddresses Addresses { get; }

    public ulong FeatureBits { get; }

    public IndirectDescriptorPool? Pool { get; }

    public DriverVirtqueue<int> Driver { get; }

    public DeviceVirtqueue Device { get; private set; }

    public ulong BufferBase { get; }

    public static ulong ToBits(VirtqueueFormat format, VirtqueueFeatures features)
    {
        ulong bits = 1UL << VirtioFeatureBits.Version1;
        bits |= format == VirtqueueFormat.Packed ? 1UL << VirtioFeatureBits.RingPacked : 0;
        bits |= (features & VirtqueueFeatures.IndirectDescriptors) != 0 ? 1UL << VirtioFeatureBits.IndirectDesc : 0;
        bits |= (features & VirtqueueFeatures.EventIndex) != 0 ? 1UL << VirtioFeatureBits.EventIdx : 0;
        bits |= (features & VirtqueueFeatures.InOrder) != 0 ? 1UL << VirtioFeatureBits.InOrder : 0;
        return bits;
    }

    /// <summary>Drops the device and attaches a fresh one, as a VMM does after a device reset.</summary>
    public void ReattachDevice()
    {
        Device.Dispose();
        Assert.True(DeviceVirtqueue.TryAttach(Memory, Addresses, FeatureBits, out DeviceVirtqueue? device, out QueueError error), error.ToString());
        Device = device!;
    }

    public Span<byte> Span(ulong gpa, int length)
    {
        Assert.Equal(GuestMemoryError.None, Memory.TryGetSpan(gpa, length, out Span<byte> span));
        return span;
    }

    public void Dispose()
    {
        Device.Dispose();
        Driver.Dispose();
        Pool?.Dispose();
        Memory.Dispose();
    }

    private static ulong AlignUp(ulong v, ulong a) => (v + a - 1) & ~(a - 1);
}

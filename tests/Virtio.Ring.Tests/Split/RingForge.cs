using System;
using System.Buffers.Binary;
using Virtio.Ring.Split;

namespace Virtio.Ring.Tests.Split;

/// <summary>
/// Writes split-ring memory by hand, as a (possibly hostile) guest driver would: descriptors, available-ring
/// entries and indices, with no help from <see cref="SplitDriverVirtqueue{TToken}"/>.
/// </summary>
internal sealed class RingForge : IDisposable
{
    public const ulong RingBase = 0x1000;
    public const ulong BufferBase = 0x10_0000;
    public const ulong IndirectBase = 0x8_0000;
    public const ulong MemorySize = 4 << 20;

    public RingForge(int queueSize, VirtqueueFeatures features = VirtqueueFeatures.None, ulong memorySize = MemorySize)
        : this(GuestMemory.Allocate(memorySize), queueSize, features)
    {
    }

    /// <summary>A forge over memory the test built (several regions, say); the rings start at <see cref="RingBase"/>.</summary>
    public RingForge(GuestMemory memory, int queueSize, VirtqueueFeatures features = VirtqueueFeatures.None)
    {
        Memory = memory;
        Layout = SplitQueueLayout.Compact(RingBase, queueSize);
        Features = features;
    }

    public GuestMemory Memory { get; }

    public SplitQueueLayout Layout { get; }

    public VirtqueueFeatures Features { get; }

    public int Q => Layout.QueueSize;

    public SplitDeviceVirtqueue AttachDevice()
    {
        Assert.True(SplitDeviceVirtqueue.TryAttach(Memory, Layout, Features, out SplitDeviceVirtqueue? device, out QueueError error), error.ToString());
        return device!;
    }

    public void WriteDescriptor(int index, ulong addr, uint len, ushort flags, ushort next = 0) =>
        WriteDescriptorAt(Layout.DescriptorTableAddress + (ulong)(16 * index), addr, len, flags, next);

    public void WriteDescriptorAt(ulong gpa, ulong addr, uint len, ushort flags, ushort next = 0)
    {
        Span<byte> d = Span(gpa, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], len);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
    }

    public void WriteAvailEntry(int slot, ushort head) =>
        BinaryPrimitives.WriteUInt16LittleEndian(Span(Layout.DriverAreaAddress + 4 + (ulong)(2 * slot), 2), head);

    public void WriteAvailIdx(ushort idx) =>
        BinaryPrimitives.WriteUInt16LittleEndian(Span(Layout.DriverAreaAddress + 2, 2), idx);

    public void WriteAvailFlags(ushort flags) =>
        BinaryPrimitives.WriteUInt16LittleEndian(Span(Layout.DriverAreaAddress, 2), flags);

    public void WriteUsedEvent(ushort value) =>
        BinaryPrimitives.WriteUInt16LittleEndian(Span(Layout.DriverAreaAddress + (ulong)SplitQueueLayout.UsedEventOffset(Q), 2), value);

    public ushort ReadUsedIdx() => BinaryPrimitives.ReadUInt16LittleEndian(Span(Layout.DeviceAreaAddress + 2, 2));

    public ushort ReadUsedFlags() => BinaryPrimitives.ReadUInt16LittleEndian(Span(Layout.DeviceAreaAddress, 2));

    public ushort ReadAvailEvent() =>
        BinaryPrimitives.ReadUInt16LittleEndian(Span(Layout.DeviceAreaAddress + (ulong)SplitQueueLayout.AvailEventOffset(Q), 2));

    public (uint Id, uint Len) ReadUsedElement(int slot)
    {
        Span<byte> e = Span(Layout.DeviceAreaAddress + 4 + (ulong)(8 * slot), 8);
        return (BinaryPrimitives.ReadUInt32LittleEndian(e), BinaryPrimitives.ReadUInt32LittleEndian(e[4..]));
    }

    /// <summary>The first chain the device will see: avail ring[0] = <paramref name="head"/>, avail idx = 1.</summary>
    public void MakeFirstChainAvailable(ushort head)
    {
        WriteAvailEntry(0, head);
        WriteAvailIdx(1);
    }

    /// <summary>Makes one single-descriptor chain at <paramref name="head"/> available at avail index <paramref name="availIndex"/>.</summary>
    public void OfferSimple(ushort availIndex, ushort head, ulong addr, uint len, ushort flags = 0)
    {
        WriteDescriptor(head, addr, len, flags);
        WriteAvailEntry(availIndex % Q, head);
        WriteAvailIdx((ushort)(availIndex + 1));
    }

    public Span<byte> Span(ulong gpa, int length)
    {
        Assert.Equal(GuestMemoryError.None, Memory.TryGetSpan(gpa, length, out Span<byte> span));
        return span;
    }

    public void Dispose() => Memory.Dispose();
}

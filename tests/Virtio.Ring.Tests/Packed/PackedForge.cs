using System;
using System.Buffers.Binary;
using Virtio.Ring.Packed;

namespace Virtio.Ring.Tests.Packed;

/// <summary>Writes packed-ring memory by hand, as a (possibly hostile) guest driver would.</summary>
internal sealed class PackedForge : IDisposable
{
    public const ulong RingBase = 0x1000;
    public const ulong IndirectBase = 0x8_0000;
    public const ulong BufferBase = 0x10_0000;
    public const ulong MemorySize = 4 << 20;

    public const ushort Next = PackedDescriptor.FlagNext;
    public const ushort Write = PackedDescriptor.FlagWrite;
    public const ushort Indirect = PackedDescriptor.FlagIndirect;
    public const ushort Avail = PackedDescriptor.FlagAvail; // available in the first lap (wrap counter 1)

    public PackedForge(int queueSize, VirtqueueFeatures features = VirtqueueFeatures.None, ulong memorySize = MemorySize)
    {
        Memory = GuestMemory.Allocate(memorySize);
        Layout = PackedQueueLayout.Compact(RingBase, queueSize);
        Features = features;
    }

    public GuestMemory Memory { get; }

    public PackedQueueLayout Layout { get; }

    public VirtqueueFeatures Features { get; }

    public PackedDeviceVirtqueue AttachDevice()
    {
        Assert.True(PackedDeviceVirtqueue.TryAttach(Memory, Layout, Features, out PackedDeviceVirtqueue? device, out QueueError error), error.ToString());
        return device!;
    }

    public void WriteSlot(int slot, ulong addr, uint len, ushort id, ushort flags) =>
        WriteAt(Layout.DescriptorRingAddress + (ulong)(16 * slot), addr, len, id, flags);

    public void WriteAt(ulong gpa, ulong addr, uint len, ushort id, ushort flags)
    {
        Span<byte> d = Span(gpa, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], len);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], id);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], flags);
    }

    public (uint Len, ushort Id, ushort Flags) ReadSlot(int slot)
    {
        Span<byte> d = Span(Layout.DescriptorRingAddress + (ulong)(16 * slot), 16);
        return (BinaryPrimitives.ReadUInt32LittleEndian(d[8..]), BinaryPrimitives.ReadUInt16LittleEndian(d[12..]), BinaryPrimitives.ReadUInt16LittleEndian(d[14..]));
    }

    public void WriteDriverEvent(ushort desc, ushort flags)
    {
        Span<byte> e = Span(Layout.DriverAreaAddress, 4);
        BinaryPrimitives.WriteUInt16LittleEndian(e, desc);
        BinaryPrimitives.WriteUInt16LittleEndian(e[2..], flags);
    }

    public (ushort Desc, ushort Flags) ReadDeviceEvent()
    {
        Span<byte> e = Span(Layout.DeviceAreaAddress, 4);
        return (BinaryPrimitives.ReadUInt16LittleEndian(e), BinaryPrimitives.ReadUInt16LittleEndian(e[2..]));
    }

    public Span<byte> Span(ulong gpa, int length)
    {
        Assert.Equal(GuestMemoryError.None, Memory.TryGetSpan(gpa, length, out Span<byte> span));
        return span;
    }

    public void Dispose() => Memory.Dispose();
}

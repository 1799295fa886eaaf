using System;
using Virtio.Ring.Split;

namespace Virtio.Ring.Tests.Split;

/// <summary>A driver and a device on the same split queue in one guest memory, for single-threaded round trips.</summary>
internal sealed class SplitPair : IDisposable
{
    public const ulong RingBase = 0x1000;

    public SplitPair(int queueSize, VirtqueueFeatures features, int indirectTables = 0, int indirectEntries = 16, bool legacyLayout = false)
    {
        ulong ringBytes = SplitQueueLayout.LegacyTotalBytes(queueSize);
        ulong poolBase = AlignUp(RingBase + ringBytes, 4096);
        ulong poolBytes = indirectTables == 0 ? 0 : IndirectDescriptorPool.BytesFor(indirectTables, indirectEntries);
        BufferBase = AlignUp(poolBase + poolBytes, 4096);
        Memory = GuestMemory.Allocate(AlignUp(BufferBase + (64UL << 20), 4096));
        Layout = legacyLayout ? SplitQueueLayout.Legacy(RingBase, queueSize) : SplitQueueLayout.Compact(RingBase, queueSize);
        Pool = indirectTables == 0 ? null : new IndirectDescriptorPool(Memory, poolBase, indirectTables, indirectEntries);
        Driver = new SplitDriverVirtqueue<int>(Memory, Layout, features, Pool);
        Assert.True(SplitDeviceVirtqueue.TryAttach(Memory, Layout, features, out SplitDeviceVirtqueue? device, out QueueError error), error.ToString());
        Device = device!;
    }

    public GuestMemory Memory { get; }

    public SplitQueueLayout Layout { get; }

    public IndirectDescriptorPool? Pool { get; }

    public SplitDriverVirtqueue<int> Driver { get; }

    public SplitDeviceVirtqueue Device { get; }

    /// <summary>First GPA of the 64 MiB data area.</summary>
    public ulong BufferBase { get; }

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

using Virtio.Ring.Packed;
using Virtio.Ring.Split;

namespace Virtio.Ring;

/// <summary>
/// What a transport tells the device about a queue, whatever its format: the size and the three area addresses
/// the driver programmed (virtio-mmio QueueSize, QueueDesc, QueueDriver, QueueDevice; the same fields in virtio-pci).
/// </summary>
/// <param name="QueueSize">Queue size.</param>
/// <param name="DescriptorAreaAddress">Split: descriptor table; packed: descriptor ring.</param>
/// <param name="DriverAreaAddress">Split: available ring; packed: driver event suppression.</param>
/// <param name="DeviceAreaAddress">Split: used ring; packed: device event suppression.</param>
public readonly record struct VirtqueueAddresses(int QueueSize, ulong DescriptorAreaAddress, ulong DriverAreaAddress, ulong DeviceAreaAddress)
{
    /// <summary>The addresses of a split-ring layout.</summary>
    public static VirtqueueAddresses From(in SplitQueueLayout layout) =>
        new(layout.QueueSize, layout.DescriptorTableAddress, layout.DriverAreaAddress, layout.DeviceAreaAddress);

    /// <summary>The addresses of a packed-ring layout.</summary>
    public static VirtqueueAddresses From(in PackedQueueLayout layout) =>
        new(layout.QueueSize, layout.DescriptorRingAddress, layout.DriverAreaAddress, layout.DeviceAreaAddress);

    /// <summary>
    /// A queue of <paramref name="format"/> with its parts packed one after another from a 16-aligned
    /// <paramref name="baseAddress"/> (<see cref="SplitQueueLayout.Compact"/>, <see cref="PackedQueueLayout.Compact"/>).
    /// </summary>
    public static VirtqueueAddresses Compact(VirtqueueFormat format, ulong baseAddress, int queueSize) =>
        format == VirtqueueFormat.Packed
            ? From(PackedQueueLayout.Compact(baseAddress, queueSize))
            : From(SplitQueueLayout.Compact(baseAddress, queueSize));

    /// <summary>The split-ring view of these addresses.</summary>
    public SplitQueueLayout AsSplit() => new(QueueSize, DescriptorAreaAddress, DriverAreaAddress, DeviceAreaAddress);

    /// <summary>The packed-ring view of these addresses.</summary>
    public PackedQueueLayout AsPacked() => new(QueueSize, DescriptorAreaAddress, DriverAreaAddress, DeviceAreaAddress);
}

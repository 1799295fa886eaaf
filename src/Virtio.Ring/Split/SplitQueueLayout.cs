using System.Numerics;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Split;

/// <summary>
/// Where a split virtqueue's three areas live in guest physical memory, and their sizes and field offsets
/// (VIRTIO 1.x, 2.7 "Split Virtqueues"):
/// <list type="table">
/// <item><term>descriptor table</term><description>align 16, 16·Q bytes: <see cref="SplitDescriptor"/>[Q]</description></item>
/// <item><term>available ring (driver area)</term><description>align 2, 6 + 2·Q bytes: flags @0, idx @2, ring[i] @4+2i, used_event @4+2Q</description></item>
/// <item><term>used ring (device area)</term><description>align 4, 6 + 8·Q bytes: flags @0, idx @2, ring[i] @4+8i (<see cref="UsedElement"/>), avail_event @4+8Q</description></item>
/// </list>
/// Q is a power of two from 1 to 32768. Modern devices take the three addresses separately; legacy devices
/// derive them from one base with <see cref="Legacy"/> (2.7.2 "Legacy Interfaces: A Note on Virtqueue Layout").
/// </summary>
/// <param name="QueueSize">Q: number of descriptors, a power of two from 1 to 32768.</param>
/// <param name="DescriptorTableAddress">GPA of the descriptor table.</param>
/// <param name="DriverAreaAddress">GPA of the available ring.</param>
/// <param name="DeviceAreaAddress">GPA of the used ring.</param>
public readonly record struct SplitQueueLayout(int QueueSize, ulong DescriptorTableAddress, ulong DriverAreaAddress, ulong DeviceAreaAddress)
{
    /// <summary>Largest queue size the spec allows.</summary>
    public const int MaxQueueSize = 32768;

    /// <summary>Alignment of the descriptor table.</summary>
    public const int DescriptorTableAlignment = 16;

    /// <summary>Alignment of the available ring.</summary>
    public const int AvailRingAlignment = 2;

    /// <summary>Alignment of the used ring.</summary>
    public const int UsedRingAlignment = 4;

    /// <summary>Offset of <c>flags</c> in both rings.</summary>
    public const int RingFlagsOffset = 0;

    /// <summary>Offset of <c>idx</c> in both rings.</summary>
    public const int RingIdxOffset = 2;

    /// <summary>Offset of <c>ring[0]</c> in both rings.</summary>
    public const int RingEntriesOffset = 4;

    /// <summary><c>VIRTQ_AVAIL_F_NO_INTERRUPT</c>: the driver asks for no used-buffer notifications.</summary>
    public const ushort AvailFlagNoInterrupt = 1;

    /// <summary><c>VIRTQ_USED_F_NO_NOTIFY</c>: the device asks for no available-buffer notifications.</summary>
    public const ushort UsedFlagNoNotify = 1;

    /// <summary>True when <paramref name="queueSize"/> is a power of two from 1 to 32768.</summary>
    public static bool IsValidQueueSize(int queueSize) =>
        queueSize is > 0 and <= MaxQueueSize && BitOperations.IsPow2(queueSize);

    /// <summary>Bytes of the descriptor table: 16·Q.</summary>
    public static int DescriptorTableBytes(int queueSize) => SplitDescriptor.Size * queueSize;

    /// <summary>Bytes of the available ring including used_event: 6 + 2·Q.</summary>
    public static int AvailRingBytes(int queueSize) => 6 + (2 * queueSize);

    /// <summary>Bytes of the used ring including avail_event: 6 + 8·Q.</summary>
    public static int UsedRingBytes(int queueSize) => 6 + (UsedElement.Size * queueSize);

    /// <summary>Offset of <c>used_event</c> in the available ring: 4 + 2·Q.</summary>
    public static int UsedEventOffset(int queueSize) => RingEntriesOffset + (2 * queueSize);

    /// <summary>Offset of <c>avail_event</c> in the used ring: 4 + 8·Q.</summary>
    public static int AvailEventOffset(int queueSize) => RingEntriesOffset + (UsedElement.Size * queueSize);

    /// <summary>
    /// The legacy contiguous layout: descriptor table at <paramref name="baseAddress"/>, available ring right
    /// after it, used ring at the next multiple of <paramref name="queueAlign"/> (usually 4096; the legacy PCI and
    /// MMIO transports' QueueAlign).
    /// </summary>
    public static SplitQueueLayout Legacy(ulong baseAddress, int queueSize, uint queueAlign = 4096)
    {
        ValidateQueueSize(queueSize);
        if (queueAlign == 0 || !BitOperations.IsPow2(queueAlign))
        {
            ThrowHelper.ThrowArgument(nameof(queueAlign), "QueueAlign must be a power of two.");
        }

        ulong avail = baseAddress + (ulong)DescriptorTableBytes(queueSize);
        ulong used = AlignUp(avail + (ulong)AvailRingBytes(queueSize), queueAlign);
        return new SplitQueueLayout(queueSize, baseAddress, avail, used);
    }

    /// <summary>Bytes a <see cref="Legacy"/> layout occupies from its base.</summary>
    public static ulong LegacyTotalBytes(int queueSize, uint queueAlign = 4096) =>
        AlignUp((ulong)(DescriptorTableBytes(queueSize) + AvailRingBytes(queueSize)), queueAlign) + (ulong)UsedRingBytes(queueSize);

    /// <summary>
    /// A modern layout with the three areas packed one after another from <paramref name="baseAddress"/> (which
    /// must be 16-aligned), each at its required alignment. Occupies <see cref="CompactTotalBytes"/> bytes.
    /// </summary>
    public static SplitQueueLayout Compact(ulong baseAddress, int queueSize)
    {
        ValidateQueueSize(queueSize);
        ulong avail = baseAddress + (ulong)DescriptorTableBytes(queueSize);
        ulong used = AlignUp(avail + (ulong)AvailRingBytes(queueSize), UsedRingAlignment);
        return new SplitQueueLayout(queueSize, baseAddress, avail, used);
    }

    /// <summary>Bytes a <see cref="Compact"/> layout occupies from its base.</summary>
    public static ulong CompactTotalBytes(int queueSize) =>
        AlignUp((ulong)(DescriptorTableBytes(queueSize) + AvailRingBytes(queueSize)), UsedRingAlignment) + (ulong)UsedRingBytes(queueSize);

    /// <summary>Checks the queue size and the areas' alignment; <see cref="QueueError.None"/> when both hold.</summary>
    public QueueError Validate()
    {
        if (!IsValidQueueSize(QueueSize))
        {
            return QueueError.InvalidQueueSize;
        }

        bool aligned = DescriptorTableAddress % DescriptorTableAlignment == 0
            && DriverAreaAddress % AvailRingAlignment == 0
            && DeviceAreaAddress % UsedRingAlignment == 0;
        return aligned ? QueueError.None : QueueError.RingMisaligned;
    }

    internal static void ValidateQueueSize(int queueSize)
    {
        if (!IsValidQueueSize(queueSize))
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(queueSize), "A split queue's size is a power of two from 1 to 32768.");
        }
    }

    private static ulong AlignUp(ulong value, ulong align) => (value + align - 1) & ~(align - 1);
}

using Virtio.Ring.Internal;

namespace Virtio.Ring.Packed;

/// <summary>
/// Where a packed virtqueue's three parts live in guest physical memory (VIRTIO 1.2, 2.8 "Packed Virtqueues",
/// "Structure Size and Alignment"): the descriptor ring (align 16, 16·Q bytes), the driver event suppression
/// structure in the driver area (align 4, 4 bytes) and the device event suppression structure in the device area
/// (align 4, 4 bytes). Q is 1 to 32768 and need not be a power of two.
/// </summary>
/// <param name="QueueSize">Q: number of descriptor slots, 1 to 32768.</param>
/// <param name="DescriptorRingAddress">GPA of the descriptor ring.</param>
/// <param name="DriverAreaAddress">GPA of the driver event suppression structure.</param>
/// <param name="DeviceAreaAddress">GPA of the device event suppression structure.</param>
public readonly record struct PackedQueueLayout(int QueueSize, ulong DescriptorRingAddress, ulong DriverAreaAddress, ulong DeviceAreaAddress)
{
    /// <summary>Largest queue size the spec allows (2^15).</summary>
    public const int MaxQueueSize = 32768;

    /// <summary>Alignment of the descriptor ring.</summary>
    public const int DescriptorRingAlignment = 16;

    /// <summary>Alignment of each event suppression structure.</summary>
    public const int EventSuppressionAlignment = 4;

    /// <summary>True when <paramref name="queueSize"/> is 1 to 32768.</summary>
    public static bool IsValidQueueSize(int queueSize) => queueSize is > 0 and <= MaxQueueSize;

    /// <summary>Bytes of the descriptor ring: 16·Q.</summary>
    public static int DescriptorRingBytes(int queueSize) => PackedDescriptor.Size * queueSize;

    /// <summary>
    /// The three parts one after another from a 16-aligned <paramref name="baseAddress"/>: ring, driver event
    /// suppression, device event suppression. Occupies <see cref="CompactTotalBytes"/> bytes.
    /// </summary>
    public static PackedQueueLayout Compact(ulong baseAddress, int queueSize)
    {
        if (!IsValidQueueSize(queueSize))
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(queueSize), "A packed queue's size is 1 to 32768.");
        }

        ulong driver = baseAddress + (ulong)DescriptorRingBytes(queueSize);
        return new PackedQueueLayout(queueSize, baseAddress, driver, driver + EventSuppression.Size);
    }

    /// <summary>Bytes a <see cref="Compact"/> layout occupies.</summary>
    public static ulong CompactTotalBytes(int queueSize) => (ulong)DescriptorRingBytes(queueSize) + (2 * EventSuppression.Size);

    /// <summary>Checks the queue size and the parts' alignment.</summary>
    public QueueError Validate()
    {
        if (!IsValidQueueSize(QueueSize))
        {
            return QueueError.InvalidQueueSize;
        }

        bool aligned = DescriptorRingAddress % DescriptorRingAlignment == 0
            && DriverAreaAddress % EventSuppressionAlignment == 0
            && DeviceAreaAddress % EventSuppressionAlignment == 0;
        return aligned ? QueueError.None : QueueError.RingMisaligned;
    }
}

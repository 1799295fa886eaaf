namespace Virtio.Ring;

/// <summary>
/// Transport- and device-independent feature bit numbers (VIRTIO 1.x, 6 "Reserved Feature Bits").
/// A feature set is a 64-bit mask: <c>1UL &lt;&lt; bit</c>.
/// </summary>
public static class VirtioFeatureBits
{
    /// <summary><c>VIRTIO_F_INDIRECT_DESC</c>: the driver may use indirect descriptor tables.</summary>
    public const int IndirectDesc = 28;

    /// <summary><c>VIRTIO_F_EVENT_IDX</c>: used_event / avail_event fields suppress notifications.</summary>
    public const int EventIdx = 29;

    /// <summary><c>VIRTIO_F_VERSION_1</c>: compliance with VIRTIO 1.x.</summary>
    public const int Version1 = 32;

    /// <summary><c>VIRTIO_F_ACCESS_PLATFORM</c>: device accesses go through a platform IOMMU.</summary>
    public const int AccessPlatform = 33;

    /// <summary><c>VIRTIO_F_RING_PACKED</c>: the packed virtqueue layout.</summary>
    public const int RingPacked = 34;

    /// <summary><c>VIRTIO_F_IN_ORDER</c>: buffers are used in the order they were made available.</summary>
    public const int InOrder = 35;

    /// <summary><c>VIRTIO_F_ORDER_PLATFORM</c>: memory accesses need platform (not SMP) barriers.</summary>
    public const int OrderPlatform = 36;

    /// <summary><c>VIRTIO_F_NOTIFICATION_DATA</c>: driver notifications carry extra data.</summary>
    public const int NotificationData = 38;

    /// <summary><c>VIRTIO_F_RING_RESET</c>: queues can be reset individually.</summary>
    public const int RingReset = 40;
}

namespace Virtio.Ring;

/// <summary>The ring format a queue uses, chosen at feature negotiation by <c>VIRTIO_F_RING_PACKED</c>.</summary>
public enum VirtqueueFormat
{
    /// <summary>Split virtqueue (VIRTIO 1.2, 2.7): descriptor table, available ring, used ring.</summary>
    Split,

    /// <summary>Packed virtqueue (VIRTIO 1.2, 2.8): one descriptor ring and two event suppression structures.</summary>
    Packed,
}

namespace Virtio.Ring.Packed;

/// <summary>
/// A device-side packed queue's state, for live migration and snapshots. Restoring validates it as guest input
/// (<see cref="PackedDeviceVirtqueue.TryRestore"/>). Only a queue with no buffer in flight can be saved: a packed
/// ring's in-flight buffers are identified by the guest-chosen buffer IDs and descriptor counts, which the
/// device would otherwise have to trust on restore.
/// </summary>
/// <param name="Layout">Queue size and area addresses.</param>
/// <param name="Features">Negotiated ring features.</param>
/// <param name="NextAvail">Ring slot the device reads next.</param>
/// <param name="AvailWrapCounter">Wrap counter for reading available descriptors.</param>
/// <param name="NextUsed">Ring slot the device writes its next used descriptor to.</param>
/// <param name="UsedWrapCounter">Device ring wrap counter for used descriptors.</param>
/// <param name="NotificationsEnabled">Whether the device wanted available-buffer notifications.</param>
public readonly record struct PackedQueueState(
    PackedQueueLayout Layout,
    VirtqueueFeatures Features,
    ushort NextAvail,
    bool AvailWrapCounter,
    ushort NextUsed,
    bool UsedWrapCounter,
    bool NotificationsEnabled);

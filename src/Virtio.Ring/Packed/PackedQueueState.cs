namespace Virtio.Ring.Packed;

/// <summary>
/// A device-side packed queue's state, for live migration and snapshots. Restoring validates it as guest input
/// (<see cref="PackedDeviceVirtqueue.TryRestore"/>). Buffers in flight are saved with their buffer IDs and slot
/// counts; on restore these are checked against each other and against the positions (IDs below Q and unique,
/// slot counts adding up to exactly the slots between the two positions), so a forged state can make the device
/// return wrong IDs to the guest, but never make it read or write outside the ring.
/// </summary>
/// <param name="Layout">Queue size and area addresses.</param>
/// <param name="Features">Negotiated ring features.</param>
/// <param name="NextAvail">Ring slot the device reads next.</param>
/// <param name="AvailWrapCounter">Wrap counter for reading available descriptors.</param>
/// <param name="NextUsed">Ring slot the device writes its next used descriptor to.</param>
/// <param name="UsedWrapCounter">Device ring wrap counter for used descriptors.</param>
/// <param name="NotificationsEnabled">Whether the device wanted available-buffer notifications.</param>
/// <param name="InFlight">Buffers popped and not yet used, oldest first (the order matters with IN_ORDER); null or empty for none.</param>
public readonly record struct PackedQueueState(
    PackedQueueLayout Layout,
    VirtqueueFeatures Features,
    ushort NextAvail,
    bool AvailWrapCounter,
    ushort NextUsed,
    bool UsedWrapCounter,
    bool NotificationsEnabled,
    PackedInFlightBuffer[]? InFlight = null);

namespace Virtio.Ring.Split;

/// <summary>
/// A device-side split queue's state, for live migration and snapshots. Everything in it is treated as guest
/// input when restored (<see cref="SplitDeviceVirtqueue.TryRestore"/>): layout, indices and the ring in memory are
/// validated against each other before the queue runs.
/// </summary>
/// <param name="Layout">Queue size and area addresses.</param>
/// <param name="Features">Negotiated ring features.</param>
/// <param name="NextAvail">The next available-ring index the device will read (Linux: last_avail_idx).</param>
/// <param name="NextUsed">The used index the device last published.</param>
/// <param name="NotificationsEnabled">Whether the device wanted available-buffer notifications.</param>
public readonly record struct SplitQueueState(
    SplitQueueLayout Layout,
    VirtqueueFeatures Features,
    ushort NextAvail,
    ushort NextUsed,
    bool NotificationsEnabled);

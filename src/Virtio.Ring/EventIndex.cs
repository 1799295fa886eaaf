using System.Runtime.CompilerServices;

namespace Virtio.Ring;

/// <summary>
/// The notification suppression test of <c>VIRTIO_F_EVENT_IDX</c> (VIRTIO 1.2, 2.7.7 "Used Buffer Notification
/// Suppression" and 2.7.10 "Available Buffer Notification Suppression"): after moving an index from <c>old</c> to <c>new</c>, the other side asked to be
/// notified iff its event index lies in <c>[old, new)</c>, computed modulo 2^16.
/// </summary>
public static class EventIndex
{
    /// <summary><c>vring_need_event</c>: <c>(u16)(new - event - 1) &lt; (u16)(new - old)</c>.</summary>
    /// <param name="eventIndex">The other side's used_event or avail_event.</param>
    /// <param name="newIndex">Our index after the update.</param>
    /// <param name="oldIndex">Our index when we last decided whether to notify.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool NeedsNotification(ushort eventIndex, ushort newIndex, ushort oldIndex) =>
        (ushort)(newIndex - eventIndex - 1) < (ushort)(newIndex - oldIndex);
}

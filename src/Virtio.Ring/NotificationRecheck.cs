namespace Virtio.Ring;

/// <summary>
/// What the re-check after re-enabling notifications found (VIRTIO 1.2, 2.7.10 and 2.8.10: a side that turns
/// notifications back on must look at the ring once more, because the other side may have added work while they
/// were off and, seeing them off, not notified).
/// <para>
/// An enum and not a <see cref="bool"/> on purpose: Linux's <c>virtqueue_enable_cb</c> returns true when nothing
/// is pending, the opposite of what a "buffers pending?" boolean would mean, so a bare <c>bool</c> here would be
/// read backwards by someone coming from the kernel. Compare against a named value instead:
/// <code>
/// do { queue.DisableAvailableNotifications(); /* pop and serve everything */ }
/// while (queue.EnableAvailableNotifications() == NotificationRecheck.BuffersPending);
/// </code>
/// </para>
/// </summary>
public enum NotificationRecheck
{
    /// <summary>Notifications are on and nothing is waiting: the caller may sleep until the next notification.</summary>
    NothingPending = 0,

    /// <summary>
    /// Notifications are on, but buffers arrived before the re-enable was visible: the caller must process them
    /// now, as no notification will come for them.
    /// </summary>
    BuffersPending = 1,
}

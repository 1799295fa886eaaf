namespace Virtio.Ring;

/// <summary>
/// What the device side of a virtqueue has done: the numbers behind the <c>Virtio.Ring</c> meter's per-queue
/// instruments (<see cref="Diagnostics.VirtioRingMetrics"/>), for a VMM's own dashboards too. Kept by the thread that
/// serves the queue with plain adds (no atomics, no listener checks), and read from any thread: a reader sees each
/// count as of a recent moment. Counted unless the application is built with <c>MetricsSupport=false</c>, which
/// removes the counting from the hot paths (every count then reads 0).
/// </summary>
/// <param name="UsedBuffers">Buffers returned used (with <c>VIRTIO_F_IN_ORDER</c> batches, every buffer of the batch).</param>
/// <param name="UsedBytes">Bytes the device wrote into them, as the used lengths say (a batch counts its one element's length).</param>
/// <param name="NotificationsSent">Used-buffer notifications the driver asked for: interrupt decisions that said "send".</param>
/// <param name="NotificationsSuppressed">Interrupt decisions the driver's event suppression turned into "do not send".</param>
/// <param name="NotificationsReceived">Available-buffer notifications (kicks) served by <see cref="Transport.VirtioDevice"/>.</param>
public readonly record struct VirtqueueCounters(
    long UsedBuffers,
    long UsedBytes,
    long NotificationsSent,
    long NotificationsSuppressed,
    long NotificationsReceived)
{
    /// <summary>The sum of two sets of counts (a queue's past incarnations and its present one).</summary>
    public static VirtqueueCounters operator +(VirtqueueCounters left, VirtqueueCounters right) => new(
        left.UsedBuffers + right.UsedBuffers,
        left.UsedBytes + right.UsedBytes,
        left.NotificationsSent + right.NotificationsSent,
        left.NotificationsSuppressed + right.NotificationsSuppressed,
        left.NotificationsReceived + right.NotificationsReceived);

    /// <summary>The sum of two sets of counts.</summary>
    public static VirtqueueCounters Add(VirtqueueCounters left, VirtqueueCounters right) => left + right;
}

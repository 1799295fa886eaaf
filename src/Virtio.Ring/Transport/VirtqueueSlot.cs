using Virtio.Ring.Transport.Linux;

namespace Virtio.Ring.Transport;

/// <summary>
/// One queue's transport-programmed configuration, the attached ring once the driver made it ready, and what the
/// threads around it share. The configuration fields are written under the owning <see cref="VirtioDevice"/>'s
/// control lock. <see cref="Queue"/> is published with a release store and read with an acquire load by the
/// thread that serves the queue; it is only torn down while that thread is parked (see <c>QueueWorker</c>).
/// </summary>
internal sealed class VirtqueueSlot
{
    public int Size;
    public ulong DescriptorArea;
    public ulong DriverArea;
    public ulong DeviceArea;
    public bool Ready;
    public bool ResetDone;
    public DeviceVirtqueue? Queue;

    /// <summary>The queue's incarnation: bumped whenever its ring is detached, so stale completions are recognised.</summary>
    public uint Epoch;

    /// <summary>The last QueueNotify value (VIRTIO_F_NOTIFICATION_DATA), for the thread that serves the queue.</summary>
    public uint NotificationData;

    /// <summary>Completions handed over from other threads; created on first use.</summary>
    public CompletionRing? Completions;

    /// <summary>1 when <see cref="Completions"/> may hold entries the serving thread has not drained.</summary>
    public int DrainRequested;

    /// <summary>Worker modes: the eventfd the serving worker waits on (the VMM may register it as an ioeventfd).</summary>
    public EventFd? Kick;

    /// <summary>Worker modes: the worker that serves this queue.</summary>
    public QueueWorker? Worker;

    /// <summary>Worker modes: signals of <see cref="Kick"/> the device made itself (DRIVER_OK, resume), not the driver.</summary>
    public long OwnKicks;

    /// <summary>The counts of the rings this slot had before the present one (detached at resets), under the device's counters lock.</summary>
    public VirtqueueCounters Retired;

    public void ClearConfiguration(int maxSize)
    {
        Size = maxSize;
        DescriptorArea = 0;
        DriverArea = 0;
        DeviceArea = 0;
        Ready = false;
        ResetDone = false;
        NotificationData = 0;
    }
}

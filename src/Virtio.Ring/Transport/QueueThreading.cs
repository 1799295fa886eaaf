namespace Virtio.Ring.Transport;

/// <summary>Which thread runs a device model's queue processing (<see cref="VirtioDevice.OnQueueNotify"/>).</summary>
public enum QueueThreading
{
    /// <summary>
    /// On the thread that delivered the notification (the vCPU thread's MMIO exit), under the device's control
    /// lock, so processing never overlaps a reset or any other control operation. Simple, no extra threads; a
    /// slow device stalls the notifying vCPU.
    /// </summary>
    Inline = 0,

    /// <summary>
    /// Each queue on its own worker thread, woken through the queue's kick eventfd (which the VMM may register
    /// with KVM as an ioeventfd, see <see cref="VirtioDevice.KickEventFd"/>). Linux only.
    /// </summary>
    WorkerPerQueue = 1,

    /// <summary>
    /// One worker thread for all of the device's queues (QEMU's iothread, Cloud Hypervisor's per-device epoll
    /// thread), waiting on every queue's kick eventfd at once. Linux only.
    /// </summary>
    WorkerPerDevice = 2,
}

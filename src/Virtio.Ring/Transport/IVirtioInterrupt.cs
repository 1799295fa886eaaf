namespace Virtio.Ring.Transport;

/// <summary>
/// Where a device's notifications to the driver go. A transport implements it (virtio-mmio sets InterruptStatus
/// and raises the VMM's interrupt line; virtio-pci would signal an MSI-X vector; vhost-user a call eventfd).
/// </summary>
public interface IVirtioInterrupt
{
    /// <summary>Signals the driver: a used buffer (of <paramref name="queueIndex"/>) or a configuration change.</summary>
    void Raise(VirtioInterruptReason reason, int queueIndex);
}

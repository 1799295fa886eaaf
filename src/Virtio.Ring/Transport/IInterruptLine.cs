namespace Virtio.Ring.Transport;

/// <summary>
/// The VMM's interrupt line for a transport that has one (virtio-mmio: one line per device; legacy INTx
/// likewise): raised when the device sets a bit in its interrupt status, lowered when the guest has acknowledged
/// every bit. Both may be called from any thread: a vCPU thread, a queue worker, the VMM's own.
/// <para>
/// Edge-triggered wiring (an MSI, or an irqfd on an edge GSI) needs only <see cref="Raise"/>. Level-triggered
/// wiring (a GIC SPI or IOAPIC pin asserted for as long as the status is non-zero) lowers the pin in
/// <see cref="Lower"/>. With KVM's resampling irqfd, KVM lowers the pin itself at the guest's EOI and signals the
/// resample eventfd; the VMM then calls <see cref="Mmio.VirtioMmioTransport.ResampleInterruptLine"/>.
/// </para>
/// </summary>
public interface IInterruptLine
{
    /// <summary>The interrupt status gained a bit: assert the line (or send the edge).</summary>
    void Raise();

    /// <summary>The guest acknowledged every pending bit: deassert a level-triggered line.</summary>
    void Lower();
}

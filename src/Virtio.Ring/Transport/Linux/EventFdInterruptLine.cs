using System;
using System.Runtime.Versioning;

namespace Virtio.Ring.Transport.Linux;

/// <summary>
/// An <see cref="IInterruptLine"/> that signals a KVM irqfd (KVM_IRQFD): <see cref="Raise"/> writes the
/// eventfd and KVM injects the interrupt without leaving the kernel. <see cref="Lower"/> does nothing: with an
/// edge GSI or MSI there is nothing to lower, and with a resampling irqfd (KVM_IRQFD_FLAG_RESAMPLE) KVM lowers
/// the level itself at the guest's EOI and signals the resample eventfd, on which the VMM calls
/// <see cref="Mmio.VirtioMmioTransport.ResampleInterruptLine"/>.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class EventFdInterruptLine : IInterruptLine
{
    private readonly EventFd _irqfd;

    /// <summary>Signals <paramref name="irqfd"/> (not owned: the VMM disposes it).</summary>
    public EventFdInterruptLine(EventFd irqfd)
    {
        ArgumentNullException.ThrowIfNull(irqfd);
        _irqfd = irqfd;
    }

    /// <inheritdoc/>
    public void Raise() => _irqfd.Signal();

    /// <inheritdoc/>
    public void Lower()
    {
    }
}

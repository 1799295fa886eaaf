using System;
using System.Runtime.Versioning;

namespace Virtio.Ring.Transport.Linux;

/// <summary>
/// An <see cref="IVirtioInterrupt"/> with one eventfd per queue and one for configuration changes, for
/// transports without an interrupt status register: virtio-pci with MSI-X (each vector an irqfd) or a
/// vhost-user back end (SET_VRING_CALL's call fds and the config fd). A used-buffer notification for queue
/// <c>i</c> signals call fd <c>i</c>; a configuration change signals the config fd. Thread-safe: an eventfd
/// write is atomic, so workers and the control thread may signal at once.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class EventFdInterrupt : IVirtioInterrupt
{
    private readonly EventFd?[] _calls;
    private readonly EventFd? _config;

    /// <summary>Signals <paramref name="queueCalls"/>[i] for queue i and <paramref name="config"/> for config changes (none owned).</summary>
    /// <param name="queueCalls">One call eventfd per queue; a null entry drops that queue's notifications.</param>
    /// <param name="config">The configuration-change eventfd, or null.</param>
    public EventFdInterrupt(EventFd?[] queueCalls, EventFd? config)
    {
        ArgumentNullException.ThrowIfNull(queueCalls);
        _calls = (EventFd?[])queueCalls.Clone();
        _config = config;
    }

    /// <inheritdoc/>
    public void Raise(VirtioInterruptReason reason, int queueIndex)
    {
        if ((reason & VirtioInterruptReason.UsedBuffer) != 0 && (uint)queueIndex < (uint)_calls.Length)
        {
            _calls[queueIndex]?.Signal();
        }

        if ((reason & VirtioInterruptReason.ConfigurationChange) != 0)
        {
            _config?.Signal();
        }
    }
}

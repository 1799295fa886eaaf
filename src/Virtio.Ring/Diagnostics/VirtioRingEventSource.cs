using System.Diagnostics.Tracing;

namespace Virtio.Ring.Diagnostics;

/// <summary>
/// The ring layer's events for dotnet-trace and any EventListener (provider <c>Virtio-Ring</c>): device status
/// changes, feature negotiation, resets and broken queues. All are control-path events; nothing is written per
/// descriptor. Every call site checks <see cref="EventSource.IsEnabled()"/> first, so with nobody listening the
/// cost is one field read. Event ids are stable.
/// </summary>
[EventSource(Name = "Virtio-Ring")]
public sealed class VirtioRingEventSource : EventSource
{
    /// <summary>The one instance.</summary>
    public static readonly VirtioRingEventSource Log = new();

    private VirtioRingEventSource()
    {
    }

    /// <summary>A queue broke a ring rule (or a model callback threw): the device set DEVICE_NEEDS_RESET.</summary>
    [Event(1, Level = EventLevel.Warning, Keywords = Keywords.Faults, Message = "{0}: queue {1} broken: {2} (detail {3})")]
    public void QueueBroken(string device, int queue, string error, long detail)
    {
        if (IsEnabled(EventLevel.Warning, Keywords.Faults))
        {
            WriteEvent(1, device, queue, error, detail);
        }
    }

    /// <summary>The driver wrote the status register and the device took it.</summary>
    [Event(2, Level = EventLevel.Informational, Keywords = Keywords.Device, Message = "{0}: status 0x{1:x}")]
    public void DeviceStatus(string device, int status)
    {
        if (IsEnabled(EventLevel.Informational, Keywords.Device))
        {
            WriteEvent(2, device, status);
        }
    }

    /// <summary>FEATURES_OK: the features in force from now on.</summary>
    [Event(3, Level = EventLevel.Informational, Keywords = Keywords.Device, Message = "{0}: features 0x{1:x} negotiated")]
    public void FeaturesNegotiated(string device, long features)
    {
        if (IsEnabled(EventLevel.Informational, Keywords.Device))
        {
            WriteEvent(3, device, features);
        }
    }

    /// <summary>The device was reset (status 0).</summary>
    [Event(4, Level = EventLevel.Informational, Keywords = Keywords.Device, Message = "{0}: reset")]
    public void DeviceReset(string device)
    {
        if (IsEnabled(EventLevel.Informational, Keywords.Device))
        {
            WriteEvent(4, device);
        }
    }

    /// <summary>Event keywords.</summary>
    public static class Keywords
    {
        /// <summary>Status changes, negotiation, resets.</summary>
        public const EventKeywords Device = (EventKeywords)1;

        /// <summary>Broken queues and contained model failures.</summary>
        public const EventKeywords Faults = (EventKeywords)2;
    }
}

namespace Virtio.Ring.Transport;

/// <summary>How a <see cref="VirtioDevice"/> runs: its threading and the transport features it offers.</summary>
public sealed class VirtioDeviceOptions
{
    /// <summary>The defaults: inline processing, <see cref="VirtioDevice.DefaultTransportFeatures"/>.</summary>
    public static VirtioDeviceOptions Default { get; } = new();

    /// <summary>Which thread processes the queues; <see cref="QueueThreading.Inline"/> by default.</summary>
    public QueueThreading Threading { get; init; } = QueueThreading.Inline;

    /// <summary>
    /// The transport and ring features offered on top of the device's own (VIRTIO 1.2, 6): a subset of
    /// <see cref="VirtioDevice.SupportedTransportFeatures"/>. <c>VIRTIO_F_VERSION_1</c> is always offered. A device
    /// that wants only the split ring leaves out <c>VIRTIO_F_RING_PACKED</c>; one whose transport cannot carry
    /// notification data leaves out <c>VIRTIO_F_NOTIFICATION_DATA</c>; and so on.
    /// </summary>
    public ulong TransportFeatures { get; init; } = VirtioDevice.DefaultTransportFeatures;

    /// <summary>
    /// A name for the device: its worker threads (seen in debuggers, dotnet-trace and <c>top -H</c>), its events and
    /// the <c>virtio.device</c> tag of its metrics. Default: <c>virtio-</c> and the device ID.
    /// </summary>
    public string? Name { get; init; }

    /// <summary>Where the ring metrics (<see cref="Diagnostics.VirtioRingMetrics"/>) are created (the VMM's DI container gives one); null: a shared <c>Virtio.Ring</c> meter.</summary>
    public System.Diagnostics.Metrics.IMeterFactory? MeterFactory { get; init; }
}

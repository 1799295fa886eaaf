using System;

namespace Virtio.Ring.Transport;

/// <summary>
/// A change of a device's configuration space in progress (<c>VirtioDevice.BeginConfigChange</c>): while it
/// lives, the configuration lock is held, so a driver's read never sees half of it. <see cref="Dispose"/> bumps
/// the configuration generation, releases the lock and notifies the driver (VIRTIO 1.2, 2.5.1: the driver
/// re-reads when the generation moved). Dispose it exactly once, on the thread that began it.
/// </summary>
public readonly ref struct ConfigChange
{
    private readonly VirtioDevice _device;
    private readonly bool _notify;

    internal ConfigChange(VirtioDevice device, Span<byte> config, bool notify)
    {
        _device = device;
        _notify = notify;
        Config = config;
    }

    /// <summary>The configuration space, writable.</summary>
    public Span<byte> Config { get; }

    /// <summary>Publishes the change: new generation, lock released, configuration change notification (unless the change was begun silent).</summary>
    public void Dispose() => _device.EndConfigChange(_notify);
}

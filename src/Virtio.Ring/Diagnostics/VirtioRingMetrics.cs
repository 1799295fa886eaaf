using System;
using System.Collections.Generic;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using Virtio.Ring.Transport;

namespace Virtio.Ring.Diagnostics;

/// <summary>
/// The ring layer's metrics (meter <c>Virtio.Ring</c>), per device and queue (tags <c>virtio.device</c>, the
/// device's <see cref="VirtioDeviceOptions.Name"/>, and <c>virtio.queue</c>, its index), for dotnet-counters,
/// OpenTelemetry or any MeterListener:
/// <list type="bullet">
/// <item><description><c>virtio.ring.queue.buffers</c>, <c>virtio.ring.queue.bytes</c>: buffers returned used, and the bytes written into them.</description></item>
/// <item><description><c>virtio.ring.queue.notifications</c>: used-buffer notifications, tag <c>virtio.notification</c> = <c>sent</c> or <c>suppressed</c> (by the driver's event suppression).</description></item>
/// <item><description><c>virtio.ring.queue.kicks</c>: available-buffer notifications served.</description></item>
/// <item><description><c>virtio.ring.queue.errors</c>: queues the driver broke, tag <c>error</c> = the <see cref="QueueError"/>.</description></item>
/// </list>
/// The first four are observable counters: the queues count with plain adds on their serving thread
/// (<see cref="VirtqueueCounters"/>), and nothing is read until a listener collects, so the hot paths never look for
/// a listener. The devices are found through a list of weak references (a device the VMM forgot to dispose does
/// not stay alive for it). Created from the VMM's <see cref="IMeterFactory"/> when it gives one
/// (<see cref="VirtioDeviceOptions.MeterFactory"/>), else one shared meter.
/// </summary>
public sealed class VirtioRingMetrics
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "Virtio.Ring";

    private static readonly ConditionalWeakTable<Meter, VirtioRingMetrics> ByMeter = new();
    private static readonly Lazy<Meter> SharedMeter = new(() => new Meter(MeterName));

    private readonly List<WeakReference<VirtioDevice>> _devices = new();

    private VirtioRingMetrics(Meter meter)
    {
        meter.CreateObservableCounter("virtio.ring.queue.buffers", () => Observe(static c => c.UsedBuffers, null), "{buffer}", "Buffers the device returned used, per queue.");
        meter.CreateObservableCounter("virtio.ring.queue.bytes", () => Observe(static c => c.UsedBytes, null), "By", "Bytes the device wrote into the buffers it returned, per queue.");
        meter.CreateObservableCounter("virtio.ring.queue.notifications", () => ObserveNotifications(), "{notification}", "Used-buffer notifications, sent or suppressed by the driver's event suppression, per queue.");
        meter.CreateObservableCounter("virtio.ring.queue.kicks", () => Observe(static c => c.NotificationsReceived, null), "{notification}", "Available-buffer notifications served, per queue.");
        QueueErrors = meter.CreateCounter<long>("virtio.ring.queue.errors", "{error}", "Queues the driver broke, by error.");
    }

    /// <summary>Queues broken by the driver, tagged <c>virtio.device</c>, <c>virtio.queue</c> and <c>error</c>.</summary>
    public Counter<long> QueueErrors { get; }

    /// <summary>The metrics on <paramref name="factory"/>'s meter (one set per meter), or the shared ones.</summary>
    public static VirtioRingMetrics For(IMeterFactory? factory)
    {
        Meter meter = factory is null ? SharedMeter.Value : factory.Create(MeterName);
        return ByMeter.GetValue(meter, static m => new VirtioRingMetrics(m));
    }

    /// <summary>Adds a device to what the observable instruments report.</summary>
    internal void Register(VirtioDevice device)
    {
        lock (_devices)
        {
            _devices.Add(new WeakReference<VirtioDevice>(device));
        }
    }

    /// <summary>Removes a device (disposed) and any that were collected.</summary>
    internal void Unregister(VirtioDevice device)
    {
        lock (_devices)
        {
            _devices.RemoveAll(r => !r.TryGetTarget(out VirtioDevice? d) || ReferenceEquals(d, device));
        }
    }

    /// <summary>Counts a queue the driver broke.</summary>
    internal void QueueBroken(string device, int queue, QueueError error)
    {
        if (QueueErrors.Enabled)
        {
            QueueErrors.Add(1, new KeyValuePair<string, object?>("virtio.device", device), new KeyValuePair<string, object?>("virtio.queue", queue),
                new KeyValuePair<string, object?>("error", error.ToString()));
        }
    }

    private List<Measurement<long>> Observe(Func<VirtqueueCounters, long> pick, KeyValuePair<string, object?>? extra)
    {
        var measurements = new List<Measurement<long>>();
        foreach (VirtioDevice device in LiveDevices())
        {
            for (int q = 0; q < device.QueueCount; q++)
            {
                VirtqueueCounters counters = device.GetQueueCounters(q);
                var tags = new List<KeyValuePair<string, object?>>(3)
                {
                    new("virtio.device", device.Name),
                    new("virtio.queue", q),
                };
                if (extra is { } tag)
                {
                    tags.Add(tag);
                }

                measurements.Add(new Measurement<long>(pick(counters), tags));
            }
        }

        return measurements;
    }

    private List<Measurement<long>> ObserveNotifications()
    {
        List<Measurement<long>> sent = Observe(static c => c.NotificationsSent, new("virtio.notification", "sent"));
        sent.AddRange(Observe(static c => c.NotificationsSuppressed, new("virtio.notification", "suppressed")));
        return sent;
    }

    private List<VirtioDevice> LiveDevices()
    {
        var live = new List<VirtioDevice>();
        lock (_devices)
        {
            _devices.RemoveAll(r => !r.TryGetTarget(out _));
            foreach (WeakReference<VirtioDevice> reference in _devices)
            {
                if (reference.TryGetTarget(out VirtioDevice? device))
                {
                    live.Add(device);
                }
            }
        }

        return live;
    }
}

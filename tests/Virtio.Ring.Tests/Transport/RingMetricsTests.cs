using System;
using System.Collections.Generic;
using System.Diagnostics.Metrics;
using System.Linq;
using Virtio.Ring.Transport;

namespace Virtio.Ring.Tests.Transport;

/// <summary>
/// The device model's per-queue counts (<see cref="VirtioDevice.GetQueueCounters"/>) across resets, and the
/// <c>Virtio.Ring</c> meter that reports them, read through a real <see cref="MeterListener"/>.
/// </summary>
public sealed class RingMetricsTests
{
    private const ulong Version1 = 1UL << VirtioFeatureBits.Version1;

    [Fact]
    public void A_queues_counts_carry_on_across_a_device_reset()
    {
        using var rig = new MmioRig();
        Start(rig);
        Assert.Equal(10, rig.Send(0, 10));
        Assert.Equal(10, rig.Receive().Length);
        VirtqueueCounters before = rig.Device.GetQueueCounters(0);
        Assert.Equal((10L, 40L, 1L, 1), (before.UsedBuffers, before.UsedBytes, before.NotificationsReceived, rig.Kicks)); // 4 bytes echoed each
        Assert.Equal(1, before.NotificationsSent + before.NotificationsSuppressed);

        rig.Driver.Reset(); // the ring is detached: its counts are kept
        Assert.Equal(before, rig.Device.GetQueueCounters(0));
        Start(rig);
        Assert.Equal(5, rig.Send(100, 5));
        Assert.Equal(5, rig.Receive().Length);
        VirtqueueCounters after = rig.Device.GetQueueCounters(0);
        Assert.Equal((15L, 60L, 2L), (after.UsedBuffers, after.UsedBytes, after.NotificationsReceived));
        Assert.Equal(default, rig.Device.GetQueueCounters(1));   // never set up
        Assert.Equal(default, rig.Device.GetQueueCounters(99));  // no such queue
    }

    /// <summary>
    /// With a worker the driver's notifications arrive through the kick eventfd, which adds signals up: the count is
    /// what the worker read, less the device's own signals (the look at every queue at DRIVER_OK).
    /// </summary>
    [Theory]
    [InlineData(QueueThreading.WorkerPerQueue)]
    [InlineData(QueueThreading.WorkerPerDevice)]
    public void A_worker_counts_the_drivers_kicks_and_not_the_devices_own(QueueThreading threading)
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = threading });
        Start(rig);
        int received = 0;
        for (int round = 0; round < 5; round++)
        {
            Assert.Equal(3, rig.Send(round * 3, 3)); // one kick each
            received += rig.ReceiveAtLeast(3, TimeSpan.FromSeconds(10)).Count;
            Assert.Equal(3 * (round + 1), received);
        }

        VirtqueueCounters counters = rig.Device.GetQueueCounters(0);
        Assert.Equal(15, counters.UsedBuffers);
        Assert.Equal(rig.Kicks, counters.NotificationsReceived); // every kick the driver wrote, and not the device's own at DRIVER_OK
    }

    [Fact]
    public void The_meter_reports_every_queue_of_every_device_with_its_name_and_index()
    {
        using var factory = new TestMeterFactory();
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Name = "echo-metrics", MeterFactory = factory });
        Start(rig);
        Assert.Equal(7, rig.Send(0, 7));
        Assert.Equal(7, rig.Receive().Length);

        List<(string Instrument, long Value, Dictionary<string, object?> Tags)> seen = Collect(factory);
        long Value(string instrument, int queue, string? notification = null) => seen.Single(m =>
            m.Instrument == instrument && (string?)m.Tags["virtio.device"] == "echo-metrics" && (int)m.Tags["virtio.queue"]! == queue
            && (notification is null || (string?)m.Tags["virtio.notification"] == notification)).Value;

        Assert.Equal(7, Value("virtio.ring.queue.buffers", 0));
        Assert.Equal(28, Value("virtio.ring.queue.bytes", 0));
        Assert.Equal(1, Value("virtio.ring.queue.kicks", 0));
        Assert.Equal(1, Value("virtio.ring.queue.notifications", 0, "sent") + Value("virtio.ring.queue.notifications", 0, "suppressed"));
        Assert.Equal(0, Value("virtio.ring.queue.buffers", 1));

        // A disposed device leaves the meter.
        rig.Device.Dispose();
        Assert.DoesNotContain(Collect(factory), m => (string?)m.Tags["virtio.device"] == "echo-metrics");
    }

    [Fact]
    public void A_queue_the_driver_breaks_is_counted_by_its_error()
    {
        using var factory = new TestMeterFactory();
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Name = "echo-broken", MeterFactory = factory });
        var errors = new List<(long Value, Dictionary<string, object?> Tags)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (factory.Meters.Contains(instrument.Meter) && instrument.Name == "virtio.ring.queue.errors")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) => errors.Add((value, ToDictionary(tags))));
        listener.Start();

        Start(rig);
        Assert.True(rig.Queue!.TryAdd([new GuestRange(1UL << 50, 8)], [], 1)); // outside guest memory
        rig.Queue.PublishAvailable();
        rig.Driver.Notify(0);

        (long value, Dictionary<string, object?> tags) = Assert.Single(errors);
        Assert.Equal(1, value);
        Assert.Equal("echo-broken", tags["virtio.device"]);
        Assert.Equal(0, tags["virtio.queue"]);
        Assert.Equal(nameof(QueueError.BufferNotInGuestMemory), tags["error"]);
    }

    private static void Start(MmioRig rig)
    {
        Assert.True(rig.Driver.Initialize(Version1));
        Assert.True(rig.SetupQueue0());
        rig.Driver.SetDriverOk();
    }

    /// <summary>Every observable measurement of the factory's meters, collected once.</summary>
    private static List<(string Instrument, long Value, Dictionary<string, object?> Tags)> Collect(TestMeterFactory factory)
    {
        var seen = new List<(string Instrument, long Value, Dictionary<string, object?> Tags)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (factory.Meters.Contains(instrument.Meter))
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => seen.Add((instrument.Name, value, ToDictionary(tags))));
        listener.Start();
        listener.RecordObservableInstruments();
        return seen;
    }

    private static Dictionary<string, object?> ToDictionary(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var result = new Dictionary<string, object?>();
        foreach (KeyValuePair<string, object?> tag in tags)
        {
            result[tag.Key] = tag.Value;
        }

        return result;
    }

    /// <summary>What a VMM's DI container would give: a factory whose meters are its own (so other tests' devices stay out).</summary>
    private sealed class TestMeterFactory : IMeterFactory
    {
        public List<Meter> Meters { get; } = [];

        public Meter Create(MeterOptions options)
        {
            var meter = new Meter(options.Name, options.Version, options.Tags, scope: this);
            Meters.Add(meter);
            return meter;
        }

        public void Dispose()
        {
            foreach (Meter meter in Meters)
            {
                meter.Dispose();
            }
        }
    }
}

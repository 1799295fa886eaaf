using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics.Tracing;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Diagnostics.NETCore.Client;
using Microsoft.Diagnostics.Tracing;

namespace Virtio.Migration.Tests;

/// <summary>
/// The telemetry through the real tool chain: an EventPipe session (what dotnet-trace and dotnet-counters open),
/// started in-process with Microsoft.Diagnostics.NETCore.Client against this process while the migration
/// simulation runs; the balloon's and the ring's events, the Virtio.Balloon meter's instruments and values of the
/// Virtio.Ring meter's per-queue counters must arrive.
/// </summary>
public sealed class TelemetryTests
{
    [Fact]
    public async Task Events_and_metrics_reach_an_EventPipe_session_during_a_migration()
    {
        var client = new DiagnosticsClient(Environment.ProcessId);
        var providers = new List<EventPipeProvider>
        {
            new("Virtio-Balloon", EventLevel.Informational, -1),
            new("Virtio-Ring", EventLevel.Informational, -1),
            new("System.Diagnostics.Metrics", EventLevel.Informational, 0x6, new Dictionary<string, string>
            {
                ["SessionId"] = "virtio-test",
                ["Metrics"] = "Virtio.Balloon,Virtio.Ring",
                ["RefreshInterval"] = "0.1", // the ring's counters are observed: collect while the devices live
                ["MaxTimeSeries"] = "100",
                ["MaxHistograms"] = "10",
            }),
        };
        var seen = new ConcurrentDictionary<string, int>();
        using EventPipeSession session = client.StartEventPipeSession(providers, requestRundown: false);
        using var source = new EventPipeEventSource(session.EventStream);
        source.Dynamic.All += e =>
        {
            seen.AddOrUpdate($"{e.ProviderName}/{e.EventName}", 1, (_, n) => n + 1);
            if (e.ProviderName == "System.Diagnostics.Metrics" && e.PayloadByName("instrumentName") is string instrument)
            {
                seen.AddOrUpdate($"instrument/{instrument}", 1, (_, n) => n + 1);
                seen.AddOrUpdate($"{e.EventName}/{instrument}", 1, (_, n) => n + 1); // a value, not just the instrument
            }
        };
        Task reading = Task.Run(() => source.Process());

        MigrationResult result = MigrationRunner.Run(new MigrationOptions { GuestBytes = 64UL << 20, WorkloadPagesPerSecond = 0, FixedRounds = 2 }, withHints: true);
        Assert.True(result.IntegrityOk);
        SpinWait.SpinUntil(() => seen.ContainsKey("instrument/virtio.balloon.hint.pages"), TimeSpan.FromSeconds(10)); // one refresh interval or two

        session.Stop();
        await reading.WaitAsync(TimeSpan.FromSeconds(30)); // the session's stream ended (TimeoutException otherwise)
        string all = string.Join(", ", seen.Keys.OrderBy(k => k, StringComparer.Ordinal));
        foreach (string expected in new[]
        {
            "Virtio-Balloon/HintReportRequested", "Virtio-Balloon/HintReportStarted", "Virtio-Balloon/HintReportStopped",
            "Virtio-Balloon/HintsDone", "Virtio-Ring/FeaturesNegotiated", "Virtio-Ring/DeviceStatus",
            "instrument/virtio.balloon.hint.pages", "instrument/virtio.balloon.hint.blocks",
            "CounterRateValuePublished/virtio.ring.queue.buffers", "CounterRateValuePublished/virtio.ring.queue.kicks",
        })
        {
            Assert.True(seen.ContainsKey(expected), $"{expected} did not arrive; seen: {all}");
        }
    }
}

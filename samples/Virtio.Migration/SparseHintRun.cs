using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Threading;
using Virtio.Balloon;
using Virtio.Balloon.Backends;
using Virtio.Balloon.Device;
using Virtio.Balloon.Driver;
using Virtio.Balloon.GuestAllocator;
using Virtio.Balloon.Hints;
using Virtio.Balloon.Migration;
using Virtio.Ring;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;

namespace Virtio.Migration;

/// <summary>The hint path alone on a sparse guest (TiB scale): reports timed from the command id to the driver's STOP.</summary>
/// <param name="GuestBytes">Guest RAM.</param>
/// <param name="Protocol">The hint protocol.</param>
/// <param name="HintOrder">The hint order.</param>
/// <param name="Reports">Reports timed.</param>
/// <param name="BlocksPerReport">Blocks hinted per report.</param>
/// <param name="PagesPerReport">Pages hinted per report.</param>
/// <param name="MedianMilliseconds">Median report time.</param>
/// <param name="BestMilliseconds">Best report time.</param>
/// <param name="HintsPerSecond">Blocks per second at the median.</param>
/// <param name="MarkedAfterFirstReport">Pages still marked in the first round's bitmap after the first report (the allocated ones).</param>
/// <param name="AllocatedPages">Pages the guest had allocated.</param>
public sealed record SparseResult(ulong GuestBytes, string Protocol, int HintOrder, int Reports, long BlocksPerReport, long PagesPerReport,
    double MedianMilliseconds, double BestMilliseconds, double HintsPerSecond, long MarkedAfterFirstReport, long AllocatedPages);

/// <summary>
/// A guest too large to copy (reserved memory, never touched except by the driver's rings and arrays): the guest's
/// allocator, our driver and device over a real queue in one process (the device served inline, on the driver's
/// thread), and the first round's migration bitmap as the sink. No workload, no page copy.
/// </summary>
public static class SparseHintRun
{
    /// <summary>Runs <paramref name="reports"/> reports and times them.</summary>
    public static SparseResult Run(MigrationOptions options, int reports)
    {
        ulong pages = options.GuestPages;
        using GuestMemory memory = GuestMemory.Allocate(options.GuestBytes);
        using var allocator = new BuddyAllocator(0, pages);
        using var bitmap = new MigrationBitmap(0, pages);
        using var device = new BalloonDevice(memory, new InMemoryBalloonBackend(pages), new BalloonDeviceOptions
        {
            OfferedFeatures = 1UL << BalloonFeatureBits.FreePageHint,
            HintProtocol = options.Protocol,
            MaxQueueSize = options.QueueSize,
            FreePageHintSink = bitmap,
            Device = new VirtioDeviceOptions { Threading = QueueThreading.Inline },
        });
        BalloonDriver? driver = null;
        var transport = new VirtioMmioTransport(device, new InterruptLine(() => driver?.OnInterrupt()));
        driver = new BalloonDriver(transport, memory, allocator, new BalloonDriverOptions
        {
            RingFormat = options.Ring,
            QueueSize = options.QueueSize,
            HintProtocol = options.Protocol,
            HintOrder = options.HintOrder,
        });
        using BalloonDriver owned = driver;
        if (!driver.Initialize())
        {
            throw new InvalidOperationException("The balloon driver could not initialise the device.");
        }

        long allocated = options.AllocatedFraction > 0 ? allocator.Fragment(options.AllocatedFraction, options.Fragmentation, options.Seed) : 0;
        allocated += driver.OwnPages;
        bitmap.MarkAll();
        var times = new List<double>();
        long blocks = 0;
        long hinted = 0;
        long markedAfterFirst = 0;
        for (int i = 0; i < reports + 1; i++)
        {
            long hintedBefore = device.HintedPages;
            long start = Stopwatch.GetTimestamp();
            device.RequestFreePageHints();
            driver.Poll();
            if (!SpinWait.SpinUntil(() => device.FreePageHintStatus == FreePageHintStatus.Stopped, TimeSpan.FromSeconds(60)))
            {
                throw new TimeoutException("The report did not end.");
            }

            double ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            device.FinishFreePageHints();
            driver.Poll(); // DONE: the standard protocol's blocks go back
            if (i == 0)
            {
                markedAfterFirst = bitmap.CountMarked();
                continue; // the first report warms up the code; the rest are timed
            }

            times.Add(ms);
            blocks = driver.LastReportBlocks;
            hinted = device.HintedPages - hintedBefore;
        }

        times.Sort();
        double median = times[times.Count / 2];
        return new SparseResult(options.GuestBytes,
            options.Protocol == FreePageHintProtocol.HintArrays ? "hint arrays (v34)" : "standard (VIRTIO 1.2)",
            options.HintOrder, reports, blocks, hinted, median, times[0], blocks / (median / 1000), markedAfterFirst, allocated);
    }
}

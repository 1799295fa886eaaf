using System;
using BenchmarkDotNet.Attributes;
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

namespace Virtio.Benchmarks;

/// <summary>
/// A whole free page hint report, both sides in one process over a real queue: the VMM requests it (new command
/// id), our driver answers from the guest allocator, our device (served inline, on the driver's kick) decodes and
/// clears the first round's migration bitmap, until the driver's STOP is processed. Sparse guests (reserved
/// memory; every page free but the driver's own).
/// <list type="bullet">
/// <item>Tib4MiB: 1 TiB, 4 MiB hints (262,144), hint-array protocol. Target (issue 12): under 5 ms.</item>
/// <item>Tib4MiBStandard: the same with the VIRTIO 1.2 protocol (one buffer per block).</item>
/// <item>Order0: 64 GiB, 4 KiB hints (16.77 million), hint-array protocol. Target: at least 100 million hints/s.</item>
/// </list>
/// DONE (which gives the standard protocol's blocks back) and the bitmap's reset run in IterationSetup. With an
/// IterationSetup, BenchmarkDotNet invokes the method once per iteration, so a few warmups would time code the tiered
/// JIT has not finished optimizing (about a third slower here): 30 warmups carry it past tiering, whatever the job.
/// </summary>
[MemoryDiagnoser]
[WarmupCount(30)]
[IterationCount(10)]
public class HintReportBenchmarks
{
    private GuestMemory _memory = null!;
    private BuddyAllocator _allocator = null!;
    private MigrationBitmap _bitmap = null!;
    private BalloonDevice _device = null!;
    private BalloonDriver _driver = null!;

    [Params("Tib4MiB", "Tib4MiBStandard", "Order0")]
    public string Case { get; set; } = "Tib4MiB";

    [GlobalSetup]
    public void Setup()
    {
        ulong bytes = Case == "Order0" ? 64UL << 30 : 1UL << 40;
        FreePageHintProtocol protocol = Case == "Tib4MiBStandard" ? FreePageHintProtocol.Standard : FreePageHintProtocol.HintArrays;
        ulong pages = bytes / 4096;
        _memory = GuestMemory.Allocate(bytes);
        _allocator = new BuddyAllocator(0, pages);
        _bitmap = new MigrationBitmap(0, pages);
        _device = new BalloonDevice(_memory, new InMemoryBalloonBackend(pages), new BalloonDeviceOptions
        {
            OfferedFeatures = 1UL << BalloonFeatureBits.FreePageHint,
            HintProtocol = protocol,
            MaxQueueSize = 256,
            FreePageHintSink = _bitmap,
            Device = new VirtioDeviceOptions { Threading = QueueThreading.Inline },
        });
        var transport = new VirtioMmioTransport(_device, new InterruptLine(() => _driver?.OnInterrupt()));
        _driver = new BalloonDriver(transport, _memory, _allocator, new BalloonDriverOptions
        {
            QueueSize = 256,
            HintProtocol = protocol,
            HintOrder = Case == "Order0" ? 0 : 10,
        });
        if (!_driver.Initialize())
        {
            throw new InvalidOperationException("initialisation failed");
        }

        _bitmap.MarkAll();
        Report();
        Finish();
        Console.WriteLine($"// {Case}: {_driver.LastReportBlocks:N0} hints per report");
    }

    [IterationSetup]
    public void Finish()
    {
        _device.FinishFreePageHints();
        _driver.Poll();
        _bitmap.RestoreSummaries();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _driver.Dispose();
        _device.Dispose();
        _bitmap.Dispose();
        _allocator.Dispose();
        _memory.Dispose();
    }

    [Benchmark]
    public long Report()
    {
        _device.RequestFreePageHints();
        _driver.Poll(); // the whole report: inline, the device has processed the STOP when this returns
        if (_device.FreePageHintStatus != FreePageHintStatus.Stopped)
        {
            throw new InvalidOperationException("the report did not end");
        }

        return _driver.LastReportBlocks;
    }
}

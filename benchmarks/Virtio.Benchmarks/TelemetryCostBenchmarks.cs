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
/// The instrumented paths (an inflate and deflate of 64 MiB, 64 requests each way; a whole hint report of a 64 GiB
/// sparse guest) with the telemetry compiled in and nobody listening, against the same code with the telemetry
/// removed by feature switches, in one run (<see cref="TelemetryCostConfig"/>). Target (issue 14): ratio 1.00 within
/// noise, 0 B.
/// </summary>
[MemoryDiagnoser]
[Config(typeof(TelemetryCostConfig))]
public class TelemetryCostBenchmarks
{
    private GuestMemory _memory = null!;
    private BuddyAllocator _allocator = null!;
    private MigrationBitmap _bitmap = null!;
    private BalloonDevice _device = null!;
    private BalloonDriver _driver = null!;

    [GlobalSetup]
    public void Setup()
    {
        const ulong Bytes = 64UL << 30;
        _memory = GuestMemory.Allocate(Bytes);
        _allocator = new BuddyAllocator(0, Bytes / 4096);
        _bitmap = new MigrationBitmap(0, Bytes / 4096);
        _device = new BalloonDevice(_memory, new InMemoryBalloonBackend(Bytes / 4096), new BalloonDeviceOptions
        {
            OfferedFeatures = BalloonFeatureBits.All,
            HintProtocol = FreePageHintProtocol.HintArrays,
            FreePageHintSink = _bitmap,
        });
        var transport = new VirtioMmioTransport(_device, new InterruptLine(() => _driver?.OnInterrupt()));
        _driver = new BalloonDriver(transport, _memory, _allocator, new BalloonDriverOptions { HintProtocol = FreePageHintProtocol.HintArrays });
        if (!_driver.Initialize())
        {
            throw new InvalidOperationException("initialisation failed");
        }

        _bitmap.MarkAll();
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
    public long InflateDeflate64MiB()
    {
        _device.SetTargetPages(16384);
        long moved = _driver.Poll();
        _device.SetTargetPages(0);
        return moved + _driver.Poll();
    }

    [Benchmark]
    public long HintReport64GiB()
    {
        _device.RequestFreePageHints();
        _driver.Poll();
        _device.FinishFreePageHints();
        _driver.Poll();
        return _driver.LastReportBlocks;
    }
}

using System;
using BenchmarkDotNet.Attributes;
using Virtio.Balloon.Backends;
using Virtio.Balloon.Device;
using Virtio.Balloon.Driver;
using Virtio.Balloon.GuestAllocator;
using Virtio.Ring;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;

namespace Virtio.Benchmarks;

/// <summary>
/// The balloon end to end in one process: our driver takes 1 GiB (262,144 pages) from a simulated 2 GiB guest's
/// buddy allocator and inflates it through a real queue (split or packed, virtio-mmio registers, our device
/// serving inline, the in-memory back end), in requests of 256 PFNs each waited for, as Linux does; and back.
/// Operations are pages.
/// </summary>
[MemoryDiagnoser]
public class BalloonDriverBenchmarks
{
    private const uint OneGiBPages = 1u << 18;

    private GuestMemory _memory = null!;
    private BuddyAllocator _allocator = null!;
    private BalloonDevice _device = null!;
    private BalloonDriver _driver = null!;

    [Params(VirtqueueFormat.Split, VirtqueueFormat.Packed)]
    public VirtqueueFormat Format { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Allocate(2UL << 30);
        _allocator = new BuddyAllocator(0, (2UL << 30) / 4096);
        _device = new BalloonDevice(_memory, new InMemoryBalloonBackend((2UL << 30) / 4096));
        BalloonDriver? driver = null;
        var transport = new VirtioMmioTransport(_device, new InterruptLine(() => driver?.OnInterrupt()));
        driver = new BalloonDriver(transport, _memory, _allocator, new BalloonDriverOptions { RingFormat = Format });
        _driver = driver;
        if (!_driver.Initialize())
        {
            throw new InvalidOperationException("the balloon refused the driver");
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _driver.Dispose();
        _device.Dispose();
        _allocator.Dispose();
        _memory.Dispose();
    }

    [IterationSetup(Target = nameof(Inflate1GiB))]
    public void Deflated() => Move(0);

    [IterationSetup(Target = nameof(Deflate1GiB))]
    public void Inflated() => Move(OneGiBPages);

    [Benchmark(OperationsPerInvoke = (int)OneGiBPages)]
    public long Inflate1GiB() => Move(OneGiBPages);

    [Benchmark(OperationsPerInvoke = (int)OneGiBPages)]
    public long Deflate1GiB() => Move(0);

    private long Move(uint target)
    {
        _device.SetTargetPages(target);
        long moved = _driver.Poll();
        if (_driver.BalloonPages != target)
        {
            throw new InvalidOperationException($"balloon at {_driver.BalloonPages}, not {target}");
        }

        return moved;
    }
}

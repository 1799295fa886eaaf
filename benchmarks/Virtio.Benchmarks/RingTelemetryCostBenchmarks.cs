using System;
using BenchmarkDotNet.Attributes;
using Virtio.Ring;

namespace Virtio.Benchmarks;

/// <summary>
/// What the per-queue counters (<see cref="VirtqueueCounters"/>, behind the <c>Virtio.Ring</c> meter) cost on the
/// hottest path there is: a driver and a device alternating on one thread, per buffer (add, pop, push, get used),
/// with a publish and interrupt decision every 32 buffers (<c>Batch32</c>) or after every buffer (<c>Batch1</c>,
/// the worst case for counting per publish). Counting compiled in, against the same code with it removed by
/// <c>MetricsSupport=false</c>, in one run (<see cref="TelemetryCostConfig"/>). Target (issue 14): ratio 1.00
/// within noise, 0 B.
/// </summary>
[MemoryDiagnoser]
[Config(typeof(TelemetryCostConfig))]
public class RingTelemetryCostBenchmarks
{
    private const int Q = 256;
    private const int Batch = 32;

    private GuestMemory _memory = null!;
    private DriverVirtqueue<int> _driver = null!;
    private DeviceVirtqueue _device = null!;
    private GuestRange[] _writable = null!;

    [Params(VirtqueueFormat.Split, VirtqueueFormat.Packed)]
    public VirtqueueFormat Format { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Allocate(4UL << 20);
        ulong features = (1UL << VirtioFeatureBits.Version1) | (Format == VirtqueueFormat.Packed ? 1UL << VirtioFeatureBits.RingPacked : 0);
        VirtqueueAddresses addresses = VirtqueueAddresses.Compact(Format, 0x1000, Q);
        _driver = new DriverVirtqueue<int>(_memory, addresses, features);
        if (!DeviceVirtqueue.TryAttach(_memory, addresses, features, out DeviceVirtqueue? device, out QueueError error))
        {
            throw new InvalidOperationException(error.ToString());
        }

        _device = device;
        _writable = [new GuestRange(0x10_0000, 4096)];
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _device.Dispose();
        _driver.Dispose();
        _memory.Dispose();
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public long Batch32() => RoundTrips(Batch);

    [Benchmark(OperationsPerInvoke = Batch)]
    public long Batch1()
    {
        long sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            sum += RoundTrips(1);
        }

        return sum;
    }

    private long RoundTrips(int count)
    {
        DriverVirtqueue<int> driver = _driver;
        DeviceVirtqueue device = _device;
        long sum = 0;
        for (int i = 0; i < count; i++)
        {
            driver.TryAdd([], _writable, i);
        }

        sum += driver.PublishAvailable() ? 1 : 0;
        while (device.TryPop(out DescriptorChain chain))
        {
            device.PushUsed(chain.Id, 512);
        }

        sum += device.PublishUsed() ? 1 : 0;
        while (driver.TryGetUsed(out int token, out uint length))
        {
            sum += token + length;
        }

        return sum;
    }
}

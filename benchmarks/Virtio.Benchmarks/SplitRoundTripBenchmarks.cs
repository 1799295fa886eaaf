using System;
using BenchmarkDotNet.Attributes;
using Virtio.Ring;
using Virtio.Ring.Split;

namespace Virtio.Benchmarks;

/// <summary>
/// Driver and device alternating on one thread, per chain: driver add, publish + kick decision (per batch),
/// device pop + iterate + push, publish + interrupt decision (per batch), driver get used. No cross-core traffic,
/// so this is the pure instruction cost of both sides together.
/// </summary>
[MemoryDiagnoser]
public class SplitRoundTripBenchmarks
{
    private const int Q = 256;
    private const int Batch = 32;

    private GuestMemory _memory = null!;
    private IndirectDescriptorPool _pool = null!;
    private SplitQueueDriver<int> _driver = null!;
    private SplitQueueDevice _device = null!;
    private GuestRange[] _readable = null!;
    private GuestRange[] _writable = null!;

    [Params(1, 4)]
    public int Descriptors { get; set; }

    [Params(false, true)]
    public bool EventIdx { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Allocate(16UL << 20);
        SplitQueueLayout layout = SplitQueueLayout.Compact(0x1000, Q);
        VirtqueueFeatures features = EventIdx ? VirtqueueFeatures.EventIndex : VirtqueueFeatures.None;
        _pool = new IndirectDescriptorPool(_memory, 0x10_0000, Q, 16);
        _driver = new SplitQueueDriver<int>(_memory, layout, features, _pool);
        if (!SplitQueueDevice.TryAttach(_memory, layout, features, out SplitQueueDevice? device, out QueueError error))
        {
            throw new InvalidOperationException(error.ToString());
        }

        _device = device;
        _readable = new GuestRange[Math.Max(0, Descriptors - 1)];
        for (int i = 0; i < _readable.Length; i++)
        {
            _readable[i] = new GuestRange(0x20_0000 + ((ulong)i * 64), 64);
        }

        _writable = [new GuestRange(0x30_0000, 64)];
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _device.Dispose();
        _driver.Dispose();
        _pool.Dispose();
        _memory.Dispose();
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public long AddPublishPopPushGetUsed()
    {
        SplitQueueDriver<int> driver = _driver;
        SplitQueueDevice device = _device;
        long sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            driver.TryAdd(_readable, _writable, i);
        }

        sum += driver.Publish() ? 1 : 0;
        while (device.TryPop(out DescriptorChain chain))
        {
            device.PushUsed(chain.Id, chain.WritableLength);
        }

        sum += device.PublishUsed() ? 1 : 0;
        while (driver.TryGetUsed(out int token, out uint length))
        {
            sum += token + length;
        }

        return sum;
    }
}

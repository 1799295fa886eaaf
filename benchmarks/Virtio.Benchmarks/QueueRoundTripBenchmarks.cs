using System;
using BenchmarkDotNet.Attributes;
using Virtio.Ring;

namespace Virtio.Benchmarks;

/// <summary>
/// Driver and device alternating on one thread through the format-independent API, per buffer: driver add,
/// kick decision (per 32), device pop + push, publish + interrupt decision (per 32), driver get used. Split and
/// packed side by side in one run, so their ratio is meaningful on a noisy machine. With Indirect a multi-buffer
/// chain costs one ring descriptor and a table from the pool.
/// </summary>
[MemoryDiagnoser]
public class QueueRoundTripBenchmarks : QueueBenchmarkParameters
{
    private const int Q = 1024; // room for a whole batch of 16-descriptor direct chains (32 x 16)
    private const int Batch = 32;

    private GuestMemory _memory = null!;
    private IndirectDescriptorPool _pool = null!;
    private DriverVirtqueue<int> _driver = null!;
    private DeviceVirtqueue _device = null!;
    private GuestRange[] _readable = null!;
    private GuestRange[] _writable = null!;

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Allocate(16UL << 20);
        ulong features = NegotiatedFeatures();
        VirtqueueAddresses addresses = VirtqueueAddresses.Compact(Format, 0x1000, Q);
        _pool = new IndirectDescriptorPool(_memory, 0x10_0000, Q, 16);
        _driver = new DriverVirtqueue<int>(_memory, addresses, features, _pool);
        if (!DeviceVirtqueue.TryAttach(_memory, addresses, features, out DeviceVirtqueue? device, out QueueError error))
        {
            throw new InvalidOperationException(error.ToString());
        }

        _device = device;
        (_readable, _writable) = BufferRanges();
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
        DriverVirtqueue<int> driver = _driver;
        DeviceVirtqueue device = _device;
        long sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            if (!driver.TryAdd(_readable, _writable, i))
            {
                ThrowRingFull();
            }
        }

        sum += driver.PublishAvailable() ? 1 : 0;
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

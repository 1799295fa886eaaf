using System;
using BenchmarkDotNet.Attributes;
using Virtio.Ring;
using Virtio.Ring.Packed;
using Virtio.Ring.Split;

namespace Virtio.Benchmarks;

/// <summary>
/// Driver and device alternating on one thread through the format-independent API, per buffer: driver add,
/// kick decision (per 32), device pop + push, publish + interrupt decision (per 32), driver get used. Split and
/// packed side by side in one run, so their ratio is meaningful on a noisy machine. With Indirect a multi-buffer
/// chain costs one ring descriptor and a table from the pool.
/// </summary>
[MemoryDiagnoser]
public class QueueRoundTripBenchmarks
{
    private const int Q = 1024; // room for a whole batch of 16-descriptor direct chains (32 x 16)
    private const int Batch = 32;

    private GuestMemory _memory = null!;
    private IndirectDescriptorPool _pool = null!;
    private VirtqueueDriver<int> _driver = null!;
    private VirtqueueDevice _device = null!;
    private GuestRange[] _readable = null!;
    private GuestRange[] _writable = null!;

    [Params(VirtqueueFormat.Split, VirtqueueFormat.Packed)]
    public VirtqueueFormat Format { get; set; }

    [Params(1, 4, 16)]
    public int Descriptors { get; set; }

    [Params(false, true)]
    public bool Indirect { get; set; }

    [Params(false, true)]
    public bool EventIdx { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Allocate(16UL << 20);
        ulong features = 1UL << VirtioFeatureBits.Version1;
        features |= EventIdx ? 1UL << VirtioFeatureBits.EventIdx : 0;
        features |= Indirect ? 1UL << VirtioFeatureBits.IndirectDesc : 0;
        VirtqueueAddresses addresses;
        if (Format == VirtqueueFormat.Packed)
        {
            features |= 1UL << VirtioFeatureBits.RingPacked;
            PackedQueueLayout l = PackedQueueLayout.Compact(0x1000, Q);
            addresses = new VirtqueueAddresses(Q, l.DescriptorRingAddress, l.DriverAreaAddress, l.DeviceAreaAddress);
        }
        else
        {
            SplitQueueLayout l = SplitQueueLayout.Compact(0x1000, Q);
            addresses = new VirtqueueAddresses(Q, l.DescriptorTableAddress, l.DriverAreaAddress, l.DeviceAreaAddress);
        }

        _pool = new IndirectDescriptorPool(_memory, 0x10_0000, Q, 16);
        _driver = new VirtqueueDriver<int>(_memory, addresses, features, _pool);
        if (!VirtqueueDevice.TryAttach(_memory, addresses, features, out VirtqueueDevice? device, out QueueError error))
        {
            throw new InvalidOperationException(error.ToString());
        }

        _device = device;
        _readable = new GuestRange[Descriptors - 1];
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
        VirtqueueDriver<int> driver = _driver;
        VirtqueueDevice device = _device;
        long sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            if (!driver.TryAdd(_readable, _writable, i))
            {
                ThrowRingFull();
            }
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

    private static void ThrowRingFull() => throw new InvalidOperationException("The ring is too small for a batch.");
}

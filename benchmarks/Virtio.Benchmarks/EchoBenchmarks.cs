using System;
using BenchmarkDotNet.Attributes;
using Virtio.Ring;
using Virtio.Ring.Packed;
using Virtio.Ring.Split;

namespace Virtio.Benchmarks;

/// <summary>
/// A device that moves bytes: each request carries <see cref="Bytes"/> readable bytes that the device copies into
/// the chain's writable buffer (pop, copy, push, get used, one thread). The baseline is a plain
/// <c>Buffer.MemoryCopy</c> of the same bytes, so the ratio column is the ring's overhead over the copy.
/// </summary>
[MemoryDiagnoser]
public unsafe class EchoBenchmarks
{
    private const int Q = 256;
    private const int Batch = 32;

    private GuestMemory _memory = null!;
    private DriverVirtqueue<int> _driver = null!;
    private DeviceVirtqueue _device = null!;
    private GuestRange[] _readable = null!;
    private GuestRange[] _writable = null!;

    [Params(VirtqueueFormat.Split, VirtqueueFormat.Packed)]
    public VirtqueueFormat Format { get; set; }

    [Params(256, 4096)]
    public int Bytes { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Allocate(16UL << 20);
        ulong features = (1UL << VirtioFeatureBits.Version1) | (1UL << VirtioFeatureBits.EventIdx);
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

        _driver = new DriverVirtqueue<int>(_memory, addresses, features);
        if (!DeviceVirtqueue.TryAttach(_memory, addresses, features, out DeviceVirtqueue? device, out QueueError error))
        {
            throw new InvalidOperationException(error.ToString());
        }

        _device = device;
        _readable = [new GuestRange(0x20_0000, (uint)Bytes)];
        _writable = [new GuestRange(0x30_0000, (uint)Bytes)];
        _memory.TryGetSpan(_readable[0].Address, Bytes, out Span<byte> payload);
        new Random(1).NextBytes(payload);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _device.Dispose();
        _driver.Dispose();
        _memory.Dispose();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Batch)]
    public void MemoryCopyOnly()
    {
        // The same guest bytes the queue benchmark copies, so both touch identical cache lines.
        _memory.TryGetSpan(_readable[0].Address, Bytes, out Span<byte> source);
        _memory.TryGetSpan(_writable[0].Address, Bytes, out Span<byte> destination);
        fixed (byte* s = source)
        fixed (byte* d = destination)
        {
            for (int i = 0; i < Batch; i++)
            {
                Buffer.MemoryCopy(s, d, Bytes, Bytes);
            }
        }
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public long EchoThroughQueue()
    {
        DriverVirtqueue<int> driver = _driver;
        DeviceVirtqueue device = _device;
        for (int i = 0; i < Batch; i++)
        {
            driver.TryAdd(_readable, _writable, i);
        }

        driver.PublishAvailable();
        while (device.TryPop(out DescriptorChain chain))
        {
            chain.GetReadable(0).CopyTo(chain.GetWritable(0));
            device.PushUsed(chain.Id, (uint)Bytes);
        }

        device.PublishUsed();
        long sum = 0;
        while (driver.TryGetUsed(out int token, out uint length))
        {
            sum += token + length;
        }

        return sum;
    }
}

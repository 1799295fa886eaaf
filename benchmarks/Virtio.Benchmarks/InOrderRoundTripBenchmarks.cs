using System;
using System.Runtime.CompilerServices;
using BenchmarkDotNet.Attributes;
using Virtio.Ring;

namespace Virtio.Benchmarks;

/// <summary>
/// What VIRTIO_F_IN_ORDER costs and saves, per buffer, both formats side by side: the round trip of
/// <see cref="QueueRoundTripBenchmarks"/> (driver add, kick decision per 32, device pop + push, publish + interrupt
/// decision per 32, driver get used) on a queue without IN_ORDER (<see cref="Baseline"/>), on a queue with it and
/// one used element per buffer (<see cref="InOrderPushEach"/>), and with one used element per batch of 32
/// (<see cref="InOrderPushBatch"/>: 2.7.9 and 2.8.8, the device names the batch's last buffer and the driver
/// treats the earlier ones as used).
/// </summary>
[MemoryDiagnoser]
public class InOrderRoundTripBenchmarks
{
    private const int Q = 1024;
    private const int Batch = 32;

    private readonly GuestRange[] _writable = [new GuestRange(0x30_0000, 64)];
    private GuestMemory _memory = null!;
    private Pair _plain = null!;
    private Pair _inOrder = null!;
    private GuestRange[] _readable = null!;

    [Params(VirtqueueFormat.Split, VirtqueueFormat.Packed)]
    public VirtqueueFormat Format { get; set; }

    [Params(1, 4)]
    public int Descriptors { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Allocate(16UL << 20);
        _plain = new Pair(_memory, Format, 0x1000, inOrder: false);
        _inOrder = new Pair(_memory, Format, 0x8_0000, inOrder: true);
        _readable = new GuestRange[Descriptors - 1];
        for (int i = 0; i < _readable.Length; i++)
        {
            _readable[i] = new GuestRange(0x20_0000 + ((ulong)i * 64), 64);
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _plain.Dispose();
        _inOrder.Dispose();
        _memory.Dispose();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Batch)]
    public long Baseline() => RoundTrip(_plain, batchUsed: false);

    [Benchmark(OperationsPerInvoke = Batch)]
    public long InOrderPushEach() => RoundTrip(_inOrder, batchUsed: false);

    [Benchmark(OperationsPerInvoke = Batch)]
    public long InOrderPushBatch() => RoundTrip(_inOrder, batchUsed: true);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private long RoundTrip(Pair pair, bool batchUsed)
    {
        DriverVirtqueue<int> driver = pair.Driver;
        DeviceVirtqueue device = pair.Device;
        long sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            if (!driver.TryAdd(_readable, _writable, i))
            {
                throw new InvalidOperationException("The ring is too small for a batch.");
            }
        }

        sum += driver.PublishAvailable() ? 1 : 0;
        ushort last = 0;
        uint lastLength = 0;
        while (device.TryPop(out DescriptorChain chain))
        {
            if (batchUsed)
            {
                last = chain.Id;
                lastLength = chain.WritableLength;
            }
            else
            {
                device.PushUsed(chain.Id, chain.WritableLength);
            }
        }

        if (batchUsed)
        {
            device.PushUsedBatch(last, lastLength);
        }

        sum += device.PublishUsed() ? 1 : 0;
        int count = 0;
        while (driver.TryGetUsed(out int token, out uint length))
        {
            sum += token + length;
            count++;
        }

        return count == Batch ? sum : throw new InvalidOperationException($"{count} of {Batch} buffers came back.");
    }

    /// <summary>A driver and a device on one queue of <see cref="Q"/> entries.</summary>
    private sealed class Pair : IDisposable
    {
        public Pair(GuestMemory memory, VirtqueueFormat format, ulong address, bool inOrder)
        {
            ulong features = (1UL << VirtioFeatureBits.Version1)
                | (inOrder ? 1UL << VirtioFeatureBits.InOrder : 0)
                | (format == VirtqueueFormat.Packed ? 1UL << VirtioFeatureBits.RingPacked : 0);
            VirtqueueAddresses addresses = VirtqueueAddresses.Compact(format, address, Q);
            Driver = new DriverVirtqueue<int>(memory, addresses, features);
            if (!DeviceVirtqueue.TryAttach(memory, addresses, features, out DeviceVirtqueue? device, out QueueError error))
            {
                throw new InvalidOperationException(error.ToString());
            }

            Device = device;
        }

        public DriverVirtqueue<int> Driver { get; }

        public DeviceVirtqueue Device { get; }

        public void Dispose()
        {
            Device.Dispose();
            Driver.Dispose();
        }
    }
}

using System;
using System.Threading;
using BenchmarkDotNet.Attributes;
using Virtio.Ring;
using Virtio.Ring.Packed;
using Virtio.Ring.Split;

namespace Virtio.Benchmarks;

/// <summary>
/// The driver's per-buffer cost, single-threaded, split and packed side by side: add (write the descriptors,
/// indirect table included), publish, the kick decision, and get used (read and validate the used element, free
/// the descriptors, hand back the token).
/// <para>
/// The other side is the cheapest device possible, written here on raw ring memory and validating nothing: per
/// buffer it reads the id the driver wrote and writes one used element (split: 8 bytes in the used ring; packed:
/// id, length and flags over the list's first descriptor), and it publishes once per batch. That is a few
/// nanoseconds of the time below, the same for both formats; the real device's cost is in
/// <see cref="SplitDeviceBenchmarks"/>, <see cref="PackedDeviceBenchmarks"/> and
/// <see cref="QueueRoundTripBenchmarks"/>.
/// </para>
/// <para>
/// Add and get used cannot be timed apart in steady state (the ring fills unless buffers come back), so both
/// methods include both; they differ only in the kick decision: <see cref="AddPublishKickGetUsed"/> publishes
/// with <c>PublishAvailable()</c> (release store, full barrier, read of the device's suppression field),
/// <see cref="AddPublishGetUsed"/> with <c>FlushAvailable()</c> (release store only). The difference, times
/// the batch of 32, is one kick decision.
/// </para>
/// </summary>
[MemoryDiagnoser]
public unsafe class DriverBenchmarks : QueueBenchmarkParameters
{
    private const int Q = 1024; // room for a whole batch of 16-descriptor direct chains
    private const int Batch = 32;

    private GuestMemory _memory = null!;
    private IndirectDescriptorPool _pool = null!;
    private DriverVirtqueue<int> _driver = null!;
    private GuestRange[] _readable = null!;
    private GuestRange[] _writable = null!;
    private MinimalDevice _device;

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Allocate(16UL << 20);
        ulong features = NegotiatedFeatures();
        VirtqueueAddresses addresses = VirtqueueAddresses.Compact(Format, 0x1000, Q);
        _pool = new IndirectDescriptorPool(_memory, 0x10_0000, Q, 16);
        _driver = new DriverVirtqueue<int>(_memory, addresses, features, _pool);
        _device = new MinimalDevice(_memory, Format, addresses, Indirect ? 1 : Descriptors);
        (_readable, _writable) = BufferRanges();

        // The minimal device trusts the driver; check once that the cycle is what it claims to be.
        for (int i = 0; i < 3 * Q / Batch; i++)
        {
            if (Cycle(kickDecision: true) == long.MinValue)
            {
                throw new InvalidOperationException("unreachable");
            }
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _driver.Dispose();
        _pool.Dispose();
        _memory.Dispose();
    }

    /// <summary>Per buffer: add, publish with the kick decision (per 32), minimal device, get used.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public long AddPublishKickGetUsed() => Cycle(kickDecision: true);

    /// <summary>Per buffer: add, publish without a kick decision (per 32), minimal device, get used.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public long AddPublishGetUsed() => Cycle(kickDecision: false);

    private long Cycle(bool kickDecision)
    {
        DriverVirtqueue<int> driver = _driver;
        long sum = 0;
        for (int i = 0; i < Batch; i++)
        {
            if (!driver.TryAdd(_readable, _writable, i))
            {
                ThrowRingFull();
            }
        }

        if (kickDecision)
        {
            sum += driver.PublishAvailable() ? 1 : 0;
        }
        else
        {
            driver.FlushAvailable();
        }

        _device.UseAll();
        int returned = 0;
        while (driver.TryGetUsed(out int token, out uint length))
        {
            sum += token + length;
            returned++;
        }

        if (returned != Batch)
        {
            ThrowLost(returned);
        }

        return sum;
    }

    private void ThrowLost(int returned) =>
        throw new InvalidOperationException($"{returned} of {Batch} buffers came back ({_driver.Error}).");

    /// <summary>
    /// The cheapest device that keeps a driver running: it returns every available buffer in order, reading only
    /// the id the driver wrote. It validates nothing, so it is a benchmark fixture, never a model of a device.
    /// </summary>
    private struct MinimalDevice
    {
        private readonly bool _packed;
        private readonly int _mask;
        private readonly int _size;
        private readonly int _slotsPerBuffer;
        private readonly byte* _ring; // split: the descriptor table is not read; packed: the descriptor ring
        private readonly byte* _avail;
        private readonly byte* _used;
        private ushort _next;
        private bool _wrap;

        public MinimalDevice(GuestMemory memory, VirtqueueFormat format, in VirtqueueAddresses addresses, int slotsPerBuffer)
        {
            _packed = format == VirtqueueFormat.Packed;
            _size = addresses.QueueSize;
            _mask = addresses.QueueSize - 1;
            _slotsPerBuffer = slotsPerBuffer;
            int q = addresses.QueueSize;
            _ring = Pointer(memory, addresses.DescriptorAreaAddress, q * SplitDescriptor.Size); // same size for both
            _avail = Pointer(memory, addresses.DriverAreaAddress, _packed ? EventSuppression.Size : SplitQueueLayout.AvailRingBytes(q));
            _used = Pointer(memory, addresses.DeviceAreaAddress, _packed ? EventSuppression.Size : SplitQueueLayout.UsedRingBytes(q));
            _next = 0;
            _wrap = true;
        }

        public void UseAll()
        {
            if (_packed)
            {
                UsePacked();
                return;
            }

            // Split: avail->idx (acquire), then for each new entry one used element; used->idx (release) once.
            ushort availIdx = Volatile.Read(ref *(ushort*)(_avail + SplitQueueLayout.RingIdxOffset));
            ushort used = _next;
            for (; _next != availIdx; _next++, used++)
            {
                ushort head = *(ushort*)(_avail + SplitQueueLayout.RingEntriesOffset + (2 * (_next & _mask)));
                byte* element = _used + SplitQueueLayout.RingEntriesOffset + (UsedElement.Size * (used & _mask));
                *(uint*)element = head;
                *(uint*)(element + 4) = 0;
            }

            Volatile.Write(ref *(ushort*)(_used + SplitQueueLayout.RingIdxOffset), used);
        }

        private void UsePacked()
        {
            ushort availBits = PackedDescriptor.AvailableBits(_wrap);
            while (true)
            {
                byte* desc = _ring + (PackedDescriptor.Size * _next);
                ushort flags = Volatile.Read(ref *(ushort*)(desc + PackedDescriptor.FlagsOffset));
                if ((flags & (PackedDescriptor.FlagAvail | PackedDescriptor.FlagUsed)) != availBits)
                {
                    return;
                }

                // 2.8.6: the list's last descriptor carries the buffer id; the used descriptor goes over the first.
                byte* last = _ring + (PackedDescriptor.Size * ((_next + _slotsPerBuffer - 1) % _size));
                *(ushort*)(desc + PackedDescriptor.IdOffset) = *(ushort*)(last + PackedDescriptor.IdOffset);
                *(uint*)(desc + PackedDescriptor.LengthOffset) = 0;
                Volatile.Write(ref *(ushort*)(desc + PackedDescriptor.FlagsOffset), PackedDescriptor.UsedBits(_wrap));
                _next = (ushort)(_next + _slotsPerBuffer);
                if (_next >= _size)
                {
                    _next = (ushort)(_next - _size);
                    _wrap = !_wrap;
                    availBits = PackedDescriptor.AvailableBits(_wrap);
                }
            }
        }

        private static byte* Pointer(GuestMemory memory, ulong address, int length)
        {
            if (memory.TryGetSpan(address, length, out Span<byte> span) != GuestMemoryError.None)
            {
                throw new InvalidOperationException("ring outside guest memory");
            }

            fixed (byte* p = span)
            {
                return p; // native guest memory never moves
            }
        }
    }
}

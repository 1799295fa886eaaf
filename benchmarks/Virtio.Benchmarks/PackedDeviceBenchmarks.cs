using System;
using BenchmarkDotNet.Attributes;
using Virtio.Ring;
using Virtio.Ring.Packed;

namespace Virtio.Benchmarks;

/// <summary>
/// The packed device's per-list cost, single-threaded: pop (scan flags, walk and validate, translate), iterate,
/// push, publish once per 64 lists. A packed ring cannot be "re-offered" by moving an index: each invocation plays
/// the driver's minimum first, rewriting every descriptor of the next 64 lists (address, length, id, flags with
/// the current wrap counter; one 16-byte store each), which is included in the time.
/// Compare with <see cref="SplitDeviceBenchmarks"/>, whose re-offer is one 2-byte store per 64 chains.
/// </summary>
[MemoryDiagnoser]
public unsafe class PackedDeviceBenchmarks
{
    private const int Q = 1024;
    private const int Batch = 64;
    private const ulong RingBase = 0x1000;
    private const ulong TableBase = 0x10_0000;
    private const ulong DataBase = 0x20_0000;

    private GuestMemory _memory = null!;
    private PackedDeviceVirtqueue _device = null!;
    private byte* _ring;
    private int _slot;
    private bool _wrap = true;
    private ushort _id;

    [Params(1, 4, 16)]
    public int Descriptors { get; set; }

    [Params(false, true)]
    public bool Indirect { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Allocate(16UL << 20);
        PackedQueueLayout layout = PackedQueueLayout.Compact(RingBase, Q);
        _memory.TryGetSpan(RingBase, Q * 16, out Span<byte> ring);
        fixed (byte* p = ring)
        {
            _ring = p; // native guest memory never moves
        }

        for (int t = 0; t < Q; t++)
        {
            for (int d = 0; d < Descriptors; d++)
            {
                var entry = new PackedDescriptor(DataBase + ((ulong)d * 64), 64, 0, 0);
                _memory.TryWrite(TableBase + ((ulong)t * 16 * 16) + ((ulong)d * 16), new ReadOnlySpan<byte>(&entry, 16));
            }
        }

        VirtqueueFeatures features = Indirect ? VirtqueueFeatures.IndirectDescriptors : VirtqueueFeatures.None;
        if (!PackedDeviceVirtqueue.TryAttach(_memory, layout, features, out PackedDeviceVirtqueue? device, out QueueError error))
        {
            throw new InvalidOperationException(error.ToString());
        }

        _device = device;
        _device.DisableAvailableNotifications();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _device.Dispose();
        _memory.Dispose();
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public long OfferThenPopIteratePush()
    {
        for (int i = 0; i < Batch; i++)
        {
            OfferOne();
        }

        long bytes = 0;
        PackedDeviceVirtqueue device = _device;
        while (device.TryPop(out DescriptorChain chain))
        {
            foreach (ReadOnlySpan<byte> segment in chain.Readable)
            {
                bytes += segment.Length;
            }

            device.PushUsed(chain.Id, 0);
        }

        device.PublishUsed();
        return bytes;
    }

    private void OfferOne()
    {
        ushort avail = PackedDescriptor.AvailableBits(_wrap);
        ushort id = _id;
        _id = (ushort)((_id + 1) % Q);
        if (Indirect)
        {
            Write(_slot, new PackedDescriptor(TableBase + ((ulong)id * 16 * 16), (uint)(16 * Descriptors), id, (ushort)(avail | PackedDescriptor.FlagIndirect)));
            Advance(1);
            return;
        }

        for (int d = 0; d < Descriptors; d++)
        {
            ushort flags = (ushort)(avail | (d < Descriptors - 1 ? PackedDescriptor.FlagNext : 0));
            Write(_slot, new PackedDescriptor(DataBase + ((ulong)d * 64), 64, id, flags));
            Advance(1);
            avail = PackedDescriptor.AvailableBits(_wrap);
        }
    }

    private void Write(int slot, PackedDescriptor descriptor) => *(PackedDescriptor*)(_ring + (slot * 16)) = descriptor;

    private void Advance(int slots)
    {
        _slot += slots;
        if (_slot >= Q)
        {
            _slot -= Q;
            _wrap = !_wrap;
        }
    }
}

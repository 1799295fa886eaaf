using System;
using System.Buffers.Binary;
using BenchmarkDotNet.Attributes;
using Virtio.Ring;
using Virtio.Ring.Split;

namespace Virtio.Benchmarks;

/// <summary>
/// The device's per-chain cost, single-threaded: pop (read avail entry, walk and validate the chain, translate
/// every buffer), iterate the segments, push the used element, publish once per batch. The available ring is
/// pre-filled once; each invocation only moves avail->idx forward, so no driver work is measured. Comparable to
/// rust-vmm virtio-queue's pop_descriptor_chain + add_used.
/// </summary>
[MemoryDiagnoser]
public class SplitDeviceBenchmarks
{
    private const int Q = 1024;
    private const int Batch = 64;
    private const ulong RingBase = 0x1000;
    private const ulong TableBase = 0x10_0000;
    private const ulong DataBase = 0x20_0000;

    private GuestMemory _memory = null!;
    private SplitDeviceVirtqueue _device = null!;
    private SplitQueueLayout _layout;

    [Params(1, 4, 16)]
    public int Descriptors { get; set; }

    [Params(false, true)]
    public bool Indirect { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Allocate(16UL << 20);
        _layout = SplitQueueLayout.Compact(RingBase, Q);
        VirtqueueFeatures features = Indirect ? VirtqueueFeatures.IndirectDescriptors : VirtqueueFeatures.None;
        int chains = Indirect ? Q : Q / Descriptors;
        for (int c = 0; c < chains; c++)
        {
            if (Indirect)
            {
                ulong table = TableBase + ((ulong)c * 16 * 16);
                for (int d = 0; d < Descriptors; d++)
                {
                    WriteDescriptor(table + ((ulong)d * 16), DataBase + ((ulong)d * 64), 64, d < Descriptors - 1 ? SplitDescriptor.FlagNext : (ushort)0, (ushort)(d + 1));
                }

                WriteDescriptor(RingBase + ((ulong)c * 16), table, (uint)(16 * Descriptors), SplitDescriptor.FlagIndirect, 0);
            }
            else
            {
                for (int d = 0; d < Descriptors; d++)
                {
                    int index = (c * Descriptors) + d;
                    WriteDescriptor(RingBase + ((ulong)index * 16), DataBase + ((ulong)d * 64), 64, d < Descriptors - 1 ? SplitDescriptor.FlagNext : (ushort)0, (ushort)(index + 1));
                }
            }
        }

        for (int slot = 0; slot < Q; slot++)
        {
            int head = Indirect ? slot : (slot % chains) * Descriptors;
            _memory.TryGetSpan(_layout.DriverAreaAddress + 4 + ((ulong)slot * 2), 2, out Span<byte> entry);
            BinaryPrimitives.WriteUInt16LittleEndian(entry, (ushort)head);
        }

        if (!SplitDeviceVirtqueue.TryAttach(_memory, _layout, features, out SplitDeviceVirtqueue? device, out QueueError error))
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

    /// <summary>Per chain: pop + walk every buffer + push; one publish per 64 chains.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public long PopIteratePush()
    {
        SplitDeviceVirtqueue device = OfferBatch();
        long bytes = 0;
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

    /// <summary>
    /// Per chain: pop (walk and validate every descriptor, translate every buffer) + push, no iteration; one
    /// publish per 64 chains. The same work as rust-vmm virtio-queue's pop_descriptor_chain + add_used.
    /// </summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public long PopPush()
    {
        SplitDeviceVirtqueue device = OfferBatch();
        long segments = 0;
        while (device.TryPop(out DescriptorChain chain))
        {
            segments += chain.SegmentCount;
            device.PushUsed(chain.Id, 0);
        }

        device.PublishUsed();
        return segments;
    }

    /// <summary>The driver's whole part: avail->idx moves on by a batch over the pre-filled ring.</summary>
    private SplitDeviceVirtqueue OfferBatch()
    {
        _memory.TryGetSpan(_layout.DriverAreaAddress + 2, 2, out Span<byte> availIdx);
        BinaryPrimitives.WriteUInt16LittleEndian(availIdx, (ushort)(_device.NextAvail + Batch));
        return _device;
    }

    private void WriteDescriptor(ulong gpa, ulong addr, uint len, ushort flags, ushort next)
    {
        _memory.TryGetSpan(gpa, 16, out Span<byte> d);
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], len);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
    }
}

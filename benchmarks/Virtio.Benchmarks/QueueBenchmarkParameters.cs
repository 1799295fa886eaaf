using System;
using BenchmarkDotNet.Attributes;
using Virtio.Ring;

namespace Virtio.Benchmarks;

/// <summary>
/// The parameter grid of the benchmarks that run a whole queue through the format-independent API (format,
/// descriptors per chain, indirect, EVENT_IDX), with the feature bits and buffers each case negotiates and adds.
/// </summary>
public abstract class QueueBenchmarkParameters
{
    [Params(VirtqueueFormat.Split, VirtqueueFormat.Packed)]
    public VirtqueueFormat Format { get; set; }

    [Params(1, 4, 16)]
    public int Descriptors { get; set; }

    [Params(false, true)]
    public bool Indirect { get; set; }

    [Params(false, true)]
    public bool EventIdx { get; set; }

    /// <summary>VERSION_1 plus this case's EVENT_IDX, INDIRECT_DESC and RING_PACKED bits.</summary>
    protected ulong NegotiatedFeatures()
    {
        ulong features = 1UL << VirtioFeatureBits.Version1;
        features |= EventIdx ? 1UL << VirtioFeatureBits.EventIdx : 0;
        features |= Indirect ? 1UL << VirtioFeatureBits.IndirectDesc : 0;
        features |= Format == VirtqueueFormat.Packed ? 1UL << VirtioFeatureBits.RingPacked : 0;
        return features;
    }

    /// <summary>Each buffer: Descriptors - 1 readable 64-byte segments, then one writable 64-byte segment.</summary>
    protected (GuestRange[] Readable, GuestRange[] Writable) BufferRanges()
    {
        var readable = new GuestRange[Descriptors - 1];
        for (int i = 0; i < readable.Length; i++)
        {
            readable[i] = new GuestRange(0x20_0000 + ((ulong)i * 64), 64);
        }

        return (readable, [new GuestRange(0x30_0000, 64)]);
    }

    protected static void ThrowRingFull() => throw new InvalidOperationException("The ring is too small for a batch.");
}

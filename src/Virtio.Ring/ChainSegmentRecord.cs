using System.Diagnostics;

namespace Virtio.Ring;

/// <summary>
/// One validated buffer of a popped chain, kept in the device's private memory: the guest wrote the descriptor,
/// the device read it once, checked it, translated it and stored the result here. 16 bytes, written with two
/// stores; the guest address is not kept but rebuilt from the region when asked for (rarely). Iteration works from these
/// records only, so the guest rewriting its descriptors after the pop changes nothing the device sees.
/// </summary>
internal readonly unsafe struct ChainSegmentRecord
{
    public readonly byte* Host;
    private readonly ulong _lengthAndRegion; // length in the low 32 bits, region index in the high: one store

    public ChainSegmentRecord(byte* host, int length, int region)
    {
        Debug.Assert(length >= 0, "segment lengths are validated to fit a span");
        Debug.Assert(region >= 0, "a translated buffer has a region");
        Host = host;
        _lengthAndRegion = (uint)length | ((ulong)(uint)region << 32);
    }

    /// <summary>Length in bytes, below 2^31.</summary>
    public int Length => (int)(uint)_lengthAndRegion;

    /// <summary>Index of the guest memory region the buffer lies in; with <see cref="Host"/> it gives the guest address.</summary>
    public int Region => (int)(_lengthAndRegion >> 32);

    /// <summary>A device's segment scratch, doubled (at most to the queue size) when a chain needs more room.</summary>
    public static ChainSegmentRecord[] Grow(ChainSegmentRecord[] current, int queueSize)
    {
        Debug.Assert(current.Length < queueSize, "a chain never holds more than Q segments");
        var grown = new ChainSegmentRecord[System.Math.Min(queueSize, current.Length * 2)];
        current.CopyTo(grown, 0);
        return grown;
    }
}

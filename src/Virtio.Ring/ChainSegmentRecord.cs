using System.Diagnostics;

namespace Virtio.Ring;

/// <summary>
/// One validated buffer of a popped chain, kept in the device's private memory: the guest wrote the descriptor,
/// the device read it once, checked it, translated it and stored the result here. Iteration works from these
/// records only, so the guest rewriting its descriptors after the pop changes nothing the device sees.
/// </summary>
internal readonly unsafe struct ChainSegmentRecord
{
    public readonly ulong Address;
    public readonly byte* Host;
    public readonly int Length;

    public ChainSegmentRecord(ulong address, byte* host, int length)
    {
        Debug.Assert(length >= 0, "segment lengths are validated to fit a span");
        Address = address;
        Host = host;
        Length = length;
    }

    /// <summary>A device's segment scratch, doubled (at most to the queue size) when a chain needs more room.</summary>
    public static ChainSegmentRecord[] Grow(ChainSegmentRecord[] current, int queueSize)
    {
        Debug.Assert(current.Length < queueSize, "a chain never holds more than Q segments");
        var grown = new ChainSegmentRecord[System.Math.Min(queueSize, current.Length * 2)];
        current.CopyTo(grown, 0);
        return grown;
    }
}

namespace Virtio.Ring.Tests;

/// <summary>
/// What one pop decided, in a form two pops can be compared by: the chain (id, segment addresses, lengths and
/// directions, totals) or the typed error and its detail.
/// </summary>
internal readonly record struct PopVerdict(QueueError Error, ulong Detail, ushort Id, int Segments, int Readable, ulong Lengths, ulong Digest)
{
    public static PopVerdict Failed(QueueError error, ulong detail) => new(error, detail, 0, 0, 0, 0, 0);

    public static PopVerdict Popped(in DescriptorChain chain)
    {
        ulong digest = 17;
        for (int i = 0; i < chain.SegmentCount; i++)
        {
            GuestRange range = chain.GetRange(i);
            digest = (digest * 1_000_003) ^ range.Address;
            digest = (digest * 1_000_003) ^ range.Length;
            digest = (digest * 1_000_003) ^ (chain.IsWritable(i) ? 1UL : 0UL);
        }

        return new PopVerdict(QueueError.None, 0, chain.Id, chain.SegmentCount, chain.ReadableCount, chain.ReadableLength + ((ulong)chain.WritableLength << 32), digest);
    }

    /// <summary>Every segment of <paramref name="chain"/> as (guest address, length), in chain order.</summary>
    public static (ulong Address, uint Length)[] SegmentsOf(in DescriptorChain chain)
    {
        var result = new (ulong, uint)[chain.SegmentCount];
        for (int i = 0; i < result.Length; i++)
        {
            GuestRange range = chain.GetRange(i);
            result[i] = (range.Address, range.Length);
        }

        return result;
    }
}

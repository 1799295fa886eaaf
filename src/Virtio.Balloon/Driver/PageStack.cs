using System.Collections.Generic;

namespace Virtio.Balloon.Driver;

/// <summary>
/// The balloon's pages (page frame numbers), last in first out, in chunks of 64 Ki entries that are kept once
/// grown: a driver that inflates and deflates repeatedly allocates nothing in steady state, and no object exists
/// per page.
/// </summary>
internal sealed class PageStack
{
    private const int ChunkSize = 1 << 16;
    private readonly List<ulong[]> _chunks = [];
    private long _count;

    public long Count => _count;

    public void Push(ulong pfn)
    {
        int chunk = (int)(_count / ChunkSize);
        if (chunk == _chunks.Count)
        {
            _chunks.Add(new ulong[ChunkSize]);
        }

        _chunks[chunk][_count % ChunkSize] = pfn;
        _count++;
    }

    public bool TryPop(out ulong pfn)
    {
        if (_count == 0)
        {
            pfn = 0;
            return false;
        }

        _count--;
        pfn = _chunks[(int)(_count / ChunkSize)][_count % ChunkSize];
        return true;
    }
}

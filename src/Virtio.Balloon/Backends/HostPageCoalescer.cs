using System;

namespace Virtio.Balloon.Backends;

/// <summary>
/// Host pages larger than the balloon's 4 KiB pages (2 MiB huge pages, or 16/64 KiB base pages) can only be
/// released whole. This tracks which 4 KiB pieces of partly ballooned host pages are in the balloon, and says
/// when a host page is complete, as QEMU's partially-ballooned-page bitmap and Cloud Hypervisor do.
/// <para>
/// A fixed table of partly ballooned host pages, allocated once: inflating touches no allocator. When the
/// table is full the oldest entry is forgotten, which only loses the chance to reclaim that host page (its
/// pieces stay with the host until the guest gives them again); nothing is released that is not wholly
/// ballooned. Deflating a piece clears its bit; a host page that was already released needs nothing (the
/// guest's next touch faults a zero page in).
/// </para>
/// </summary>
public sealed class HostPageCoalescer
{
    private readonly int _piecesPerHostPage;
    private readonly int _wordsPerEntry;
    private readonly ulong[] _keys;     // host page index + 1; 0 = empty
    private readonly ulong[] _bits;     // _wordsPerEntry words per entry
    private readonly int[] _set;        // pieces set per entry
    private int _next;                  // round-robin victim

    /// <summary>Tracks host pages of <paramref name="hostPageSize"/> bytes, at most <paramref name="capacity"/> partly ballooned at once.</summary>
    public HostPageCoalescer(ulong hostPageSize, int capacity = 256)
    {
        if (hostPageSize < 4096 || (hostPageSize & (hostPageSize - 1)) != 0 || hostPageSize > (1UL << 30))
        {
            throw new ArgumentOutOfRangeException(nameof(hostPageSize), "A power of two from 4 KiB to 1 GiB.");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        HostPageSize = hostPageSize;
        _piecesPerHostPage = (int)(hostPageSize / 4096);
        _wordsPerEntry = (_piecesPerHostPage + 63) / 64;
        _keys = new ulong[capacity];
        _bits = new ulong[capacity * _wordsPerEntry];
        _set = new int[capacity];
    }

    /// <summary>The host page size.</summary>
    public ulong HostPageSize { get; }

    /// <summary>4 KiB pages per host page.</summary>
    public int PiecesPerHostPage => _piecesPerHostPage;

    /// <summary>Host pages currently partly ballooned (tracked).</summary>
    public int PartialHostPages
    {
        get
        {
            int n = 0;
            foreach (ulong key in _keys)
            {
                n += key != 0 ? 1 : 0;
            }

            return n;
        }
    }

    /// <summary>
    /// Adds <paramref name="range"/> to the balloon and calls <paramref name="release"/> with each run of whole
    /// host pages (first guest page, page count) that is now completely ballooned.
    /// </summary>
    public void Inflate<TState>(GuestPageRange range, TState state, Action<TState, GuestPageRange> release)
    {
        ulong per = (ulong)_piecesPerHostPage;
        ulong pfn = range.FirstPfn;
        ulong end = range.EndPfn;
        while (pfn < end)
        {
            ulong hostPage = pfn / per;
            ulong hostStart = hostPage * per;
            ulong hostEnd = hostStart + per;
            if (pfn == hostStart && end >= hostEnd)
            {
                // Whole host pages: release the run at once, forgetting any partial state they had.
                ulong wholeEnd = end / per * per;
                for (ulong h = hostPage; h < wholeEnd / per; h++)
                {
                    Forget(h);
                }

                release(state, new GuestPageRange(hostStart, wholeEnd - hostStart));
                pfn = wholeEnd;
                continue;
            }

            ulong pieceEnd = Math.Min(end, hostEnd);
            int entry = FindOrAdd(hostPage);
            for (ulong p = pfn; p < pieceEnd; p++)
            {
                int bit = (int)(p - hostStart);
                ref ulong word = ref _bits[(entry * _wordsPerEntry) + (bit / 64)];
                ulong mask = 1UL << (bit % 64);
                if ((word & mask) == 0)
                {
                    word |= mask;
                    _set[entry]++;
                }
            }

            if (_set[entry] == _piecesPerHostPage)
            {
                ClearEntry(entry);
                release(state, new GuestPageRange(hostStart, per));
            }

            pfn = pieceEnd;
        }
    }

    /// <summary>Takes <paramref name="range"/> out of the balloon: clears the pieces of partly ballooned host pages.</summary>
    public void Deflate(GuestPageRange range)
    {
        ulong per = (ulong)_piecesPerHostPage;
        for (ulong pfn = range.FirstPfn; pfn < range.EndPfn;)
        {
            ulong hostPage = pfn / per;
            ulong hostEnd = (hostPage + 1) * per;
            ulong pieceEnd = Math.Min(range.EndPfn, hostEnd);
            int entry = Find(hostPage);
            if (entry >= 0)
            {
                for (ulong p = pfn; p < pieceEnd; p++)
                {
                    int bit = (int)(p - (hostPage * per));
                    ref ulong word = ref _bits[(entry * _wordsPerEntry) + (bit / 64)];
                    ulong mask = 1UL << (bit % 64);
                    if ((word & mask) != 0)
                    {
                        word &= ~mask;
                        _set[entry]--;
                    }
                }

                if (_set[entry] == 0)
                {
                    ClearEntry(entry);
                }
            }

            pfn = pieceEnd;
        }
    }

    /// <summary>Forgets every partly ballooned host page (device reset).</summary>
    public void Clear()
    {
        Array.Clear(_keys);
        Array.Clear(_bits);
        Array.Clear(_set);
    }

    private int Find(ulong hostPage)
    {
        for (int i = 0; i < _keys.Length; i++)
        {
            if (_keys[i] == hostPage + 1)
            {
                return i;
            }
        }

        return -1;
    }

    private void Forget(ulong hostPage)
    {
        int entry = Find(hostPage);
        if (entry >= 0)
        {
            ClearEntry(entry);
        }
    }

    private int FindOrAdd(ulong hostPage)
    {
        int found = Find(hostPage);
        if (found >= 0)
        {
            return found;
        }

        int free = Array.IndexOf(_keys, 0UL);
        if (free < 0)
        {
            free = _next;
            _next = (_next + 1) % _keys.Length;
            ClearEntry(free);
        }

        _keys[free] = hostPage + 1;
        return free;
    }

    private void ClearEntry(int entry)
    {
        _keys[entry] = 0;
        _set[entry] = 0;
        Array.Clear(_bits, entry * _wordsPerEntry, _wordsPerEntry);
    }
}

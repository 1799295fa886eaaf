using System;

namespace Virtio.Balloon.Backends;

/// <summary>
/// A back end that only keeps books, for tests and simulations: which 4 KiB pages are in the balloon (a bitmap),
/// which host pages a real back end would have released (through a <see cref="HostPageCoalescer"/> when the
/// host page is larger than 4 KiB), and what free page reporting handed over. Allocates nothing per call.
/// </summary>
public sealed class InMemoryBalloonBackend : IBalloonBackend
{
    private readonly ulong[] _inflated;
    private readonly HostPageCoalescer? _coalescer;

    /// <summary>Books for a guest of <paramref name="guestPages"/> 4 KiB pages and host pages of <paramref name="hostPageSize"/> bytes.</summary>
    public InMemoryBalloonBackend(ulong guestPages, ulong hostPageSize = 4096)
    {
        _inflated = new ulong[(guestPages + 63) / 64];
        GuestPages = guestPages;
        _coalescer = hostPageSize > 4096 ? new HostPageCoalescer(hostPageSize) : null;
    }

    /// <summary>4 KiB pages the books cover.</summary>
    public ulong GuestPages { get; }

    /// <summary>Pages in the balloon now.</summary>
    public long InflatedPages { get; private set; }

    /// <summary>Inflate calls, deflate calls and report calls.</summary>
    public int InflateCalls { get; private set; }

    /// <summary>Deflate calls.</summary>
    public int DeflateCalls { get; private set; }

    /// <summary>Report calls.</summary>
    public int ReportCalls { get; private set; }

    /// <summary>4 KiB pages a real back end would have released to the host (whole host pages only).</summary>
    public long ReleasedPages { get; private set; }

    /// <summary>Pages inflated while already in the balloon (a guest that repeats itself; harmless).</summary>
    public long RepeatedInflatePages { get; private set; }

    /// <summary>Pages deflated that were not in the balloon.</summary>
    public long UnknownDeflatePages { get; private set; }

    /// <summary>Pages free page reporting handed over and a real back end would have discarded.</summary>
    public long ReportedDiscardedPages { get; private set; }

    /// <summary>Pages free page reporting handed over whose contents had to be kept (poison).</summary>
    public long ReportedPreservedPages { get; private set; }

    /// <summary>Device resets seen.</summary>
    public int Resets { get; private set; }

    /// <summary>Called with each run of ballooned host pages a real back end would release (tests observe it).</summary>
    public Action<GuestPageRange>? Released { get; set; }

    /// <summary>Whether page <paramref name="pfn"/> is in the balloon.</summary>
    public bool IsInflated(ulong pfn) => pfn < GuestPages && (_inflated[pfn / 64] & (1UL << (int)(pfn % 64))) != 0;

    /// <inheritdoc/>
    public void Inflate(ReadOnlySpan<GuestPageRange> ranges)
    {
        InflateCalls++;
        foreach (GuestPageRange range in ranges)
        {
            for (ulong pfn = range.FirstPfn; pfn < range.EndPfn; pfn++)
            {
                ref ulong word = ref _inflated[pfn / 64];
                ulong mask = 1UL << (int)(pfn % 64);
                if ((word & mask) != 0)
                {
                    RepeatedInflatePages++;
                    continue;
                }

                word |= mask;
                InflatedPages++;
            }

            if (_coalescer is null)
            {
                Release(this, range);
            }
            else
            {
                _coalescer.Inflate(range, this, Release);
            }
        }
    }

    /// <inheritdoc/>
    public void Deflate(ReadOnlySpan<GuestPageRange> ranges)
    {
        DeflateCalls++;
        foreach (GuestPageRange range in ranges)
        {
            for (ulong pfn = range.FirstPfn; pfn < range.EndPfn; pfn++)
            {
                ref ulong word = ref _inflated[pfn / 64];
                ulong mask = 1UL << (int)(pfn % 64);
                if ((word & mask) == 0)
                {
                    UnknownDeflatePages++;
                    continue;
                }

                word &= ~mask;
                InflatedPages--;
            }

            _coalescer?.Deflate(range);
        }
    }

    /// <inheritdoc/>
    public void Report(ReadOnlySpan<GuestPageRange> ranges, bool preserveContents)
    {
        ReportCalls++;
        foreach (GuestPageRange range in ranges)
        {
            if (preserveContents)
            {
                ReportedPreservedPages += (long)range.PageCount;
            }
            else
            {
                ReportedDiscardedPages += (long)range.PageCount;
            }
        }
    }

    /// <inheritdoc/>
    public void Reset()
    {
        Resets++;
        Array.Clear(_inflated);
        InflatedPages = 0;
        _coalescer?.Clear();
    }

    private static void Release(InMemoryBalloonBackend self, GuestPageRange range)
    {
        self.ReleasedPages += (long)range.PageCount;
        self.Released?.Invoke(range);
    }
}

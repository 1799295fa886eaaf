using System;
using System.Diagnostics;
using System.Numerics;
using System.Threading;
using Virtio.Balloon.Hints;
using Virtio.Ring.Memory;

namespace Virtio.Balloon.Migration;

/// <summary>
/// The bitmap of one precopy round of a live migration: which guest pages still have to be sent. The dirty-log
/// sync sets bits (<see cref="MarkWord"/>, <see cref="MarkAll"/>), free page hints clear them
/// (<see cref="OnFreePageHints"/>), and the sender takes them (<see cref="TakeMarked"/>), as QEMU's
/// <c>RAMBlock.bmap</c> is used.
/// <para>
/// <b>Two levels.</b> A page bit per 4 KiB page, and a summary bit per chunk of <see cref="ChunkPages"/> pages
/// (4 MiB, the largest free block). A clear summary bit means "nothing in this chunk is marked", whatever its page
/// bits say. A 4 MiB free page hint therefore clears one summary bit instead of 128 bytes of page bits, which is
/// what lets a 1 TiB guest's whole report (262,144 hints) be applied in well under a millisecond; a sync that marks
/// a page of a chunk whose summary bit is clear first zeroes that chunk's page bits.
/// </para>
/// <para>
/// <b>Threads.</b> The migration thread marks and takes; the balloon device's serving thread clears hints while the
/// migration thread takes. Marking never runs concurrently with hint clearing (the migration stops the hint report
/// before each sync: that ordering is what makes hints safe), and only one thread clears hints at a time (the one
/// that serves the hint queue). Under those rules: the sender takes page bits with an atomic exchange, so a page is
/// handed out once per mark; a hint clears page bits with an atomic and; summary bits are written by one thread at
/// a time and only read by the sender. A race between a hint and the sender can only make a page be sent that
/// needed not be, never keep a marked page from being sent.
/// </para>
/// </summary>
public sealed unsafe class MigrationBitmap : IFreePageHintSink, IDisposable
{
    /// <summary>Pages per summary bit (4 MiB).</summary>
    public const int ChunkPages = 1024;

    private const int WordsPerChunk = ChunkPages / 64;

    private readonly ulong* _pages;
    private readonly ulong* _summary;
    private readonly ulong _pageBytes;
    private readonly ulong _summaryBytes;
    private readonly ulong _pageWords;
    private readonly ulong _chunks;
    private readonly ulong _summaryWords;
    private bool _disposed;

    /// <summary>A bitmap over <paramref name="pageCount"/> pages from <paramref name="firstPfn"/>, nothing marked.</summary>
    public MigrationBitmap(ulong firstPfn, ulong pageCount)
    {
        ArgumentOutOfRangeException.ThrowIfZero(pageCount);
        if (firstPfn % ChunkPages != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(firstPfn), "The first page must be 4 MiB aligned.");
        }

        FirstPfn = firstPfn;
        PageCount = pageCount;
        _chunks = (pageCount + ChunkPages - 1) / ChunkPages;
        _pageWords = _chunks * WordsPerChunk;
        _pageBytes = RoundUp(_pageWords * 8);
        _summaryWords = (_chunks + 63) / 64;
        _summaryBytes = RoundUp(_summaryWords * 8);
        _pages = (ulong*)NativeRegion.Allocate(_pageBytes);      // reserved, zero until touched
        _summary = (ulong*)NativeRegion.Allocate(_summaryBytes);
    }

    /// <summary>The first page frame number covered.</summary>
    public ulong FirstPfn { get; }

    /// <summary>Pages covered.</summary>
    public ulong PageCount { get; }

    /// <summary>Chunks wholly inside the bitmap (a last, partial chunk is cleared page by page, never through its summary bit).</summary>
    internal ulong WholeChunks => PageCount / ChunkPages;

    /// <summary>Marks every page (the first round of a migration sends all of RAM).</summary>
    public void MarkAll()
    {
        ThrowIfDisposed();
        new Span<ulong>(_pages, checked((int)_pageWords)).Fill(ulong.MaxValue);
        ulong tail = PageCount % 64;
        ulong lastWord = (PageCount - 1) / 64;
        if (tail != 0)
        {
            _pages[lastWord] = (1UL << (int)tail) - 1;
        }

        for (ulong w = lastWord + 1; w < _pageWords; w++)
        {
            _pages[w] = 0;
        }

        for (ulong c = 0; c < _chunks; c++)
        {
            _summary[c / 64] |= 1UL << (int)(c % 64);
        }
    }

    /// <summary>
    /// Sets every summary bit again, leaving the page bits as they are: after <see cref="MarkAll"/> and hints that
    /// cleared only summary bits, this is <see cref="MarkAll"/> without rewriting the page bits (benchmarks repeat a
    /// first round's hints with it).
    /// </summary>
    internal void RestoreSummaries()
    {
        for (ulong c = 0; c < _chunks; c += 64)
        {
            ulong n = Math.Min(64, _chunks - c);
            _summary[c / 64] = n == 64 ? ulong.MaxValue : (1UL << (int)n) - 1;
        }
    }

    /// <summary>
    /// Marks the pages whose bits are set in <paramref name="bits"/>, page <c>FirstPfn + 64 * wordIndex + b</c>
    /// for bit b (the dirty-log sync). Not concurrently with hint clearing.
    /// </summary>
    public void MarkWord(ulong wordIndex, ulong bits)
    {
        Debug.Assert(wordIndex < _pageWords, "inside the bitmap");
        if (bits == 0)
        {
            return;
        }

        ulong chunk = wordIndex / WordsPerChunk;
        ref ulong summary = ref _summary[chunk / 64];
        ulong flag = 1UL << (int)(chunk % 64);
        if ((Volatile.Read(ref summary) & flag) == 0)
        {
            // The chunk's page bits are stale (a hint cleared the chunk): start it from nothing.
            new Span<ulong>(_pages + (chunk * WordsPerChunk), WordsPerChunk).Clear();
            Interlocked.Or(ref _pages[wordIndex], bits);
            Interlocked.Or(ref summary, flag); // after the page bits: the sender never sees a chunk with stale bits
            return;
        }

        Interlocked.Or(ref _pages[wordIndex], bits);
    }

    /// <summary>Marks one page.</summary>
    public void Mark(ulong pfn)
    {
        ulong index = CheckedIndex(pfn);
        MarkWord(index / 64, 1UL << (int)(index % 64));
    }

    /// <summary>True when <paramref name="pfn"/> is marked.</summary>
    public bool IsMarked(ulong pfn)
    {
        ulong index = CheckedIndex(pfn);
        ulong chunk = index / ChunkPages;
        return (Volatile.Read(ref _summary[chunk / 64]) & (1UL << (int)(chunk % 64))) != 0
            && (Volatile.Read(ref _pages[index / 64]) & (1UL << (int)(index % 64))) != 0;
    }

    /// <summary>Pages marked now (a scan).</summary>
    public long CountMarked()
    {
        long count = 0;
        for (ulong c = 0; c < _chunks; c++)
        {
            if ((Volatile.Read(ref _summary[c / 64]) & (1UL << (int)(c % 64))) == 0)
            {
                continue;
            }

            for (ulong w = c * WordsPerChunk; w < (c + 1) * WordsPerChunk; w++)
            {
                count += BitOperations.PopCount(Volatile.Read(ref _pages[w]));
            }
        }

        return count;
    }

    /// <summary>
    /// Takes up to <paramref name="pfns"/>.Length marked pages at or after <paramref name="cursorPfn"/> (lowest
    /// first), unmarking them, and moves the cursor past the last word looked at. Returns how many; 0 when none is
    /// left after the cursor. Each mark is handed out once, even while hints clear bits concurrently.
    /// </summary>
    public int TakeMarked(ref ulong cursorPfn, Span<ulong> pfns)
    {
        ThrowIfDisposed();
        if (pfns.Length < 64)
        {
            throw new ArgumentException("Room for at least one word (64 pages) is needed.", nameof(pfns));
        }

        ulong word = cursorPfn <= FirstPfn ? 0 : (cursorPfn - FirstPfn) / 64;
        int n = 0;
        while (word < _pageWords && n + 64 <= pfns.Length)
        {
            ulong chunk = word / WordsPerChunk;
            ulong summary = Volatile.Read(ref _summary[chunk / 64]) >> (int)(chunk % 64);
            if (summary == 0)
            {
                word = (chunk / 64 + 1) * 64 * WordsPerChunk; // no marked chunk in the rest of this summary word
                continue;
            }

            if ((summary & 1) == 0)
            {
                word = (chunk + (ulong)BitOperations.TrailingZeroCount(summary)) * WordsPerChunk;
                continue;
            }

            ulong end = (chunk + 1) * WordsPerChunk;
            for (; word < end && n + 64 <= pfns.Length; word++)
            {
                if (Volatile.Read(ref _pages[word]) == 0)
                {
                    continue;
                }

                ulong bits = Interlocked.Exchange(ref _pages[word], 0);
                ulong basePfn = FirstPfn + (word * 64);
                while (bits != 0)
                {
                    pfns[n++] = basePfn + (ulong)BitOperations.TrailingZeroCount(bits);
                    bits &= bits - 1;
                }
            }
        }

        cursorPfn = FirstPfn + (word * 64);
        return n;
    }

    /// <summary>Unmarks the pages of <paramref name="range"/> (clipped to the bitmap): whole chunks through their summary bit.</summary>
    public void Clear(in GuestPageRange range)
    {
        if (range.FirstPfn >= FirstPfn + PageCount || range.EndPfn <= FirstPfn || range.PageCount == 0)
        {
            return;
        }

        ulong first = Math.Max(range.FirstPfn, FirstPfn) - FirstPfn;
        ulong end = Math.Min(range.EndPfn, FirstPfn + PageCount) - FirstPfn;
        ulong firstWholeChunk = (first + ChunkPages - 1) / ChunkPages;
        ulong endWholeChunk = end / ChunkPages;
        if (firstWholeChunk >= endWholeChunk)
        {
            ClearPages(first, end); // inside one chunk, or across the border of two
            return;
        }

        ClearPages(first, firstWholeChunk * ChunkPages);
        ClearChunks(firstWholeChunk, endWholeChunk);
        ClearPages(endWholeChunk * ChunkPages, end);
    }

    /// <summary>
    /// The hint sink: clears every hinted run. Whole, aligned 4 MiB chunks clear only their summary bits; the
    /// runs of one summary word (256 MiB) are gathered into one mask and written once, so consecutive runs do not
    /// wait on each other's store, and the mask is computed without a branch on the run's length (a fragmented
    /// guest's run lengths are random). Other runs go through <see cref="Clear"/>.
    /// </summary>
    public void OnFreePageHints(uint commandId, ReadOnlySpan<GuestPageRange> ranges)
    {
        ulong* summary = _summary;
        ulong firstPfn = FirstPfn;
        ulong pages = PageCount;
        bool wholeLastChunk = pages % ChunkPages == 0;
        ulong word = ulong.MaxValue; // the summary word being gathered
        ulong mask = 0;
        foreach (ref readonly GuestPageRange range in ranges)
        {
            ulong first = range.FirstPfn - firstPfn; // wraps below the bitmap: caught by first < pages
            ulong count = range.PageCount;
            if (((first | count) & (ChunkPages - 1)) == 0 && first < pages && count != 0 && count <= pages - first
                && (first + count < pages || wholeLastChunk))
            {
                ulong chunk = first / ChunkPages;
                ulong chunks = count / ChunkPages;
                int bit = (int)(chunk % 64);
                if ((ulong)bit + chunks <= 64)
                {
                    if (chunk / 64 != word)
                    {
                        Flush(summary, word, mask);
                        word = chunk / 64;
                        mask = 0;
                    }

                    mask |= (chunks >= 64 ? ulong.MaxValue : (1UL << (int)chunks) - 1) << bit;
                    continue;
                }

                Flush(summary, word, mask);
                word = ulong.MaxValue;
                mask = 0;
                ClearChunks(chunk, chunk + chunks);
                continue;
            }

            Clear(range);
        }

        Flush(summary, word, mask);

        // One hint thread at a time: a plain read-modify-write of the summary word.
        static void Flush(ulong* summary, ulong word, ulong mask)
        {
            if (mask != 0)
            {
                summary[word] &= ~mask;
            }
        }
    }

    /// <summary>
    /// Clears the summary bits <paramref name="mask"/> of summary word <paramref name="word"/> (chunks
    /// <c>64 * word + b</c>): the hint decoder's direct path, which gathers a word's 4 MiB hints before it writes.
    /// Only chunks below <see cref="WholeChunks"/> may be named. One hint thread at a time, like every hint clear.
    /// </summary>
    internal void ClearChunkWord(ulong word, ulong mask)
    {
        if (word < _summaryWords) // the decoder's window check keeps it inside; the pointer write stays checked anyway
        {
            Debug.Assert(mask == 0 || (word * 64) + (ulong)(63 - BitOperations.LeadingZeroCount(mask)) < WholeChunks, "whole chunks only");
            _summary[word] &= ~mask; // one hint thread at a time: a plain read-modify-write
        }
    }

    /// <summary>Releases the bitmap's memory.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        NativeRegion.Free((byte*)_pages, _pageBytes);
        NativeRegion.Free((byte*)_summary, _summaryBytes);
    }

    private static ulong RoundUp(ulong bytes) => Math.Max(NativeRegion.PageSize, (bytes + NativeRegion.PageSize - 1) / NativeRegion.PageSize * NativeRegion.PageSize);

    /// <summary>Clears summary bits of chunks [first, end): one hint thread at a time, so a plain store per word.</summary>
    private void ClearChunks(ulong first, ulong end)
    {
        if (end - first == 1)
        {
            ref ulong word = ref _summary[first / 64];
            word &= ~(1UL << (int)(first % 64)); // one hint thread at a time: a plain read-modify-write
            return;
        }

        while (first < end)
        {
            ulong word = first / 64;
            int bit = (int)(first % 64);
            int count = (int)Math.Min(64 - (ulong)bit, end - first);
            ulong mask = (count == 64 ? ulong.MaxValue : ((1UL << count) - 1)) << bit;
            ref ulong summary = ref _summary[word];
            ulong old = Volatile.Read(ref summary);
            if ((old & mask) != 0)
            {
                Volatile.Write(ref summary, old & ~mask);
            }

            first += (ulong)count;
        }
    }

    /// <summary>Clears page bits [first, end) (offsets from FirstPfn) in chunks whose summary bit is set.</summary>
    private void ClearPages(ulong first, ulong end)
    {
        while (first < end)
        {
            ulong chunk = first / ChunkPages;
            ulong chunkEnd = Math.Min(end, (chunk + 1) * ChunkPages);
            if ((Volatile.Read(ref _summary[chunk / 64]) & (1UL << (int)(chunk % 64))) != 0)
            {
                for (ulong p = first; p < chunkEnd;)
                {
                    int bit = (int)(p % 64);
                    int count = (int)Math.Min(64 - (ulong)bit, chunkEnd - p);
                    ulong mask = (count == 64 ? ulong.MaxValue : ((1UL << count) - 1)) << bit;
                    ref ulong page = ref _pages[p / 64];
                    if ((Volatile.Read(ref page) & mask) != 0)
                    {
                        Interlocked.And(ref page, ~mask);
                    }

                    p += (ulong)count;
                }
            }

            first = chunkEnd;
        }
    }

    private ulong CheckedIndex(ulong pfn)
    {
        ThrowIfDisposed();
        if (pfn < FirstPfn || pfn - FirstPfn >= PageCount)
        {
            throw new ArgumentOutOfRangeException(nameof(pfn), "The page is outside the bitmap.");
        }

        return pfn - FirstPfn;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}

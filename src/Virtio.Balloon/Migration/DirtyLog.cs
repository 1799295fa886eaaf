using System;
using System.Numerics;
using System.Threading;
using Virtio.Ring.Memory;

namespace Virtio.Balloon.Migration;

/// <summary>
/// A dirty page log, as KVM keeps one for a migration: every guest write marks its page, atomically, from any
/// thread; the migration's sync takes the marks (clearing them) into the round's <see cref="MigrationBitmap"/>.
/// <para>
/// <b>Ordering.</b> A writer marks after its write (<see cref="Mark"/> is a full fence), and the sync takes marks
/// with an atomic exchange (a full fence) before anything reads the pages: so a sender that saw a mark reads the
/// write that preceded it, and a write that lands after the sync took its page's mark leaves a new mark for the
/// next sync. No write is ever lost between rounds.
/// </para>
/// </summary>
public sealed unsafe class DirtyLog : IDisposable
{
    private readonly ulong* _words;
    private readonly ulong _wordCount;
    private readonly ulong _bytes;
    private bool _disposed;

    /// <summary>A log over <paramref name="pageCount"/> pages from <paramref name="firstPfn"/> (a multiple of 64).</summary>
    public DirtyLog(ulong firstPfn, ulong pageCount)
    {
        ArgumentOutOfRangeException.ThrowIfZero(pageCount);
        if (firstPfn % 64 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(firstPfn), "The first page must be a multiple of 64.");
        }

        FirstPfn = firstPfn;
        PageCount = pageCount;
        _wordCount = (pageCount + 63) / 64;
        _bytes = Math.Max(NativeRegion.PageSize, (_wordCount * 8 + NativeRegion.PageSize - 1) / NativeRegion.PageSize * NativeRegion.PageSize);
        _words = (ulong*)NativeRegion.Allocate(_bytes);
    }

    /// <summary>The first page frame number covered.</summary>
    public ulong FirstPfn { get; }

    /// <summary>Pages covered.</summary>
    public ulong PageCount { get; }

    /// <summary>Marks <paramref name="pfn"/> written (call after the write). Any thread.</summary>
    public void Mark(ulong pfn)
    {
        ulong index = pfn - FirstPfn;
        if (index >= PageCount)
        {
            throw new ArgumentOutOfRangeException(nameof(pfn), "The page is outside the log.");
        }

        ref ulong word = ref _words[index / 64];
        ulong bit = 1UL << (int)(index % 64);
        if ((Volatile.Read(ref word) & bit) == 0)
        {
            Interlocked.Or(ref word, bit);
        }
        else
        {
            Interlocked.MemoryBarrier(); // the write before it must still be ordered before a later sync's read
        }
    }

    /// <summary>Marks <paramref name="count"/> pages from <paramref name="pfn"/> written. Any thread.</summary>
    public void MarkRange(ulong pfn, ulong count)
    {
        ulong index = pfn - FirstPfn;
        if (index > PageCount || count > PageCount - index)
        {
            throw new ArgumentOutOfRangeException(nameof(pfn), "The pages are outside the log.");
        }

        ulong end = index + count;
        while (index < end)
        {
            int bit = (int)(index % 64);
            int n = (int)Math.Min(64 - (ulong)bit, end - index);
            ulong mask = (n == 64 ? ulong.MaxValue : ((1UL << n) - 1)) << bit;
            Interlocked.Or(ref _words[index / 64], mask);
            index += (ulong)n;
        }
    }

    /// <summary>Marks a byte range of guest physical addresses written (every page it touches).</summary>
    public void MarkBytes(ulong guestPhysicalAddress, ulong length)
    {
        if (length == 0)
        {
            return;
        }

        ulong first = guestPhysicalAddress >> 12;
        ulong last = (guestPhysicalAddress + length - 1) >> 12;
        MarkRange(first, last - first + 1);
    }

    /// <summary>True when <paramref name="pfn"/> is marked.</summary>
    public bool IsMarked(ulong pfn)
    {
        ulong index = pfn - FirstPfn;
        return index < PageCount && (Volatile.Read(ref _words[index / 64]) & (1UL << (int)(index % 64))) != 0;
    }

    /// <summary>
    /// The sync (KVM_GET_DIRTY_LOG with clear): takes every mark into <paramref name="bitmap"/> and clears it here.
    /// Returns the pages taken. Must not run while hints are being applied to <paramref name="bitmap"/>.
    /// </summary>
    public long SyncInto(MigrationBitmap bitmap)
    {
        ArgumentNullException.ThrowIfNull(bitmap);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (bitmap.FirstPfn != FirstPfn || bitmap.PageCount != PageCount)
        {
            throw new ArgumentException("The bitmap covers other pages than the log.", nameof(bitmap));
        }

        long pages = 0;
        for (ulong w = 0; w < _wordCount; w++)
        {
            if (Volatile.Read(ref _words[w]) == 0)
            {
                continue;
            }

            ulong bits = Interlocked.Exchange(ref _words[w], 0);
            bitmap.MarkWord(w, bits);
            pages += BitOperations.PopCount(bits);
        }

        return pages;
    }

    /// <summary>Pages marked now (a scan).</summary>
    public long CountMarked()
    {
        long count = 0;
        for (ulong w = 0; w < _wordCount; w++)
        {
            count += BitOperations.PopCount(Volatile.Read(ref _words[w]));
        }

        return count;
    }

    /// <summary>Releases the log's memory.</summary>
    public void Dispose()
    {
        if (!_disposed)
        {
            _disposed = true;
            NativeRegion.Free((byte*)_words, _bytes);
        }
    }
}

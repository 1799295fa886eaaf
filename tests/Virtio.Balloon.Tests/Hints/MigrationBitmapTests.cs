using System;
using System.Collections.Generic;
using System.Threading;
using Virtio.Balloon.Migration;

namespace Virtio.Balloon.Tests.Hints;

/// <summary>The migration bitmap's two levels and the dirty log, alone and with a sender and a hint clearer racing.</summary>
public sealed class MigrationBitmapTests
{
    [Fact]
    public void Mark_all_then_take_hands_out_every_page_once()
    {
        using var bitmap = new MigrationBitmap(0, 5000); // not a multiple of a chunk or a word
        bitmap.MarkAll();
        Assert.Equal(5000, bitmap.CountMarked());
        var seen = new bool[5000];
        foreach (ulong pfn in TakeAll(bitmap))
        {
            Assert.False(seen[pfn]);
            seen[pfn] = true;
        }

        Assert.DoesNotContain(false, seen);
        Assert.Equal(0, bitmap.CountMarked());
    }

    [Fact]
    public void Hints_clear_whole_chunks_through_the_summary_and_partial_ones_page_by_page()
    {
        using var bitmap = new MigrationBitmap(1024, 8 * 1024);
        bitmap.MarkAll();
        bitmap.Clear(new GuestPageRange(1024 + 1000, 3 * 1024));    // the tail of chunk 0, chunks 1 and 2, the head of chunk 3
        bitmap.Clear(new GuestPageRange(1024 + (6 * 1024) + 5, 1));  // one page
        bitmap.Clear(new GuestPageRange(0, 10));                     // outside: ignored
        var expected = new HashSet<ulong>();
        for (ulong p = 1024; p < 1024 + (8 * 1024); p++)
        {
            bool cleared = (p >= 1024 + 1000 && p < 1024 + 1000 + (3 * 1024)) || p == 1024 + (6 * 1024) + 5;
            if (!cleared)
            {
                expected.Add(p);
            }
        }

        Assert.Equal(expected.Count, bitmap.CountMarked());
        Assert.Equal(expected, new HashSet<ulong>(TakeAll(bitmap)));
    }

    [Fact]
    public void A_sync_into_a_hinted_chunk_does_not_resurrect_its_stale_page_bits()
    {
        using var bitmap = new MigrationBitmap(0, 4096);
        using var log = new DirtyLog(0, 4096);
        bitmap.MarkAll();
        bitmap.Clear(new GuestPageRange(1024, 1024)); // chunk 1, through its summary bit only
        Assert.Equal(3072, TakeAll(bitmap).Count);

        log.Mark(1500);
        Assert.Equal(1, log.SyncInto(bitmap));
        Assert.Equal([1500UL], TakeAll(bitmap));
        Assert.Equal(0, log.CountMarked());
    }

    /// <summary>
    /// Writers mark concurrently with syncs, a sender takes pages and a hint thread clears pages that were never
    /// written: at the end every written page was taken after its last write's mark. Nothing is lost.
    /// </summary>
    [Fact]
    public void Concurrent_marks_syncs_takes_and_hints_lose_no_written_page()
    {
        const ulong pages = 1 << 16;
        using var bitmap = new MigrationBitmap(0, pages);
        using var log = new DirtyLog(0, pages);
        long[] version = new long[pages];       // what the writer wrote last
        long[] sentVersion = new long[pages];   // what the sender saw when it took the page
        using var stop = new CancellationTokenSource();
        using var start = new Barrier(3);
        var writer = new Thread(() =>
        {
            var random = new Random(1);
            start.SignalAndWait(TimeSpan.FromSeconds(10));
            while (!stop.IsCancellationRequested)
            {
                ulong p = (ulong)random.Next((int)(pages / 2)); // the lower half is written; the upper half is "free"
                Interlocked.Increment(ref version[p]);           // the write ...
                log.Mark(p);                                     // ... then its mark
            }
        });
        var hinter = new Thread(() =>
        {
            var random = new Random(2);
            start.SignalAndWait(TimeSpan.FromSeconds(10));
            while (!stop.IsCancellationRequested)
            {
                ulong p = (pages / 2) + (ulong)random.Next((int)(pages / 2) - 1024);
                bitmap.Clear(new GuestPageRange(p, (ulong)random.Next(1, 1024)));
            }
        });
        writer.Start();
        hinter.Start();
        start.SignalAndWait(TimeSpan.FromSeconds(10));
        bitmap.MarkAll();
        var buffer = new ulong[512];
        for (int round = 0; round < 50; round++)
        {
            ulong cursor = 0;
            int n;
            while ((n = bitmap.TakeMarked(ref cursor, buffer)) > 0 || cursor < pages)
            {
                for (int i = 0; i < n; i++)
                {
                    sentVersion[buffer[i]] = Volatile.Read(ref version[buffer[i]]);
                }
            }

            SpinWait.SpinUntil(() => log.CountMarked() > 0, TimeSpan.FromSeconds(1)); // let the writer get ahead a little
            log.SyncInto(bitmap); // (the hint thread only touches the upper half, which is never written)
        }

        stop.Cancel();
        Assert.True(writer.Join(TimeSpan.FromSeconds(10)) && hinter.Join(TimeSpan.FromSeconds(10)));
        log.SyncInto(bitmap); // the final round, with the "guest" stopped
        foreach (ulong p in TakeAll(bitmap))
        {
            sentVersion[p] = version[p];
        }

        for (ulong p = 0; p < pages / 2; p++)
        {
            Assert.True(sentVersion[p] == version[p], $"page {p}: sent version {sentVersion[p]}, last written {version[p]}");
        }
    }

    private static List<ulong> TakeAll(MigrationBitmap bitmap)
    {
        var all = new List<ulong>();
        var buffer = new ulong[128];
        ulong cursor = 0;
        int n;
        while ((n = bitmap.TakeMarked(ref cursor, buffer)) > 0 || cursor < bitmap.FirstPfn + bitmap.PageCount)
        {
            all.AddRange(buffer.AsSpan(0, n).ToArray());
        }

        return all;
    }
}

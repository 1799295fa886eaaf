using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Threading;
using Virtio.Balloon.GuestAllocator;

namespace Virtio.Migration;

/// <summary>
/// The guest's workload while it migrates: at a fixed rate of written pages it allocates blocks (mostly small,
/// now and then up to 4 MiB, so it takes blocks the balloon just hinted), writes every page of them with seeded
/// contents, rewrites pages it owns, and frees blocks, keeping its footprint near a budget. Every write is
/// followed by its dirty mark.
/// </summary>
internal sealed class Workload
{
    private readonly SimulatedGuest _guest;
    private readonly MigrationOptions _options;
    private readonly PauseGate _gate;
    private readonly CancellationToken _stop;
    private readonly Thread _thread;
    private readonly List<(ulong Pfn, int Order)> _owned = [];
    private long _pagesWritten;
    private long _ownedPages;
    private ulong _version;

    public Workload(SimulatedGuest guest, MigrationOptions options, PauseGate gate, CancellationToken stop)
    {
        _guest = guest;
        _options = options;
        _gate = gate;
        _stop = stop;
        _thread = new Thread(Run) { IsBackground = true, Name = "guest workload" };
    }

    public long PagesWritten => Interlocked.Read(ref _pagesWritten);

    public void Start() => _thread.Start();

    public void Join() => _thread.Join(TimeSpan.FromSeconds(30));

    private void Run()
    {
        var random = new Random(_options.Seed ^ 0x5EED);
        long budget = Math.Max(1024, (long)(_options.GuestPages / 32)); // about 3% of the guest churns
        var clock = Stopwatch.StartNew();
        double perTick = _options.WorkloadPagesPerSecond / 1000.0;
        double owed = 0;
        long tick = 0;
        while (!_stop.IsCancellationRequested)
        {
            _gate.Checkpoint();
            owed += perTick;
            while (owed >= 1 && !_stop.IsCancellationRequested)
            {
                owed -= Step(random, budget);
            }

            // One tick a millisecond; sleep off what is left of it.
            tick++;
            long ahead = tick - clock.ElapsedMilliseconds;
            if (ahead > 0)
            {
                Thread.Sleep((int)Math.Min(ahead, 5));
            }
        }
    }

    /// <summary>One operation; returns the pages written.</summary>
    private int Step(Random random, long budget)
    {
        int dice = random.Next(100);
        if (_owned.Count > 0 && (_ownedPages > budget ? dice < 60 : dice < 15))
        {
            int at = random.Next(_owned.Count);
            (ulong pfn, int order) = _owned[at];
            _owned[at] = _owned[^1];
            _owned.RemoveAt(_owned.Count - 1);
            _ownedPages -= 1L << order;
            lock (_guest.Allocator.SyncRoot)
            {
                _guest.Allocator.Free(pfn, order); // freed memory keeps its contents: no write, no mark
            }

            return 0;
        }

        if (_owned.Count > 0 && dice < 45)
        {
            (ulong pfn, int order) = _owned[random.Next(_owned.Count)];
            ulong page = pfn + (ulong)random.NextInt64(1L << order);
            _guest.WritePage(page, ++_version);
            Interlocked.Increment(ref _pagesWritten);
            return 1;
        }

        int roll = random.Next(100);
        int blockOrder = roll < 70 ? random.Next(0, 3) : roll < 92 ? random.Next(3, 8) : random.Next(8, BuddyAllocator.MaxOrder + 1);
        ulong first;
        lock (_guest.Allocator.SyncRoot)
        {
            if (!_guest.Allocator.TryAllocate(blockOrder, out first))
            {
                return 1; // out of memory: count it as work so the loop moves on
            }
        }

        _owned.Add((first, blockOrder));
        _ownedPages += 1L << blockOrder;
        int pages = 1 << blockOrder;
        for (int i = 0; i < pages; i++)
        {
            _guest.WritePage(first + (ulong)i, ++_version); // a fresh allocation is written before use
        }

        Interlocked.Add(ref _pagesWritten, pages);
        return pages;
    }
}

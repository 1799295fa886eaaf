using System;
using System.Threading;

namespace Virtio.Balloon.Hints;

/// <summary>A sink that only counts what it receives (runs, pages, batches), for tests, benchmarks and dry runs. Thread-safe.</summary>
public sealed class CountingHintSink : IFreePageHintSink
{
    private long _ranges;
    private long _pages;
    private long _batches;
    private uint _lastCommandId;

    /// <summary>Runs received.</summary>
    public long Ranges => Interlocked.Read(ref _ranges);

    /// <summary>Pages received (4 KiB).</summary>
    public long Pages => Interlocked.Read(ref _pages);

    /// <summary>Calls received.</summary>
    public long Batches => Interlocked.Read(ref _batches);

    /// <summary>The command id of the last batch.</summary>
    public uint LastCommandId => Volatile.Read(ref _lastCommandId);

    /// <inheritdoc/>
    public void OnFreePageHints(uint commandId, ReadOnlySpan<GuestPageRange> ranges)
    {
        long pages = 0;
        foreach (GuestPageRange range in ranges)
        {
            pages += (long)range.PageCount;
        }

        Interlocked.Add(ref _ranges, ranges.Length);
        Interlocked.Add(ref _pages, pages);
        Interlocked.Increment(ref _batches);
        Volatile.Write(ref _lastCommandId, commandId);
    }

    /// <summary>Starts counting again from zero.</summary>
    public void Reset()
    {
        Interlocked.Exchange(ref _ranges, 0);
        Interlocked.Exchange(ref _pages, 0);
        Interlocked.Exchange(ref _batches, 0);
    }
}

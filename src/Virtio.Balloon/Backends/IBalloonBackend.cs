using System;

namespace Virtio.Balloon.Backends;

/// <summary>
/// What the balloon device does with the pages a guest gives up and takes back: the VMM's memory policy. The
/// device calls it on the thread that serves the queue, with runs that are validated (inside guest RAM),
/// sorted, de-duplicated and merged. Ranges are in 4 KiB guest pages whatever the host page size.
/// </summary>
public interface IBalloonBackend
{
    /// <summary>The guest put these pages in the balloon: the host may reclaim them (their contents are gone for good).</summary>
    void Inflate(ReadOnlySpan<GuestPageRange> ranges);

    /// <summary>The guest took these pages back out of the balloon: they must be usable again (zero-filled is fine).</summary>
    void Deflate(ReadOnlySpan<GuestPageRange> ranges);

    /// <summary>
    /// Free page reporting: the guest does not use these pages until it allocates them again. When
    /// <paramref name="preserveContents"/> is set (PAGE_POISON with a non-zero poison value), the guest relies on
    /// their contents (the poison pattern): a back end that would lose them (a discard that reads back zeros)
    /// must leave them alone.
    /// </summary>
    void Report(ReadOnlySpan<GuestPageRange> ranges, bool preserveContents);

    /// <summary>The device was reset: the guest's balloon is empty again (every inflated page is the guest's).</summary>
    void Reset();
}

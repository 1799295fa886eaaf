using System;
using System.Net;
using Virtio.Balloon.Hints;
using Virtio.Ring;
using Virtio.Ring.Transport;

namespace Virtio.Migration;

/// <summary>One seeded migration scenario: the guest, its workload, the balloon's hinting, and the migration's limits.</summary>
public sealed record MigrationOptions
{
    /// <summary>Guest RAM in bytes (a multiple of 4 MiB).</summary>
    public ulong GuestBytes { get; init; } = 2UL << 30;

    /// <summary>The fraction of guest pages allocated before the migration starts.</summary>
    public double AllocatedFraction { get; init; } = 0.25;

    /// <summary>How fragmented the allocations are (0: whole 4 MiB blocks; 1: every block cut up).</summary>
    public double Fragmentation { get; init; } = 0.5;

    /// <summary>Pages the workload writes per second while the migration runs (0: an idle guest).</summary>
    public int WorkloadPagesPerSecond { get; init; } = 20_000;

    /// <summary>The order of the hinted free blocks (10 = 4 MiB .. 0 = 4 KiB).</summary>
    public int HintOrder { get; init; } = 10;

    /// <summary>The hint protocol of both sides.</summary>
    public FreePageHintProtocol Protocol { get; init; } = FreePageHintProtocol.HintArrays;

    /// <summary>The ring format of every balloon queue.</summary>
    public VirtqueueFormat Ring { get; init; } = VirtqueueFormat.Split;

    /// <summary>Entries per queue.</summary>
    public int QueueSize { get; init; } = 256;

    /// <summary>The seed of the allocator's fragmentation, the workload and the page contents.</summary>
    public int Seed { get; init; } = 42;

    /// <summary>Precopy rounds at most before the stop-and-copy.</summary>
    public int MaxRounds { get; init; } = 10;

    /// <summary>When set, exactly this many precopy rounds (tests); otherwise rounds run until the rest fits the downtime target.</summary>
    public int? FixedRounds { get; init; }

    /// <summary>The stop-and-copy budget the precopy converges to, at the bandwidth measured so far.</summary>
    public TimeSpan DowntimeTarget { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>The migration's bandwidth limit in bytes per second (QEMU's <c>max-bandwidth</c>); 0: none.</summary>
    public long MaxBandwidth { get; init; }

    /// <summary>How the balloon device is served (a VMM's device thread by default).</summary>
    public QueueThreading DeviceThreading { get; init; } = QueueThreading.WorkerPerQueue;

    /// <summary>Where the destination runs; null starts one in this process on a loopback port.</summary>
    public IPEndPoint? Destination { get; init; }

    /// <summary>
    /// TEST ONLY, deliberately wrong: hints are held back and applied to the next round's bitmap after its dirty-log
    /// sync, as a VMM that does not stop the report before syncing would. The integrity check must catch it.
    /// </summary>
    public bool UnsafeApplyHintsAfterSync { get; init; }

    /// <summary>Guest pages.</summary>
    public ulong GuestPages => GuestBytes / 4096;

    /// <summary>Throws when an option is out of range.</summary>
    public void Validate()
    {
        if (GuestBytes < (16UL << 20) || GuestBytes % (4UL << 20) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(GuestBytes), "The guest is at least 16 MiB and a multiple of 4 MiB.");
        }

        if (AllocatedFraction is < 0 or > 0.9 || Fragmentation is < 0 or > 1)
        {
            throw new ArgumentOutOfRangeException(nameof(AllocatedFraction), "Allocated 0..0.9, fragmentation 0..1.");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(WorkloadPagesPerSecond);
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxRounds, 1);
        if (HintOrder is < 0 or > 10)
        {
            throw new ArgumentOutOfRangeException(nameof(HintOrder), "0..10.");
        }
    }
}

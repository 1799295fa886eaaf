using System.Collections.Generic;

namespace Virtio.Migration;

/// <summary>One precopy round.</summary>
/// <param name="Round">1-based.</param>
/// <param name="PagesSent">Pages sent in the round.</param>
/// <param name="BytesSent">Bytes that crossed the socket in the round.</param>
/// <param name="Milliseconds">Wall time of the round (send and sync).</param>
/// <param name="HintedPages">Pages the balloon hinted during the round.</param>
/// <param name="DirtiedPages">Pages the dirty-log sync at the end of the round found written.</param>
/// <param name="RemainingPages">Pages marked for the next round after the sync.</param>
public sealed record RoundResult(int Round, long PagesSent, long BytesSent, double Milliseconds, long HintedPages, long DirtiedPages, long RemainingPages);

/// <summary>One migration of the scenario, with or without free page hints.</summary>
public sealed record MigrationResult
{
    /// <summary>Whether free page hints were requested.</summary>
    public required bool Hints { get; init; }

    /// <summary>The hint protocol.</summary>
    public required string Protocol { get; init; }

    /// <summary>The ring format.</summary>
    public required string Ring { get; init; }

    /// <summary>The hint order.</summary>
    public required int HintOrder { get; init; }

    /// <summary>Guest RAM in bytes.</summary>
    public required ulong GuestBytes { get; init; }

    /// <summary>Pages the guest had allocated at the end (the integrity check's set).</summary>
    public long AllocatedPagesAtEnd { get; init; }

    /// <summary>The precopy rounds.</summary>
    public required IReadOnlyList<RoundResult> Rounds { get; init; }

    /// <summary>Pages sent in all (precopy and stop-and-copy).</summary>
    public long PagesSent { get; init; }

    /// <summary>Migration bytes that crossed the socket (headers and pages).</summary>
    public long BytesSent { get; init; }

    /// <summary>Migration bytes the destination counted (must equal <see cref="BytesSent"/>).</summary>
    public long BytesReceived { get; init; }

    /// <summary>Pages sent with the guest paused.</summary>
    public long StopAndCopyPages { get; init; }

    /// <summary>Bytes sent with the guest paused.</summary>
    public long StopAndCopyBytes { get; init; }

    /// <summary>The guest's downtime: from pausing it to the last page sent.</summary>
    public double DowntimeMilliseconds { get; init; }

    /// <summary>From the first round to the end of the stop-and-copy.</summary>
    public double TotalMilliseconds { get; init; }

    /// <summary>Reports the driver answered.</summary>
    public long HintReports { get; init; }

    /// <summary>Free blocks hinted.</summary>
    public long HintBlocks { get; init; }

    /// <summary>Pages hinted (applied to the round's bitmap).</summary>
    public long HintedPages { get; init; }

    /// <summary>Hint blocks per second of report time.</summary>
    public double HintsPerSecond { get; init; }

    /// <summary>Mean time from the request (new command id) to the driver's STOP, as the device saw it.</summary>
    public double ReportLatencyMilliseconds { get; init; }

    /// <summary>Pages the workload wrote while the migration ran.</summary>
    public long WorkloadPagesWritten { get; init; }

    /// <summary>Pages the destination compared.</summary>
    public long PagesVerified { get; init; }

    /// <summary>Pages whose contents differ between source and destination.</summary>
    public long Mismatches { get; init; }

    /// <summary>The first differing page, if any.</summary>
    public ulong? FirstMismatch { get; init; }

    /// <summary>Blocks the driver still held after DONE (the standard protocol must give them all back).</summary>
    public long HintedPagesHeldAfterDone { get; init; }

    /// <summary>Why the balloon device needed a reset, if it did (a broken queue, say); null when it never faulted.</summary>
    public string? DeviceFault { get; init; }

    /// <summary>True when every allocated page arrived intact.</summary>
    public bool IntegrityOk => Mismatches == 0 && PagesVerified == AllocatedPagesAtEnd;
}

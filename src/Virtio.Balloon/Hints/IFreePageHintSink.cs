using System;

namespace Virtio.Balloon.Hints;

/// <summary>
/// Where the balloon device sends free page hints: validated, coalesced runs of guest pages that the guest said
/// were free while the report with <c>commandId</c> ran. A live migration clears them from the current round's
/// bitmap (<see cref="Migration.MigrationBitmap"/>).
/// <para>
/// A hint is only a hint: the guest may allocate and write a hinted page at any moment (in the original protocol
/// the blocks even stay on its free lists), so a sink must never discard or zero hinted memory.
/// </para>
/// <para>
/// Called on the thread that serves the hint queue, never concurrently with itself for one device, and never after
/// <c>BalloonDevice.StopFreePageHints</c> (or a new request, or DONE) has returned for that report. A sink must not
/// call those methods itself.
/// </para>
/// </summary>
public interface IFreePageHintSink
{
    /// <summary>Receives a batch of hinted runs (each inside guest RAM, block-aligned, at least one page).</summary>
    void OnFreePageHints(uint commandId, ReadOnlySpan<GuestPageRange> ranges);
}

using System.Runtime.CompilerServices;
using System.Threading;

namespace Virtio.Ring.Internal;

/// <summary>
/// A device queue's <see cref="VirtqueueCounters"/> as they are kept: plain fields inside the format's padded hot
/// state, beside the used-side fields they follow (a line away they cost 5-7 % on a publish-per-buffer round trip),
/// written by the serving thread only and read by anyone. Every update checks <see cref="RingCounting.Enabled"/>, a
/// constant to the optimizing JIT, so <c>MetricsSupport=false</c> removes the counting.
/// </summary>
internal struct QueueCounts
{
    public long UsedBuffers;
    public long UsedBytes;
    public long NotificationsSent;
    public long NotificationsSuppressed;
    public long NotificationsReceived;

    /// <summary>Buffers made used (at a publish where the ring knows the batch, or per push) and the bytes the used elements carry.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Used(long buffers, uint bytes)
    {
        if (RingCounting.Enabled)
        {
            UsedBuffers += buffers;
            UsedBytes += bytes;
        }
    }

    /// <summary>An interrupt decision: sent or suppressed, counted without a branch on the driver's choice.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Decision(bool notify)
    {
        if (RingCounting.Enabled)
        {
            int sent = notify ? 1 : 0;
            NotificationsSent += sent;
            NotificationsSuppressed += 1 - sent;
        }
    }

    /// <summary>Available-buffer notifications served.</summary>
    public void Received(ulong notifications)
    {
        if (RingCounting.Enabled)
        {
            NotificationsReceived += (long)notifications;
        }
    }

    /// <summary>The counts now, each read once (any thread).</summary>
    public readonly VirtqueueCounters Snapshot() => new(
        Volatile.Read(in UsedBuffers),
        Volatile.Read(in UsedBytes),
        Volatile.Read(in NotificationsSent),
        Volatile.Read(in NotificationsSuppressed),
        Volatile.Read(in NotificationsReceived));
}

using System;
using System.Collections.Generic;

namespace Virtio.Balloon.Device;

/// <summary>
/// The last memory statistics a guest sent (VIRTIO 1.2, 5.5.6.3), with when they arrived. Tags the device does
/// not know are kept as they came, not refused: newer guests add tags.
/// </summary>
public sealed class BalloonStatistics
{
    private readonly ulong[] _values;
    private readonly uint _present;

    internal BalloonStatistics(DateTimeOffset updatedAt, ulong[] values, uint present, IReadOnlyList<KeyValuePair<ushort, ulong>> unknown)
    {
        UpdatedAt = updatedAt;
        _values = values;
        _present = present;
        UnknownTags = unknown;
    }

    /// <summary>When the buffer arrived.</summary>
    public DateTimeOffset UpdatedAt { get; }

    /// <summary>Tags 16 and above, raw, in the order they came (the last value of a repeated tag).</summary>
    public IReadOnlyList<KeyValuePair<ushort, ulong>> UnknownTags { get; }

    /// <summary>Free memory in bytes, if the guest sent it.</summary>
    public ulong? FreeMemory => Get(BalloonStatTag.FreeMemory);

    /// <summary>Total memory in bytes, if the guest sent it.</summary>
    public ulong? TotalMemory => Get(BalloonStatTag.TotalMemory);

    /// <summary>Available memory in bytes, if the guest sent it.</summary>
    public ulong? AvailableMemory => Get(BalloonStatTag.AvailableMemory);

    /// <summary>The value of <paramref name="tag"/>, or null when the guest did not send it.</summary>
    public ulong? Get(BalloonStatTag tag) =>
        (ushort)tag < 16 && (_present & (1u << (ushort)tag)) != 0 ? _values[(ushort)tag] : null;
}

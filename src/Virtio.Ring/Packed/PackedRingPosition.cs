using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Virtio.Ring.Packed;

/// <summary>
/// Arithmetic on packed-ring positions (a slot index and its wrap counter, 2.8.1), shared by the driver and the
/// device. A packed queue's size need not be a power of 2, so indices wrap with a compare, not a mask.
/// </summary>
internal static class PackedRingPosition
{
    /// <summary>
    /// Slots from <paramref name="behind"/> forward to <paramref name="ahead"/>: a whole lap more when the wrap
    /// counters differ. The position ahead never leads by more than Q (the slots between are in flight, 2.8.21),
    /// so positions and counters are enough; no count needs to be kept.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int SlotsBetween(ushort behind, bool behindWrap, ushort ahead, bool aheadWrap, int queueSize) =>
        ahead - behind + (aheadWrap != behindWrap ? queueSize : 0);

    /// <summary>An index into a ring of Q entries from a sum of two indices below Q.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int WrapIndex(int index, int queueSize)
    {
        Debug.Assert((uint)index < 2u * (uint)queueSize, "a sum of two ring indices");
        return index >= queueSize ? index - queueSize : index;
    }
}

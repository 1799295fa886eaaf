namespace Virtio.Ring.Packed;

/// <summary>
/// A buffer the device side of a packed queue holds (popped, not yet used), as saved in a
/// <see cref="PackedQueueState"/>: its buffer ID and how many ring slots its descriptor list occupied, which the
/// used descriptor must skip (2.8.6, 2.8.21).
/// </summary>
/// <param name="Id">The buffer ID.</param>
/// <param name="Slots">Ring slots the list occupied (1 for an indirect or one-descriptor buffer).</param>
public readonly record struct PackedInFlightBuffer(ushort Id, ushort Slots);

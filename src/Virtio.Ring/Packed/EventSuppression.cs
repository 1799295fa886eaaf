using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Packed;

/// <summary>
/// <c>struct pvirtq_event_suppress</c> (VIRTIO 1.2, 2.8.14 "Event Suppression Structure Format"): 4 bytes,
/// 4-byte aligned. <c>le16 desc</c> holds the event offset (bits 0-14) and wrap counter (bit 15);
/// <c>le16 flags</c> holds ENABLE (0), DISABLE (1) or DESC (2, only with EVENT_IDX). The driver area holds the
/// driver's structure (read by the device), the device area the device's (read by the driver). Each side writes
/// its structure as one aligned 32-bit store and reads the other's as one 32-bit load, so a reader never sees
/// <c>desc</c> and <c>flags</c> from two different writes.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct EventSuppression
{
    /// <summary>Size in bytes.</summary>
    public const int Size = 4;

    /// <summary><c>RING_EVENT_FLAGS_ENABLE</c>: notify on every change.</summary>
    public const ushort FlagsEnable = 0;

    /// <summary><c>RING_EVENT_FLAGS_DISABLE</c>: do not notify.</summary>
    public const ushort FlagsDisable = 1;

    /// <summary><c>RING_EVENT_FLAGS_DESC</c>: notify when the descriptor named by <see cref="Descriptor"/> changes.</summary>
    public const ushort FlagsDesc = 2;

    [FieldOffset(0)] private ushort _desc;
    [FieldOffset(2)] private ushort _flags;

    /// <summary>Creates the structure from host-order values.</summary>
    public EventSuppression(ushort offset, bool wrapCounter, ushort flags)
    {
        Unsafe.SkipInit(out this);
        Descriptor = Encode(offset, wrapCounter);
        Flags = flags;
    }

    /// <summary>The raw <c>desc</c> field: offset | wrap &lt;&lt; 15.</summary>
    public ushort Descriptor
    {
        readonly get => Le.From(_desc);
        set => _desc = Le.From(value);
    }

    /// <summary>Event offset (ring slot).</summary>
    public readonly ushort Offset => (ushort)(Descriptor & 0x7FFF);

    /// <summary>Event wrap counter.</summary>
    public readonly bool WrapCounter => (Descriptor & 0x8000) != 0;

    /// <summary>ENABLE, DISABLE or DESC.</summary>
    public ushort Flags
    {
        readonly get => Le.From(_flags);
        set => _flags = Le.From(value);
    }

    /// <summary>Packs an offset and wrap counter into the <c>desc</c> field.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort Encode(ushort offset, bool wrapCounter) => (ushort)(offset | (wrapCounter ? 0x8000 : 0));

    /// <summary>
    /// The packed-ring notification test (VIRTIO 1.2, 2.8.10 and 2.8.21.2): after advancing a ring position by
    /// <paramref name="advanced"/> slots to <paramref name="position"/> under <paramref name="wrapCounter"/>, was
    /// the slot named by <paramref name="eventDescriptor"/> passed? An event in the other lap is moved one ring
    /// length back so that <see cref="EventIndex.NeedsNotification"/> works in one linear 16-bit frame.
    /// </summary>
    internal static bool NeedsNotification(ushort eventDescriptor, ushort position, bool wrapCounter, int advanced, int queueSize)
    {
        int offset = eventDescriptor & 0x7FFF;
        if (((eventDescriptor & 0x8000) != 0) != wrapCounter)
        {
            offset -= queueSize;
        }

        return EventIndex.NeedsNotification((ushort)offset, position, (ushort)(position - advanced));
    }
}

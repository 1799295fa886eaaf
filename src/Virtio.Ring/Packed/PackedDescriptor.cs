using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Packed;

/// <summary>
/// One slot of a packed virtqueue's descriptor ring, <c>struct pvirtq_desc</c> (VIRTIO 1.2, 2.8.13 "The
/// Virtqueue Descriptor Format"): <c>le64 addr; le32 len; le16 id; le16 flags;</c>, 16 bytes, 16-byte aligned
/// ring. The same layout serves available descriptors (driver-written), used descriptors (device-written) and
/// indirect table entries. The fields hold wire (little-endian) bytes; the properties convert.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct PackedDescriptor
{
    /// <summary>Size of one descriptor in bytes.</summary>
    public const int Size = 16;

    /// <summary>Offset of <c>len</c>.</summary>
    public const int LengthOffset = 8;

    /// <summary>Offset of <c>id</c>.</summary>
    public const int IdOffset = 12;

    /// <summary>Offset of <c>flags</c>.</summary>
    public const int FlagsOffset = 14;

    /// <summary><c>VIRTQ_DESC_F_NEXT</c>: the buffer continues in the next ring slot.</summary>
    public const ushort FlagNext = 1;

    /// <summary><c>VIRTQ_DESC_F_WRITE</c>: device write-only element; in a used descriptor, data was written.</summary>
    public const ushort FlagWrite = 2;

    /// <summary><c>VIRTQ_DESC_F_INDIRECT</c>: the element is a table of packed descriptors (2.8.7).</summary>
    public const ushort FlagIndirect = 4;

    /// <summary><c>VIRTQ_DESC_F_AVAIL</c> (1 &lt;&lt; 7).</summary>
    public const ushort FlagAvail = 1 << 7;

    /// <summary><c>VIRTQ_DESC_F_USED</c> (1 &lt;&lt; 15).</summary>
    public const ushort FlagUsed = 1 << 15;

    [FieldOffset(0)] private ulong _addr;
    [FieldOffset(8)] private uint _len;
    [FieldOffset(12)] private ushort _id;
    [FieldOffset(14)] private ushort _flags;

    /// <summary>Creates a descriptor from host-order values.</summary>
    public PackedDescriptor(ulong address, uint length, ushort id, ushort flags)
    {
        Unsafe.SkipInit(out this);
        Address = address;
        Length = length;
        Id = id;
        Flags = flags;
    }

    /// <summary>Element address (unused in a used descriptor).</summary>
    public ulong Address
    {
        readonly get => Le.From(_addr);
        set => _addr = Le.From(value);
    }

    /// <summary>Element length; in a used descriptor, the bytes the device wrote.</summary>
    public uint Length
    {
        readonly get => Le.From(_len);
        set => _len = Le.From(value);
    }

    /// <summary>Buffer ID (meaningful in the last descriptor of a list and in used descriptors).</summary>
    public ushort Id
    {
        readonly get => Le.From(_id);
        set => _id = Le.From(value);
    }

    /// <summary>NEXT, WRITE, INDIRECT, AVAIL, USED.</summary>
    public ushort Flags
    {
        readonly get => Le.From(_flags);
        set => _flags = Le.From(value);
    }

    /// <summary>The AVAIL/USED bits that mark a descriptor available under a driver wrap counter.</summary>
    public static ushort AvailableBits(bool wrapCounter) => wrapCounter ? FlagAvail : FlagUsed;

    /// <summary>The AVAIL/USED bits that mark a descriptor used under a device wrap counter.</summary>
    public static ushort UsedBits(bool wrapCounter) => wrapCounter ? (ushort)(FlagAvail | FlagUsed) : (ushort)0;

    /// <summary>True when <paramref name="flags"/> mark an available descriptor for <paramref name="wrapCounter"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsAvailable(ushort flags, bool wrapCounter) =>
        (flags & (FlagAvail | FlagUsed)) == AvailableBits(wrapCounter);

    /// <summary>True when <paramref name="flags"/> mark a used descriptor for <paramref name="wrapCounter"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsUsed(ushort flags, bool wrapCounter) =>
        (flags & (FlagAvail | FlagUsed)) == UsedBits(wrapCounter);
}

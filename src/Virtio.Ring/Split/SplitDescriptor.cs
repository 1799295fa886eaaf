using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Split;

/// <summary>
/// One entry of a split virtqueue's descriptor table, <c>struct virtq_desc</c> (VIRTIO 1.x, 2.7.5 "The Virtqueue
/// Descriptor Table"): <c>le64 addr; le32 len; le16 flags; le16 next;</c>, 16 bytes, 16-byte aligned table.
/// The fields hold wire (little-endian) bytes; the properties convert. Copying the struct out of guest memory is
/// the single read of a descriptor that validation and use both work from.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct SplitDescriptor
{
    /// <summary>Size of one descriptor in bytes.</summary>
    public const int Size = 16;

    /// <summary>Byte offset of the little-endian 32-bit length.</summary>
    public const int LengthOffset = 8;

    /// <summary>Byte offset of the little-endian 16-bit flags.</summary>
    public const int FlagsOffset = 12;

    /// <summary>Byte offset of the little-endian 16-bit next index.</summary>
    public const int NextOffset = 14;

    /// <summary><c>VIRTQ_DESC_F_NEXT</c>: the buffer continues via <see cref="Next"/>.</summary>
    public const ushort FlagNext = 1;

    /// <summary><c>VIRTQ_DESC_F_WRITE</c>: the buffer is device write-only (otherwise device read-only).</summary>
    public const ushort FlagWrite = 2;

    /// <summary><c>VIRTQ_DESC_F_INDIRECT</c>: the buffer holds a table of descriptors (2.7.5.3).</summary>
    public const ushort FlagIndirect = 4;

    [FieldOffset(0)] private ulong _addr;
    [FieldOffset(LengthOffset)] private uint _len;
    [FieldOffset(FlagsOffset)] private ushort _flags;
    [FieldOffset(NextOffset)] private ushort _next;

    /// <summary>Creates a descriptor from host-order values.</summary>
    public SplitDescriptor(ulong address, uint length, ushort flags, ushort next)
    {
        Unsafe.SkipInit(out this);
        Address = address;
        Length = length;
        Flags = flags;
        Next = next;
    }

    /// <summary>Guest physical address of the buffer.</summary>
    public ulong Address
    {
        readonly get => Le.From(_addr);
        set => _addr = Le.From(value);
    }

    /// <summary>Length of the buffer in bytes.</summary>
    public uint Length
    {
        readonly get => Le.From(_len);
        set => _len = Le.From(value);
    }

    /// <summary><see cref="FlagNext"/>, <see cref="FlagWrite"/>, <see cref="FlagIndirect"/>.</summary>
    public ushort Flags
    {
        readonly get => Le.From(_flags);
        set => _flags = Le.From(value);
    }

    /// <summary>Index of the next descriptor when <see cref="FlagNext"/> is set.</summary>
    public ushort Next
    {
        readonly get => Le.From(_next);
        set => _next = Le.From(value);
    }
}

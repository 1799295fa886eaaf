using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Split;

/// <summary>
/// One entry of the used ring, <c>struct virtq_used_elem</c> (VIRTIO 1.x, 2.7.8 "The Virtqueue Used Ring"):
/// <c>le32 id; le32 len;</c>, 8 bytes. <c>id</c> is the head index of the used chain (u32 for padding reasons);
/// <c>len</c> the number of bytes the device wrote into the chain's device-writable buffers.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct UsedElement
{
    /// <summary>Size of one element in bytes.</summary>
    public const int Size = 8;

    [FieldOffset(0)] private uint _id;
    [FieldOffset(4)] private uint _len;

    /// <summary>Creates an element from host-order values.</summary>
    public UsedElement(uint id, uint length)
    {
        Unsafe.SkipInit(out this);
        Id = id;
        Length = length;
    }

    /// <summary>Head descriptor index of the used chain.</summary>
    public uint Id
    {
        readonly get => Le.From(_id);
        set => _id = Le.From(value);
    }

    /// <summary>Bytes written into the chain's device-writable buffers.</summary>
    public uint Length
    {
        readonly get => Le.From(_len);
        set => _len = Le.From(value);
    }
}

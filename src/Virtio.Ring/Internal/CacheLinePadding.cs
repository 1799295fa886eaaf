using System.Runtime.InteropServices;

namespace Virtio.Ring.Internal;

/// <summary>
/// 128 bytes of nothing. Placed before and after a side's hot private state so that no other object, and no
/// field written by the other side, shares its cache lines: 64-byte lines on x86-64 with adjacent-line
/// prefetch, and 128-byte lines on some ARM64 parts, make 128 the safe distance.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = Size)]
internal struct CacheLinePadding
{
    /// <summary>Bytes of padding.</summary>
    public const int Size = 128;

    private byte _first; // a struct needs a field; Size makes it 128 bytes
}

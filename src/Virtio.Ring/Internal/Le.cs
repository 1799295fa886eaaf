using System;
using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Virtio.Ring.Internal;

/// <summary>Host order to and from little-endian wire order; a no-op the JIT removes on little-endian hosts.</summary>
internal static class Le
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort From(ushort v) => BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint From(uint v) => BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong From(ulong v) => BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);
}

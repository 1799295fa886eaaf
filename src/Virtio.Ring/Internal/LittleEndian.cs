using System.Runtime.CompilerServices;
using System.Threading;

namespace Virtio.Ring.Internal;

/// <summary>
/// Reads and writes of the spec's little-endian fields (VIRTIO 1.x, 1.4 "Structure Specifications": every
/// multi-byte ring field is le16/le32/le64) through raw pointers into guest memory.
/// <para>
/// On a little-endian host the conversions fold away (<see cref="System.BitConverter.IsLittleEndian"/> is a JIT-time
/// constant). Plain accessors tolerate unaligned addresses; the <c>Volatile*</c> accessors need natural
/// alignment, which ring layout validation guarantees for every index and flags field they are used on.
/// </para>
/// </summary>
internal static unsafe class LittleEndian
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort Read16(byte* p) => Le.From(Unsafe.ReadUnaligned<ushort>(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Read32(byte* p) => Le.From(Unsafe.ReadUnaligned<uint>(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Read64(byte* p) => Le.From(Unsafe.ReadUnaligned<ulong>(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write16(byte* p, ushort value) => Unsafe.WriteUnaligned(p, Le.From(value));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write32(byte* p, uint value) => Unsafe.WriteUnaligned(p, Le.From(value));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write64(byte* p, ulong value) => Unsafe.WriteUnaligned(p, Le.From(value));

    /// <summary>Acquire load of an aligned le16: no later load or store moves before it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort VolatileRead16(byte* p) => Le.From(Volatile.Read(ref Unsafe.AsRef<ushort>(p)));

    /// <summary>Release store of an aligned le16: no earlier load or store moves after it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void VolatileWrite16(byte* p, ushort value) => Volatile.Write(ref Unsafe.AsRef<ushort>(p), Le.From(value));

    /// <summary>Acquire load of an aligned le32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint VolatileRead32(byte* p) => Le.From(Volatile.Read(ref Unsafe.AsRef<uint>(p)));

    /// <summary>Release store of an aligned le32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void VolatileWrite32(byte* p, uint value) => Volatile.Write(ref Unsafe.AsRef<uint>(p), Le.From(value));
}

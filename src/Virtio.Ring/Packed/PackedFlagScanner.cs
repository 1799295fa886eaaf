using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Threading;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Packed;

/// <summary>
/// Reads the flags of up to four consecutive packed descriptors (one 64-byte cache line) at once and reports how
/// many of them, from the first, are available under a wrap counter. The device uses it to learn about a run of
/// available descriptors with one load instead of one per descriptor; the flags it returns are the single read
/// of each descriptor's flags that validation then works from.
/// <para>
/// Three paths give identical results: Vector512 (one 64-byte load), Vector256 (two 32-byte loads) and scalar
/// (one acquire load per descriptor). The vector paths are taken only where the hardware accelerates them.
/// </para>
/// <para>
/// Ordering: the scalar path's loads are acquire loads. A vector load has no acquire form, so on anything but
/// x86/x64 (whose TSO model never reorders a load with a later load) a full barrier follows it: the descriptors'
/// other fields and buffers are read after the flags that made them available, on ARM64 as on x86-64.
/// </para>
/// </summary>
internal static unsafe class PackedFlagScanner
{
    /// <summary>Most descriptors one scan looks at: a 64-byte cache line.</summary>
    public const int MaxRun = 4;

    private const ushort WrapBits = PackedDescriptor.FlagAvail | PackedDescriptor.FlagUsed;

    /// <summary>
    /// How many slots ahead of its next slot the device prefetches the descriptor ring: a quarter of the ring, at
    /// most 32 slots (8 cache lines), in whole lines. A driver that keeps the ring full wrote those lines long ago,
    /// so fetching them early overlaps a cross-core transfer (60 to 330 ns round trip on the machines we measure)
    /// with the work on the lines before them. Measured with benchmarks/ringtest-compare.sh: 2 lines ahead gave a
    /// median 1.2-1.3 times ringtest's <c>ring</c>, 8 lines about 1.0. The driver does not prefetch used lines:
    /// when it reaps close behind the device, such a prefetch takes a line the device is still writing, and in
    /// that placement it doubled our time per buffer (docs/PERFORMANCE.md).
    /// </summary>
    public static int PrefetchSlots(int queueSize) => Math.Min(32, queueSize / 4) & ~(MaxRun - 1);

    /// <summary>
    /// Scans <paramref name="count"/> (1 to 4) descriptors from <paramref name="first"/>; returns how many leading
    /// ones are available and packs their flags into <paramref name="flags"/> (16 bits each, first in the low bits).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Scan(byte* first, int count, bool wrap, out ulong flags)
    {
        Debug.Assert(count is >= 1 and <= MaxRun, "one cache line at most");
        if (count == MaxRun)
        {
            if (Vector512.IsHardwareAccelerated)
            {
                return ScanVector512(first, wrap, out flags);
            }

            if (Vector256.IsHardwareAccelerated)
            {
                return ScanVector256(first, wrap, out flags);
            }
        }

        return ScanScalar(first, count, wrap, out flags);
    }

    public static int ScanScalar(byte* first, int count, bool wrap, out ulong flags)
    {
        ushort expected = PackedDescriptor.AvailableBits(wrap);
        flags = 0;
        int n = 0;
        for (; n < count; n++)
        {
            ushort f = LittleEndian.VolatileRead16(first + (n * PackedDescriptor.Size) + PackedDescriptor.FlagsOffset);
            if ((f & WrapBits) != expected)
            {
                break;
            }

            flags |= (ulong)f << (16 * n);
        }

        return n;
    }

    public static int ScanVector512(byte* first, bool wrap, out ulong flags)
    {
        Vector512<ushort> line = Vector512.Load((ushort*)first);
        AcquireAfterVectorLoad();

        // Each descriptor's flags are its 16-bit lane 7; gather lanes 7, 15, 23, 31 into the low four lanes.
        Vector512<ushort> picked = Vector512.Shuffle(line, Vector512.Create((ushort)7, 15, 23, 31, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
        return Finish(picked.AsUInt64().ToScalar(), wrap, out flags);
    }

    public static int ScanVector256(byte* first, bool wrap, out ulong flags)
    {
        Vector256<ushort> low = Vector256.Load((ushort*)first);
        Vector256<ushort> high = Vector256.Load((ushort*)(first + 32));
        AcquireAfterVectorLoad();
        ulong packed = low.GetElement(7)
            | ((ulong)low.GetElement(15) << 16)
            | ((ulong)high.GetElement(7) << 32)
            | ((ulong)high.GetElement(15) << 48);
        return Finish(packed, wrap, out flags);
    }

    /// <summary>Counts leading available descriptors in four packed flags words and keeps only theirs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Finish(ulong packedLe, bool wrap, out ulong flags)
    {
        ulong packed = BitConverter.IsLittleEndian ? packedLe : SwapLanes(packedLe);
        const ulong wrapMask = 0x8080_8080_8080_8080UL; // AVAIL (bit 7) and USED (bit 15) of each 16-bit lane
        ulong expected = wrap ? 0x0080_0080_0080_0080UL : 0x8000_8000_8000_8000UL;
        ulong mismatch = (packed & wrapMask) ^ expected;

        // The first lane with a mismatch ends the run; a run of 4 has no mismatch.
        int n = mismatch == 0 ? MaxRun : BitOperations.TrailingZeroCount(mismatch) / 16;
        flags = n == MaxRun ? packed : packed & ((1UL << (16 * n)) - 1);
        return n;
    }

    private static ulong SwapLanes(ulong v) =>
        ((v & 0x00FF_00FF_00FF_00FFUL) << 8) | ((v >> 8) & 0x00FF_00FF_00FF_00FFUL);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AcquireAfterVectorLoad()
    {
        if (!X86Base.IsSupported)
        {
            Interlocked.MemoryBarrier();
        }
    }
}

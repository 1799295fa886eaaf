using System;
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Virtio.Balloon.Hints;

/// <summary>
/// Packs page frame numbers into the balloon's wire arrays: le64 guest physical addresses (the hint arrays of the
/// original free page hinting patch, and be64 for a big-endian legacy peer) and le32 PFNs (inflate and deflate
/// requests). The hint path moves up to 4 MiB arrays per report, so it runs at memory speed: Vector512, Vector256
/// or Vector128 where the hardware accelerates them, a scalar loop for the rest, with identical output (the tests
/// compare every width against <see cref="PackAddressesScalar"/> and <see cref="PackPfnsLe32Scalar"/>).
/// </summary>
public static class HintPacking
{
    /// <summary>The page shift: a PFN is a guest physical address divided by 4096.</summary>
    public const int PageShift = 12;

    /// <summary>
    /// Writes <c>pfns[i] &lt;&lt; 12</c> as a 64-bit address in <paramref name="destination"/> (8 bytes each),
    /// little-endian, or big-endian when <paramref name="bigEndian"/> is set. Returns the bytes written.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is shorter than 8 bytes per PFN.</exception>
    public static int PackAddresses(ReadOnlySpan<ulong> pfns, Span<byte> destination, bool bigEndian = false)
    {
        int bytes = checked(pfns.Length * 8);
        if (destination.Length < bytes)
        {
            throw new ArgumentException("The destination holds fewer than 8 bytes per PFN.", nameof(destination));
        }

        // On a little-endian host le64 is the native layout and be64 a byte swap; on a big-endian host the reverse.
        bool swap = bigEndian == BitConverter.IsLittleEndian;
        ref ulong source = ref MemoryMarshal.GetReference(pfns);
        ref byte target = ref MemoryMarshal.GetReference(destination);
        int i = 0;
        int n = pfns.Length;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<byte> reverse = Vector512.Create(ReverseEachUInt64Bytes512());
            for (; i + Vector512<ulong>.Count <= n; i += Vector512<ulong>.Count)
            {
                Vector512<ulong> v = Vector512.LoadUnsafe(ref source, (nuint)i) << PageShift;
                Vector512<byte> b = swap ? Vector512.Shuffle(v.AsByte(), reverse) : v.AsByte();
                b.StoreUnsafe(ref target, (nuint)i * 8);
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<byte> reverse = Vector256.Create(ReverseEachUInt64Bytes512()[..32]);
            for (; i + Vector256<ulong>.Count <= n; i += Vector256<ulong>.Count)
            {
                Vector256<ulong> v = Vector256.LoadUnsafe(ref source, (nuint)i) << PageShift;
                Vector256<byte> b = swap ? Vector256.Shuffle(v.AsByte(), reverse) : v.AsByte();
                b.StoreUnsafe(ref target, (nuint)i * 8);
            }
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            Vector128<byte> reverse = Vector128.Create(ReverseEachUInt64Bytes512()[..16]);
            for (; i + Vector128<ulong>.Count <= n; i += Vector128<ulong>.Count)
            {
                Vector128<ulong> v = Vector128.LoadUnsafe(ref source, (nuint)i) << PageShift;
                Vector128<byte> b = swap ? Vector128.Shuffle(v.AsByte(), reverse) : v.AsByte();
                b.StoreUnsafe(ref target, (nuint)i * 8);
            }
        }

        PackAddressesScalar(pfns[i..], destination[(i * 8)..], bigEndian);
        return bytes;
    }

    /// <summary>The scalar reference of <see cref="PackAddresses"/> (and its tail).</summary>
    public static void PackAddressesScalar(ReadOnlySpan<ulong> pfns, Span<byte> destination, bool bigEndian = false)
    {
        for (int i = 0; i < pfns.Length; i++)
        {
            ulong address = pfns[i] << PageShift;
            if (bigEndian)
            {
                BinaryPrimitives.WriteUInt64BigEndian(destination[(8 * i)..], address);
            }
            else
            {
                BinaryPrimitives.WriteUInt64LittleEndian(destination[(8 * i)..], address);
            }
        }
    }

    /// <summary>
    /// Writes each PFN as le32 (the inflate and deflate arrays, VIRTIO 1.2, 5.5.6) into <paramref name="destination"/>
    /// (4 bytes each) and returns the bytes written. PFNs must fit 32 bits (guests below 16 TiB).
    /// </summary>
    /// <exception cref="ArgumentException">The destination is too short, or a PFN does not fit 32 bits.</exception>
    public static int PackPfnsLe32(ReadOnlySpan<ulong> pfns, Span<byte> destination)
    {
        int bytes = checked(pfns.Length * 4);
        if (destination.Length < bytes)
        {
            throw new ArgumentException("The destination holds fewer than 4 bytes per PFN.", nameof(destination));
        }

        ref ulong source = ref MemoryMarshal.GetReference(pfns);
        ref byte target = ref MemoryMarshal.GetReference(destination);
        int i = 0;
        int n = pfns.Length;
        ulong high = 0; // any bit above 31 in any PFN
        if (BitConverter.IsLittleEndian)
        {
            if (Vector256.IsHardwareAccelerated)
            {
                Vector256<ulong> over = Vector256<ulong>.Zero;
                for (; i + (2 * Vector256<ulong>.Count) <= n; i += 2 * Vector256<ulong>.Count)
                {
                    Vector256<ulong> lo = Vector256.LoadUnsafe(ref source, (nuint)i);
                    Vector256<ulong> hi = Vector256.LoadUnsafe(ref source, (nuint)(i + Vector256<ulong>.Count));
                    over |= (lo | hi) >> 32;
                    Vector256.Narrow(lo, hi).AsByte().StoreUnsafe(ref target, (nuint)i * 4);
                }

                high |= over[0] | over[1] | over[2] | over[3];
            }
            else if (Vector128.IsHardwareAccelerated)
            {
                Vector128<ulong> over = Vector128<ulong>.Zero;
                for (; i + (2 * Vector128<ulong>.Count) <= n; i += 2 * Vector128<ulong>.Count)
                {
                    Vector128<ulong> lo = Vector128.LoadUnsafe(ref source, (nuint)i);
                    Vector128<ulong> hi = Vector128.LoadUnsafe(ref source, (nuint)(i + Vector128<ulong>.Count));
                    over |= (lo | hi) >> 32;
                    Vector128.Narrow(lo, hi).AsByte().StoreUnsafe(ref target, (nuint)i * 4);
                }

                high |= over[0] | over[1];
            }
        }

        for (; i < n; i++)
        {
            ulong pfn = Unsafe.Add(ref source, i);
            high |= pfn >> 32;
            BinaryPrimitives.WriteUInt32LittleEndian(destination[(4 * i)..], (uint)pfn);
        }

        if (high != 0)
        {
            throw new ArgumentException("A PFN does not fit the balloon's 32-bit page frame numbers.", nameof(pfns));
        }

        return bytes;
    }

    /// <summary>The scalar reference of <see cref="PackPfnsLe32"/>.</summary>
    public static void PackPfnsLe32Scalar(ReadOnlySpan<ulong> pfns, Span<byte> destination)
    {
        for (int i = 0; i < pfns.Length; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(destination[(4 * i)..], checked((uint)pfns[i]));
        }
    }

    /// <summary>Shuffle indices that reverse the bytes of each 8-byte lane, for 64 bytes (the first 32 or 16 for narrower vectors).</summary>
    internal static ReadOnlySpan<byte> ReverseEachUInt64Bytes512() =>
    [
        7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8,
        23, 22, 21, 20, 19, 18, 17, 16, 31, 30, 29, 28, 27, 26, 25, 24,
        39, 38, 37, 36, 35, 34, 33, 32, 47, 46, 45, 44, 43, 42, 41, 40,
        55, 54, 53, 52, 51, 50, 49, 48, 63, 62, 61, 60, 59, 58, 57, 56,
    ];
}

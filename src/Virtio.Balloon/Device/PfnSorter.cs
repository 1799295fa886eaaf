using System;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Virtio.Balloon.Device;

/// <summary>
/// Sorts a request's page frame numbers (at most a few hundred 32-bit keys) faster than a general-purpose
/// sort, which is what the inflate path spends its time on when a guest gives back tens of GiB.
/// <para>
/// <b>How.</b> Three cheap exits first, each one vectorized pass: already ascending (a driver that sorts, or a
/// run of contiguous pages), strictly descending (reversed in place), and short arrays (insertion sort). The
/// rest goes through an LSD radix sort on 8-bit digits that skips every digit position in which all keys agree
/// (found by AND- and OR-reducing the keys): PFNs of a guest below 64 GiB never vary in their top byte, and a
/// request that stays inside a 1 GiB window varies in only two digits. A pass is one histogram and one stable
/// scatter over the keys, with no comparison and so no misprediction.
/// </para>
/// </summary>
internal static class PfnSorter
{
    private const int InsertionSortLimit = 24;

    /// <summary>Sorts <paramref name="keys"/> ascending; <paramref name="scratch"/> is at least as long.</summary>
    public static void Sort(Span<uint> keys, Span<uint> scratch)
    {
        Debug.Assert(scratch.Length >= keys.Length, "scratch as long as the keys");
        int n = keys.Length;
        if (n < 2)
        {
            return;
        }

        Order order = Classify(keys, out uint and, out uint or);
        if (order == Order.Ascending)
        {
            return;
        }

        if (order == Order.Descending)
        {
            keys.Reverse();
            return;
        }

        if (n <= InsertionSortLimit)
        {
            InsertionSort(keys);
            return;
        }

        RadixSort(keys, scratch[..n], and ^ or);
    }

    /// <summary>The stable LSD radix sort on the 8-bit digits in which some keys differ.</summary>
    private static void RadixSort(Span<uint> keys, Span<uint> scratch, uint varying)
    {
        Span<int> offsets = stackalloc int[256];
        Span<uint> source = keys;
        Span<uint> target = scratch;
        for (int shift = 0; shift < 32; shift += 8)
        {
            if (((varying >> shift) & 0xFF) == 0)
            {
                continue; // every key has the same digit here: the pass would not move anything
            }

            offsets.Clear();
            ref int counts = ref MemoryMarshal.GetReference(offsets);
            foreach (uint key in source)
            {
                Unsafe.Add(ref counts, (int)((key >> shift) & 0xFF))++;
            }

            int sum = 0;
            for (int digit = 0; digit < 256; digit++)
            {
                int count = Unsafe.Add(ref counts, digit);
                Unsafe.Add(ref counts, digit) = sum;
                sum += count;
            }

            ref uint destination = ref MemoryMarshal.GetReference(target);
            foreach (uint key in source)
            {
                ref int slot = ref Unsafe.Add(ref counts, (int)((key >> shift) & 0xFF));
                Unsafe.Add(ref destination, slot++) = key;
            }

            Span<uint> swap = source;
            source = target;
            target = swap;
        }

        if (!Unsafe.AreSame(ref MemoryMarshal.GetReference(source), ref MemoryMarshal.GetReference(keys)))
        {
            source.CopyTo(keys);
        }
    }

    private static void InsertionSort(Span<uint> keys)
    {
        for (int i = 1; i < keys.Length; i++)
        {
            uint key = keys[i];
            int j = i - 1;
            while (j >= 0 && keys[j] > key)
            {
                keys[j + 1] = keys[j];
                j--;
            }

            keys[j + 1] = key;
        }
    }

    private enum Order
    {
        Unordered,
        Ascending,
        Descending,
    }

    /// <summary>
    /// One pass: whether the keys are ascending (non-strictly) or strictly descending, and the AND and OR of all
    /// keys. Vector256 or Vector128 where accelerated (identical results to the scalar loop at the tail).
    /// </summary>
    private static Order Classify(ReadOnlySpan<uint> keys, out uint and, out uint or)
    {
        int n = keys.Length;
        bool ascending = true;
        bool descending = true;
        int i = 0;
        and = uint.MaxValue;
        or = 0;
        ref uint first = ref MemoryMarshal.GetReference(keys);
        if (Vector256.IsHardwareAccelerated && n > Vector256<uint>.Count)
        {
            Vector256<uint> andV = Vector256<uint>.AllBitsSet;
            Vector256<uint> orV = Vector256<uint>.Zero;
            for (; i + Vector256<uint>.Count < n; i += Vector256<uint>.Count)
            {
                Vector256<uint> current = Vector256.LoadUnsafe(ref first, (nuint)i);
                Vector256<uint> next = Vector256.LoadUnsafe(ref first, (nuint)(i + 1));
                andV &= current;
                orV |= current;
                ascending &= !Vector256.GreaterThanAny(current, next);
                descending &= Vector256.GreaterThanAll(current, next);
            }

            for (int lane = 0; lane < Vector256<uint>.Count; lane++)
            {
                and &= andV.GetElement(lane);
                or |= orV.GetElement(lane);
            }
        }
        else if (Vector128.IsHardwareAccelerated && n > Vector128<uint>.Count)
        {
            Vector128<uint> andV = Vector128<uint>.AllBitsSet;
            Vector128<uint> orV = Vector128<uint>.Zero;
            for (; i + Vector128<uint>.Count < n; i += Vector128<uint>.Count)
            {
                Vector128<uint> current = Vector128.LoadUnsafe(ref first, (nuint)i);
                Vector128<uint> next = Vector128.LoadUnsafe(ref first, (nuint)(i + 1));
                andV &= current;
                orV |= current;
                ascending &= !Vector128.GreaterThanAny(current, next);
                descending &= Vector128.GreaterThanAll(current, next);
            }

            for (int lane = 0; lane < Vector128<uint>.Count; lane++)
            {
                and &= andV.GetElement(lane);
                or |= orV.GetElement(lane);
            }
        }

        for (; i < n; i++)
        {
            uint current = Unsafe.Add(ref first, i);
            and &= current;
            or |= current;
            if (i + 1 < n)
            {
                uint next = Unsafe.Add(ref first, i + 1);
                ascending &= current <= next;
                descending &= current > next;
            }
        }

        return ascending ? Order.Ascending : descending ? Order.Descending : Order.Unordered;
    }
}

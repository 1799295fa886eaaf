using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Virtio.Balloon.Device;

/// <summary>
/// Sorts a request's page frame numbers (at most a few thousand 32-bit keys, 256 from Linux) faster than a
/// general-purpose sort, which is what the inflate path spends its time on when a guest gives back tens of GiB.
/// <para>
/// <b>How.</b> One vectorized pass finds the keys' minimum and maximum and whether they are already ascending
/// (a driver that sorts, or a run of contiguous pages) or strictly descending (a run handed out from a LIFO free
/// list: reversed in place). Otherwise the keys are distributed by value into 256 buckets spanning
/// [min, max] (a histogram, a prefix sum and one stable scatter: no comparisons, so no mispredictions): random
/// PFNs land about one per bucket, and a clustered request (a freed block with a few stragglers) lands with
/// buckets narrower than a page apart, which is a counting sort. Small buckets are finished by insertion sort;
/// a crowded bucket is sorted the same way on its own (narrower) range, so skewed inputs stay O(n) per level and
/// at most four levels deep (each level narrows the range by 2^8).
/// </para>
/// </summary>
internal static class PfnSorter
{
    private const int Buckets = 256;
    private const int InsertionSortLimit = 16;

    /// <summary>Sorts <paramref name="keys"/> ascending; <paramref name="scratch"/> is at least as long.</summary>
    public static void Sort(Span<uint> keys, Span<uint> scratch)
    {
        Debug.Assert(scratch.Length >= keys.Length, "scratch as long as the keys");
        if (keys.Length < 2)
        {
            return;
        }

        Order order = Classify(keys, out uint min, out uint max);
        if (order == Order.Ascending)
        {
            return;
        }

        if (order == Order.Descending)
        {
            keys.Reverse();
            return;
        }

        if (BucketSortInto(keys, scratch[..keys.Length], min, max))
        {
            scratch[..keys.Length].CopyTo(keys);
        }
    }

    /// <summary>
    /// Sorts <paramref name="keys"/>, all within [<paramref name="min"/>, <paramref name="max"/>], using
    /// <paramref name="scratch"/> (as long). Returns true when the sorted keys are in <paramref name="scratch"/>
    /// (the usual case: a caller that only reads them skips a copy), false when they are in
    /// <paramref name="keys"/>.
    /// </summary>
    [SkipLocalsInit]
    internal static bool BucketSortInto(Span<uint> keys, Span<uint> scratch, uint min, uint max)
    {
        if (keys.Length <= InsertionSortLimit)
        {
            InsertionSort(keys);
            return false;
        }

        if (max == min)
        {
            return false; // all equal
        }

        int shift = Math.Max(0, 32 - BitOperations.LeadingZeroCount(max - min) - 8); // (range >> shift) < 256
        Span<int> ends = stackalloc int[Buckets];
        int largest = Scatter(keys, scratch, min, max, shift, ends);
        if (largest <= InsertionSortLimit)
        {
            // Every key is at most a small bucket away from its place: one insertion pass over the whole array
            // finishes the sort, with branches that fail only inside a bucket (no per-bucket loop to mispredict).
            InsertionSort(scratch);
            return true;
        }

        // A crowded bucket (skewed keys): finish bucket by bucket. After the scatter ends[b] is where bucket b stops.
        int start = 0;
        for (int bucket = 0; bucket < Buckets; bucket++)
        {
            int end = ends[bucket];
            if (end - start > 1)
            {
                // The bucket's keys lie in [low, low + 2^shift - 1] (and never above max): a range 2^8 times
                // narrower, so the recursion ends after at most four levels. Its slice of keys is free scratch now.
                uint low = min + ((uint)bucket << shift);
                uint high = (uint)Math.Min((ulong)low + (1UL << shift) - 1, max);
                Span<uint> slice = scratch[start..end];
                if (BucketSortInto(slice, keys[start..end], low, high))
                {
                    keys[start..end].CopyTo(slice); // it finished in its scratch: bring it back
                }
            }

            start = end;
        }

        return true;
    }

    /// <summary>
    /// Distributes <paramref name="keys"/> into 256 value buckets of width 2^<paramref name="shift"/> from
    /// <paramref name="min"/>, stably, into <paramref name="scratch"/>: a histogram, a prefix sum and one scatter,
    /// no comparisons. <paramref name="ends"/> receives where each bucket stops; returns the largest bucket.
    /// </summary>
    private static int Scatter(ReadOnlySpan<uint> keys, Span<uint> scratch, uint min, uint max, int shift, Span<int> ends)
    {
        ends.Clear();
        ref int counts = ref MemoryMarshal.GetReference(ends);
        foreach (uint key in keys)
        {
            Debug.Assert(key >= min && key <= max && ((key - min) >> shift) < Buckets, "every key inside [min, max]");
            Unsafe.Add(ref counts, (int)((key - min) >> shift))++;
        }

        int sum = 0;
        int largest = 0;
        for (int bucket = 0; bucket < Buckets; bucket++)
        {
            int count = Unsafe.Add(ref counts, bucket);
            Unsafe.Add(ref counts, bucket) = sum;
            sum += count;
            largest = Math.Max(largest, count);
        }

        ref uint destination = ref MemoryMarshal.GetReference(scratch);
        foreach (uint key in keys)
        {
            ref int slot = ref Unsafe.Add(ref counts, (int)((key - min) >> shift));
            Unsafe.Add(ref destination, slot++) = key;
        }

        return largest;
    }

    private static void InsertionSort(Span<uint> keys)
    {
        ref uint first = ref MemoryMarshal.GetReference(keys);
        for (int i = 1; i < keys.Length; i++)
        {
            uint key = Unsafe.Add(ref first, i);
            int j = i - 1;
            while (j >= 0 && Unsafe.Add(ref first, j) > key)
            {
                Unsafe.Add(ref first, j + 1) = Unsafe.Add(ref first, j);
                j--;
            }

            Unsafe.Add(ref first, j + 1) = key;
        }
    }

    internal enum Order
    {
        Unordered,
        Ascending,
        Descending,
    }

    /// <summary>
    /// One pass: whether the keys are ascending (non-strictly) or strictly descending, and their minimum and
    /// maximum. Vector512, Vector256 or Vector128 where accelerated; the scalar loop finishes the tail, with
    /// identical results.
    /// </summary>
    internal static Order Classify(ReadOnlySpan<uint> keys, out uint min, out uint max)
    {
        int n = keys.Length;
        bool ascending = true;
        bool descending = true;
        int i = 0;
        min = uint.MaxValue;
        max = 0;
        ref uint first = ref MemoryMarshal.GetReference(keys);
        if (Vector512.IsHardwareAccelerated && n > Vector512<uint>.Count)
        {
            Vector512<uint> minV = Vector512<uint>.AllBitsSet;
            Vector512<uint> maxV = Vector512<uint>.Zero;
            for (; i + Vector512<uint>.Count < n; i += Vector512<uint>.Count)
            {
                Vector512<uint> current = Vector512.LoadUnsafe(ref first, (nuint)i);
                Vector512<uint> next = Vector512.LoadUnsafe(ref first, (nuint)(i + 1));
                minV = Vector512.Min(minV, current);
                maxV = Vector512.Max(maxV, current);
                ascending &= !Vector512.GreaterThanAny(current, next);
                descending &= Vector512.GreaterThanAll(current, next);
            }

            for (int lane = 0; lane < Vector512<uint>.Count; lane++)
            {
                min = Math.Min(min, minV.GetElement(lane));
                max = Math.Max(max, maxV.GetElement(lane));
            }
        }
        else if (Vector256.IsHardwareAccelerated && n > Vector256<uint>.Count)
        {
            Vector256<uint> minV = Vector256<uint>.AllBitsSet;
            Vector256<uint> maxV = Vector256<uint>.Zero;
            for (; i + Vector256<uint>.Count < n; i += Vector256<uint>.Count)
            {
                Vector256<uint> current = Vector256.LoadUnsafe(ref first, (nuint)i);
                Vector256<uint> next = Vector256.LoadUnsafe(ref first, (nuint)(i + 1));
                minV = Vector256.Min(minV, current);
                maxV = Vector256.Max(maxV, current);
                ascending &= !Vector256.GreaterThanAny(current, next);
                descending &= Vector256.GreaterThanAll(current, next);
            }

            for (int lane = 0; lane < Vector256<uint>.Count; lane++)
            {
                min = Math.Min(min, minV.GetElement(lane));
                max = Math.Max(max, maxV.GetElement(lane));
            }
        }
        else if (Vector128.IsHardwareAccelerated && n > Vector128<uint>.Count)
        {
            Vector128<uint> minV = Vector128<uint>.AllBitsSet;
            Vector128<uint> maxV = Vector128<uint>.Zero;
            for (; i + Vector128<uint>.Count < n; i += Vector128<uint>.Count)
            {
                Vector128<uint> current = Vector128.LoadUnsafe(ref first, (nuint)i);
                Vector128<uint> next = Vector128.LoadUnsafe(ref first, (nuint)(i + 1));
                minV = Vector128.Min(minV, current);
                maxV = Vector128.Max(maxV, current);
                ascending &= !Vector128.GreaterThanAny(current, next);
                descending &= Vector128.GreaterThanAll(current, next);
            }

            for (int lane = 0; lane < Vector128<uint>.Count; lane++)
            {
                min = Math.Min(min, minV.GetElement(lane));
                max = Math.Max(max, maxV.GetElement(lane));
            }
        }

        for (; i < n; i++)
        {
            uint current = Unsafe.Add(ref first, i);
            min = Math.Min(min, current);
            max = Math.Max(max, current);
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

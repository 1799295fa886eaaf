using System;
using System.Diagnostics;
using System.Numerics;

namespace Virtio.Balloon.Device;

/// <summary>
/// Turns one request's page frame numbers into sorted, de-duplicated runs of contiguous pages: the inflate
/// path from the PFN array to what the back end is given.
/// <para>
/// <b>How.</b> One vectorized pass (<see cref="PfnSorter.Classify"/>) gives the minimum, the maximum and whether
/// the array is already ascending or strictly descending; those merge straight away. A clustered request (its
/// span of pages at most 64 times its length, as a block freed by the guest gives) goes through a bitmap: one bit
/// set per PFN, then the runs are read off the bitmap a word at a time, so sorting, de-duplicating and merging
/// are one O(n) pass with no comparison at all. A scattered request is sorted by <see cref="PfnSorter"/> and
/// merged.
/// </para>
/// </summary>
internal static class PfnRunBuilder
{
    /// <summary>Bitmap words a builder for <paramref name="maxPfns"/> PFNs needs.</summary>
    public static int BitmapWords(int maxPfns) => maxPfns + 1;

    /// <summary>
    /// Builds the runs of <paramref name="pfns"/> (which it may reorder, and whose <paramref name="scratch"/> it may
    /// leave sorted) into <paramref name="ranges"/> and returns
    /// how many; <paramref name="min"/> and <paramref name="max"/> bound them all. <paramref name="scratch"/> is as
    /// long as the PFNs, <paramref name="bitmap"/> has <see cref="BitmapWords"/> words, <paramref name="ranges"/> as
    /// many entries as PFNs.
    /// </summary>
    public static int Build(Span<uint> pfns, Span<uint> scratch, Span<ulong> bitmap, Span<GuestPageRange> ranges, out uint min, out uint max)
    {
        min = 0;
        max = 0;
        if (pfns.IsEmpty)
        {
            return 0;
        }

        PfnSorter.Order order = PfnSorter.Classify(pfns, out min, out max);
        if (order == PfnSorter.Order.Descending)
        {
            pfns.Reverse();
        }
        else if (order != PfnSorter.Order.Ascending)
        {
            ulong span = (ulong)max - min + 1;
            if (span <= 64UL * (ulong)(bitmap.Length - 1))
            {
                return FromBitmap(pfns, bitmap, ranges, min, span);
            }

            if (PfnSorter.BucketSortInto(pfns, scratch[..pfns.Length], min, max))
            {
                return PageRangeMerger.Merge(scratch[..pfns.Length], ranges); // sorted in place of the scratch
            }
        }

        return PageRangeMerger.Merge(pfns, ranges);
    }

    /// <summary>Sets a bit per PFN over [min, min + span), then reads the runs off the words.</summary>
    private static int FromBitmap(ReadOnlySpan<uint> pfns, Span<ulong> bitmap, Span<GuestPageRange> ranges, uint min, ulong span)
    {
        int words = (int)((span + 63) / 64);
        Span<ulong> bits = bitmap[..words];
        bits.Clear();
        // Neighbouring PFNs share a word: collect a word's bits in a register and store it once, instead of a
        // read-modify-write per PFN that would wait on the previous one's store.
        int current = (int)((pfns[0] - min) >> 6);
        ulong accumulated = 0;
        foreach (uint pfn in pfns)
        {
            uint offset = pfn - min;
            int word = (int)(offset >> 6);
            if (word != current)
            {
                bits[current] |= accumulated;
                current = word;
                accumulated = 0;
            }

            accumulated |= 1UL << (int)(offset & 63);
        }

        bits[current] |= accumulated;

        int count = 0;
        bool inRun = false;
        ulong runStart = 0;
        for (int w = 0; w < words; w++)
        {
            ulong word = bits[w];
            int bit = 0;
            while (bit < 64)
            {
                if (!inRun)
                {
                    ulong ones = bit == 0 ? word : word >> bit;
                    if (ones == 0)
                    {
                        break; // no run starts in the rest of this word
                    }

                    bit += BitOperations.TrailingZeroCount(ones);
                    runStart = ((ulong)w * 64) + (ulong)bit;
                    inRun = true;
                }
                else
                {
                    ulong zeros = bit == 0 ? ~word : ~word >> bit;
                    if (zeros == 0)
                    {
                        break; // the run goes on into the next word
                    }

                    bit += BitOperations.TrailingZeroCount(zeros);
                    ulong end = ((ulong)w * 64) + (ulong)bit;
                    ranges[count++] = new GuestPageRange(min + runStart, end - runStart);
                    inRun = false;
                }
            }
        }

        if (inRun)
        {
            ranges[count++] = new GuestPageRange(min + runStart, (ulong)words * 64 - runStart);
        }

        Debug.Assert(count <= pfns.Length, "at most one run per PFN");
        return count;
    }
}

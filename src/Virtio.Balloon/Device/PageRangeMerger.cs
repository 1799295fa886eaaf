using System;
using System.Diagnostics;

namespace Virtio.Balloon.Device;

/// <summary>Turns sorted page frame numbers into runs of contiguous pages, dropping duplicates.</summary>
internal static class PageRangeMerger
{
    /// <summary>
    /// Merges ascending <paramref name="sortedPfns"/> into <paramref name="ranges"/> (at least as long) and returns
    /// how many runs there are: duplicates collapse, neighbours join.
    /// </summary>
    public static int Merge(ReadOnlySpan<uint> sortedPfns, Span<GuestPageRange> ranges)
    {
        Debug.Assert(ranges.Length >= sortedPfns.Length, "one run per PFN at most");
        if (sortedPfns.IsEmpty)
        {
            return 0;
        }

        int count = 0;
        ulong start = sortedPfns[0];
        ulong end = start + 1;
        for (int i = 1; i < sortedPfns.Length; i++)
        {
            ulong pfn = sortedPfns[i];
            if (pfn < end)
            {
                continue; // a duplicate (the keys are sorted, so pfn == end - 1)
            }

            if (pfn == end)
            {
                end++;
                continue;
            }

            ranges[count++] = new GuestPageRange(start, end - start);
            start = pfn;
            end = pfn + 1;
        }

        ranges[count++] = new GuestPageRange(start, end - start);
        return count;
    }
}

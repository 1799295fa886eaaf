using System;
using System.Collections.Generic;
using Virtio.Ring;

namespace Virtio.Balloon.Device;

/// <summary>
/// Guest RAM as runs of whole 4 KiB pages (the regions of a <see cref="GuestMemory"/>, adjacent ones joined), to
/// check that a page frame number the guest sent is RAM before anything is done with it.
/// </summary>
internal sealed class GuestRamMap
{
    private readonly ulong[] _starts;
    private readonly ulong[] _ends;

    public GuestRamMap(GuestMemory memory)
    {
        var starts = new List<ulong>();
        var ends = new List<ulong>();
        foreach (GuestRegionInfo region in memory.Regions)
        {
            ulong first = (region.GuestPhysicalAddress + 4095) >> 12; // whole pages only
            ulong end = region.EndAddress >> 12;
            if (end <= first)
            {
                continue;
            }

            if (ends.Count > 0 && ends[^1] == first)
            {
                ends[^1] = end;
            }
            else
            {
                starts.Add(first);
                ends.Add(end);
            }
        }

        _starts = [.. starts];
        _ends = [.. ends];
    }

    /// <summary>Pages of RAM in all.</summary>
    public ulong TotalPages
    {
        get
        {
            ulong total = 0;
            for (int i = 0; i < _starts.Length; i++)
            {
                total += _ends[i] - _starts[i];
            }

            return total;
        }
    }

    /// <summary>The longest run of RAM (first PFN, one past the last), or (0, 0) when there is none: the window the vectorized hint check uses.</summary>
    public (ulong FirstPfn, ulong EndPfn) LargestRun
    {
        get
        {
            (ulong, ulong) best = (0, 0);
            for (int i = 0; i < _starts.Length; i++)
            {
                if (_ends[i] - _starts[i] > best.Item2 - best.Item1)
                {
                    best = (_starts[i], _ends[i]);
                }
            }

            return best;
        }
    }

    /// <summary>True when every page of the run is RAM.</summary>
    public bool Contains(in GuestPageRange range)
    {
        if (range.PageCount == 0 || range.FirstPfn > ulong.MaxValue - range.PageCount)
        {
            return false;
        }

        int lo = 0;
        int hi = _starts.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (range.FirstPfn < _starts[mid])
            {
                hi = mid - 1;
            }
            else if (range.FirstPfn >= _ends[mid])
            {
                lo = mid + 1;
            }
            else
            {
                return range.EndPfn <= _ends[mid];
            }
        }

        return false;
    }

    /// <summary>True when every run is RAM.</summary>
    public bool ContainsAll(ReadOnlySpan<GuestPageRange> ranges)
    {
        foreach (GuestPageRange range in ranges)
        {
            if (!Contains(range))
            {
                return false;
            }
        }

        return true;
    }
}

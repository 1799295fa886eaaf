namespace Virtio.Balloon;

/// <summary>
/// Memory statistics tags (VIRTIO 1.2, 5.5.6.3; tags 10-15 are Linux's later additions). Each value is le64;
/// memory amounts are in bytes.
/// </summary>
public enum BalloonStatTag : ushort
{
    /// <summary>Bytes swapped in.</summary>
    SwapIn = 0,

    /// <summary>Bytes swapped out.</summary>
    SwapOut = 1,

    /// <summary>Major page faults.</summary>
    MajorFaults = 2,

    /// <summary>Minor page faults.</summary>
    MinorFaults = 3,

    /// <summary>Free memory in bytes.</summary>
    FreeMemory = 4,

    /// <summary>Total memory in bytes.</summary>
    TotalMemory = 5,

    /// <summary>Available memory in bytes (as /proc/meminfo's MemAvailable).</summary>
    AvailableMemory = 6,

    /// <summary>Disk caches in bytes.</summary>
    DiskCaches = 7,

    /// <summary>Successful hugetlb page allocations.</summary>
    HugetlbAllocations = 8,

    /// <summary>Failed hugetlb page allocations.</summary>
    HugetlbFailures = 9,

    /// <summary>OOM kills.</summary>
    OomKills = 10,

    /// <summary>Allocation stalls.</summary>
    AllocationStalls = 11,

    /// <summary>Pages scanned by kswapd.</summary>
    AsyncScans = 12,

    /// <summary>Pages scanned directly.</summary>
    DirectScans = 13,

    /// <summary>Pages reclaimed by kswapd.</summary>
    AsyncReclaims = 14,

    /// <summary>Pages reclaimed directly.</summary>
    DirectReclaims = 15,
}

namespace Virtio.Balloon.Backends;

/// <summary>How a guest RAM region is backed on the host: it decides how the Linux back end releases pages.</summary>
public enum HostMemoryBacking
{
    /// <summary>
    /// Private anonymous memory (<c>mmap(MAP_PRIVATE | MAP_ANONYMOUS)</c>, what <c>GuestMemory.Allocate</c> uses):
    /// released with <c>madvise(MADV_DONTNEED)</c>; the next touch faults in a zero page.
    /// </summary>
    PrivateAnonymous = 0,

    /// <summary>
    /// Shared memory (a memfd, shmem, tmpfs or hugetlbfs file mapped <c>MAP_SHARED</c>): released with
    /// <c>madvise(MADV_REMOVE)</c>, which punches a hole in the backing file (MADV_DONTNEED would only drop this
    /// process's mapping and free nothing).
    /// </summary>
    Shared = 1,
}

namespace Virtio.Ring;

/// <summary>Why a guest physical address range could not be translated to host memory.</summary>
public enum GuestMemoryError
{
    /// <summary>The range translated.</summary>
    None = 0,

    /// <summary><c>address + length</c> wraps past 2^64.</summary>
    AddressOverflow,

    /// <summary>No region holds the start of the range.</summary>
    Unmapped,

    /// <summary>The range starts in a region but runs past its end (ranges never span two regions).</summary>
    CrossesRegionEnd,
}

using System;
using System.Diagnostics;

namespace Virtio.Ring.Memory;

/// <summary>
/// One contiguous guest physical range backed by one contiguous host range. Immutable once the
/// <see cref="GuestMemory"/> is built, so translations need no lock.
/// </summary>
internal readonly unsafe struct GuestRegion
{
    public readonly ulong Gpa;
    public readonly ulong Length;
    public readonly byte* Host;
    public readonly bool IsAllocatedByLibrary;
    public readonly IDisposable? Owner;

    public GuestRegion(ulong gpa, ulong length, byte* host, bool allocated, IDisposable? owner)
    {
        Debug.Assert(length > 0, "regions are never empty");
        Debug.Assert(gpa + (length - 1) >= gpa, "a region never wraps the address space");
        Gpa = gpa;
        Length = length;
        Host = host;
        IsAllocatedByLibrary = allocated;
        Owner = owner;
    }

    /// <summary>Offset of <paramref name="gpa"/> in this region; wraps to a huge value when gpa is below the base.</summary>
    public ulong OffsetOf(ulong gpa) => gpa - Gpa;
}

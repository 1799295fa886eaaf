using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Virtio.Ring.Internal;
using Virtio.Ring.Memory;

namespace Virtio.Ring;

/// <summary>
/// A guest physical address space: a sorted, immutable set of non-overlapping regions, each a contiguous GPA
/// range backed by contiguous host memory that never moves (native memory the library reserved, or memory the
/// VMM mapped and attached). Build one with <see cref="GuestMemoryBuilder"/> or <see cref="Allocate"/>.
/// <para>
/// Translation (GPA + length to host memory) is bounds- and overflow-checked: a range must lie inside one region
/// and <c>address + length</c> must not wrap. Failures are a <see cref="GuestMemoryError"/>, never an exception.
/// Translation is lock-free and safe from any number of threads.
/// </para>
/// <para>
/// Lifetime: <see cref="Dispose"/> releases the memory's own reference. Host memory is released when every
/// queue attached to it and every <see cref="GuestMemoryLease"/> is gone as well; after Dispose no new span is
/// handed out (<see cref="ObjectDisposedException"/>).
/// </para>
/// </summary>
public sealed unsafe class GuestMemory : IDisposable
{
    /// <summary>Above this many regions a translation binary-searches instead of scanning.</summary>
    private const int LinearScanLimit = 8;

    private readonly GuestRegion[] _regions;
    private readonly GuestMemoryLifetime _lifetime;
    private volatile bool _disposed;

    internal GuestMemory(GuestRegion[] sortedRegions)
    {
        Debug.Assert(sortedRegions.Length > 0, "the builder refuses an empty address space");
        _regions = sortedRegions;
        _lifetime = new GuestMemoryLifetime(sortedRegions);
    }

    /// <summary>
    /// A guest with one library-allocated region of <paramref name="length"/> bytes at GPA
    /// <paramref name="guestPhysicalAddress"/>. Pages are reserved, not committed, until touched.
    /// </summary>
    public static GuestMemory Allocate(ulong length, ulong guestPhysicalAddress = 0) =>
        new GuestMemoryBuilder().AddAllocatedRegion(guestPhysicalAddress, length).Build();

    /// <summary>Number of regions.</summary>
    public int RegionCount => _regions.Length;

    /// <summary>The regions, sorted by guest physical address.</summary>
    public IReadOnlyList<GuestRegionInfo> Regions
    {
        get
        {
            var list = new GuestRegionInfo[_regions.Length];
            for (int i = 0; i < list.Length; i++)
            {
                list[i] = new GuestRegionInfo(_regions[i].Gpa, _regions[i].Length, _regions[i].IsAllocatedByLibrary);
            }

            return list;
        }
    }

    /// <summary>True once <see cref="Dispose"/> was called.</summary>
    public bool IsDisposed => _disposed;

    /// <summary>
    /// Translates <paramref name="length"/> bytes at <paramref name="guestPhysicalAddress"/> to a span over host
    /// memory. Returns <see cref="GuestMemoryError.None"/> on success.
    /// </summary>
    public GuestMemoryError TryGetSpan(ulong guestPhysicalAddress, int length, out Span<byte> span)
    {
        ThrowIfDisposed();
        if (length < 0)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(length), "Length must not be negative.");
        }

        GuestMemoryError error = Translate(guestPhysicalAddress, (ulong)length, out byte* host);
        span = error == GuestMemoryError.None ? new Span<byte>(host, length) : default;
        return error;
    }

    /// <summary>Copies guest memory at <paramref name="guestPhysicalAddress"/> into <paramref name="destination"/>.</summary>
    public GuestMemoryError TryRead(ulong guestPhysicalAddress, Span<byte> destination)
    {
        GuestMemoryError error = TryGetSpan(guestPhysicalAddress, destination.Length, out Span<byte> source);
        if (error == GuestMemoryError.None)
        {
            source.CopyTo(destination);
        }

        return error;
    }

    /// <summary>Copies <paramref name="source"/> into guest memory at <paramref name="guestPhysicalAddress"/>.</summary>
    public GuestMemoryError TryWrite(ulong guestPhysicalAddress, ReadOnlySpan<byte> source)
    {
        GuestMemoryError error = TryGetSpan(guestPhysicalAddress, source.Length, out Span<byte> destination);
        if (error == GuestMemoryError.None)
        {
            source.CopyTo(destination);
        }

        return error;
    }

    /// <summary>Takes a reference that keeps host memory mapped until the lease is disposed.</summary>
    public GuestMemoryLease AcquireLease()
    {
        AddReference();
        return new GuestMemoryLease(this);
    }

    /// <summary>Releases the memory's own reference (see the type's remarks for when host memory goes).</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _lifetime.Dispose();
    }

    /// <summary>
    /// Hot-path translation for ring code: the host address of <paramref name="length"/> bytes at
    /// <paramref name="gpa"/>, or null when the range is not inside one region.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* TranslateOrNull(ulong gpa, ulong length)
    {
        GuestRegion[] regions = _regions;
        if (regions.Length <= LinearScanLimit)
        {
            for (int i = 0; i < regions.Length; i++)
            {
                ref readonly GuestRegion r = ref regions[i];
                ulong offset = gpa - r.Gpa; // wraps to a huge value when gpa < r.Gpa
                if (offset < r.Length)
                {
                    // r.Length - offset cannot underflow, and the region does not wrap, so neither can the range.
                    return length <= r.Length - offset ? r.Host + offset : null;
                }
            }

            return null;
        }

        return TranslateBinarySearch(gpa, length);
    }

    /// <summary>The region holding <paramref name="gpa"/> and its index, for callers that cache their last hit.</summary>
    internal bool TryFindRegion(ulong gpa, out GuestRegion region, out int index)
    {
        for (int i = 0; i < _regions.Length; i++)
        {
            ref readonly GuestRegion r = ref _regions[i];
            if (gpa - r.Gpa < r.Length)
            {
                region = r;
                index = i;
                return true;
            }
        }

        region = default;
        index = -1;
        return false;
    }

    /// <summary>The guest address of <paramref name="host"/>, a host address inside region <paramref name="index"/>.</summary>
    internal ulong GuestAddressOf(int index, byte* host)
    {
        ref readonly GuestRegion r = ref _regions[index];
        Debug.Assert(host >= r.Host && (ulong)(host - r.Host) <= r.Length, "the host address lies in the region");
        return r.Gpa + (ulong)(host - r.Host);
    }

    internal GuestMemoryError Translate(ulong gpa, ulong length, out byte* host)
    {
        host = TranslateOrNull(gpa, length);
        if (host != null)
        {
            return GuestMemoryError.None;
        }

        if (gpa + length < gpa)
        {
            return GuestMemoryError.AddressOverflow;
        }

        return TranslateOrNull(gpa, 0) == null ? GuestMemoryError.Unmapped : GuestMemoryError.CrossesRegionEnd;
    }

    internal void AddReference()
    {
        ThrowIfDisposed();
        bool added = false;
        try
        {
            _lifetime.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
            ThrowHelper.ThrowObjectDisposed(nameof(GuestMemory));
        }
    }

    internal void ReleaseReference() => _lifetime.DangerousRelease();

    private byte* TranslateBinarySearch(ulong gpa, ulong length)
    {
        GuestRegion[] regions = _regions;
        int lo = 0;
        int hi = regions.Length - 1;
        while (lo <= hi)
        {
            int mid = (int)((uint)(lo + hi) >> 1);
            ref readonly GuestRegion r = ref regions[mid];
            if (gpa < r.Gpa)
            {
                hi = mid - 1;
            }
            else if (gpa - r.Gpa >= r.Length)
            {
                lo = mid + 1;
            }
            else
            {
                ulong offset = gpa - r.Gpa;
                return length <= r.Length - offset ? r.Host + offset : null;
            }
        }

        return null;
    }

    private void ThrowIfDisposed()
    {
        if (_disposed)
        {
            ThrowHelper.ThrowObjectDisposed(nameof(GuestMemory));
        }
    }
}

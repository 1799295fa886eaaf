using System;
using System.Collections.Generic;
using Virtio.Ring.Internal;
using Virtio.Ring.Memory;

namespace Virtio.Ring;

/// <summary>
/// Describes a guest physical address space region by region, then builds an immutable <see cref="GuestMemory"/>.
/// Regions must not overlap. Nothing is allocated until <see cref="Build"/>.
/// </summary>
/// <example>
/// <code>
/// using GuestMemory memory = new GuestMemoryBuilder()
///     .AddAllocatedRegion(0, 2UL &lt;&lt; 30)                          // 2 GiB of RAM at GPA 0
///     .AttachRegion(0x1_0000_0000, hostPointer, length, owner)   // memory the VMM mmapped
///     .Build();
/// </code>
/// </example>
public sealed class GuestMemoryBuilder
{
    private readonly List<(ulong Gpa, ulong Length, nint Host, IDisposable? Owner)> _specs = new();

    /// <summary>
    /// Adds a region the library reserves: page-aligned, zero-filled, committed page by page on first touch
    /// (Linux/macOS), released when the memory's last reference goes.
    /// </summary>
    /// <param name="guestPhysicalAddress">First GPA; a multiple of 4096.</param>
    /// <param name="length">Length in bytes; a non-zero multiple of 4096.</param>
    public GuestMemoryBuilder AddAllocatedRegion(ulong guestPhysicalAddress, ulong length)
    {
        if (guestPhysicalAddress % NativeRegion.PageSize != 0)
        {
            ThrowHelper.ThrowArgument(nameof(guestPhysicalAddress), "An allocated region must start on a 4 KiB boundary.");
        }

        if (length == 0 || length % NativeRegion.PageSize != 0)
        {
            ThrowHelper.ThrowArgument(nameof(length), "An allocated region's length must be a non-zero multiple of 4096.");
        }

        AddSpec(guestPhysicalAddress, length, 0, null);
        return this;
    }

    /// <summary>
    /// Attaches host memory the VMM already mapped (for example an mmap of a memfd or of a shared file).
    /// The memory must stay mapped until the built <see cref="GuestMemory"/> releases it; pass
    /// <paramref name="owner"/> to have it disposed at that moment.
    /// </summary>
    /// <param name="guestPhysicalAddress">First GPA of the region.</param>
    /// <param name="hostAddress">Host virtual address of the first byte; must not be zero.</param>
    /// <param name="length">Length in bytes; not zero.</param>
    /// <param name="owner">Disposed when the last reference to the memory goes; may be null.</param>
    public GuestMemoryBuilder AttachRegion(ulong guestPhysicalAddress, nint hostAddress, ulong length, IDisposable? owner = null)
    {
        if (hostAddress == 0)
        {
            ThrowHelper.ThrowArgument(nameof(hostAddress), "The host address must not be null.");
        }

        if (length == 0)
        {
            ThrowHelper.ThrowArgument(nameof(length), "A region must not be empty.");
        }

        if ((ulong)hostAddress + (length - 1) < (ulong)hostAddress)
        {
            ThrowHelper.ThrowArgument(nameof(length), "The host range wraps the address space.");
        }

        AddSpec(guestPhysicalAddress, length, hostAddress, owner);
        return this;
    }

    /// <summary>Allocates the library-owned regions and returns the address space.</summary>
    public unsafe GuestMemory Build()
    {
        if (_specs.Count == 0)
        {
            ThrowHelper.ThrowInvalidOperation("A guest memory needs at least one region.");
        }

        _specs.Sort(static (a, b) => a.Gpa.CompareTo(b.Gpa));
        var regions = new GuestRegion[_specs.Count];
        int built = 0;
        try
        {
            for (; built < regions.Length; built++)
            {
                var spec = _specs[built];
                bool allocate = spec.Host == 0;
                byte* host = allocate ? NativeRegion.Allocate(spec.Length) : (byte*)spec.Host;
                regions[built] = new GuestRegion(spec.Gpa, spec.Length, host, allocate, spec.Owner);
            }
        }
        catch
        {
            for (int i = 0; i < built; i++)
            {
                if (regions[i].IsAllocatedByLibrary)
                {
                    NativeRegion.Free(regions[i].Host, regions[i].Length);
                }
            }

            throw;
        }

        _specs.Clear();
        return new GuestMemory(regions);
    }

    private void AddSpec(ulong gpa, ulong length, nint host, IDisposable? owner)
    {
        if (gpa + (length - 1) < gpa)
        {
            ThrowHelper.ThrowArgument(nameof(length), "The region wraps the guest physical address space.");
        }

        foreach (var s in _specs)
        {
            bool disjoint = gpa + (length - 1) < s.Gpa || s.Gpa + (s.Length - 1) < gpa;
            if (!disjoint)
            {
                ThrowHelper.ThrowArgument(nameof(gpa), $"Region [0x{gpa:x}, +0x{length:x}) overlaps region [0x{s.Gpa:x}, +0x{s.Length:x}).");
            }
        }

        _specs.Add((gpa, length, host, owner));
    }
}

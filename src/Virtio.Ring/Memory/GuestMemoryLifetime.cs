using System;
using System.Runtime.InteropServices;

namespace Virtio.Ring.Memory;

/// <summary>
/// Reference count over a <see cref="GuestMemory"/>'s regions. The memory itself holds one reference; every
/// queue attached to it and every <see cref="GuestMemoryLease"/> holds another. Regions the library allocated
/// are unmapped, and attached regions' owners disposed, only when the last reference goes, so a queue never
/// reads memory that has been freed under it, whatever order the VMM disposes things in.
/// </summary>
internal sealed unsafe class GuestMemoryLifetime : SafeHandle
{
    private readonly GuestRegion[] _regions;

    public GuestMemoryLifetime(GuestRegion[] regions)
        : base(invalidHandleValue: IntPtr.Zero, ownsHandle: true)
    {
        _regions = regions;
        SetHandle(new IntPtr(1)); // a token value: the real resources are the regions
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        foreach (GuestRegion region in _regions)
        {
            if (region.IsAllocatedByLibrary)
            {
                NativeRegion.Free(region.Host, region.Length);
            }
            else
            {
                region.Owner?.Dispose();
            }
        }

        return true;
    }
}

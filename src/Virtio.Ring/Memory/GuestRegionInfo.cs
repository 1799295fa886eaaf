namespace Virtio.Ring;

/// <summary>A read-only description of one region of a <see cref="GuestMemory"/>.</summary>
/// <param name="GuestPhysicalAddress">First guest physical address of the region.</param>
/// <param name="Length">Length in bytes.</param>
/// <param name="IsAllocatedByLibrary">
/// True when the library reserved the memory (and frees it); false when the VMM attached memory it mapped.
/// </param>
public readonly record struct GuestRegionInfo(ulong GuestPhysicalAddress, ulong Length, bool IsAllocatedByLibrary)
{
    /// <summary>One past the last guest physical address of the region.</summary>
    public ulong EndAddress => GuestPhysicalAddress + Length;
}

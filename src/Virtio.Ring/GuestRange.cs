namespace Virtio.Ring;

/// <summary>A guest physical range: what a descriptor names, before or without translation to host memory.</summary>
/// <param name="Address">Guest physical address.</param>
/// <param name="Length">Length in bytes.</param>
public readonly record struct GuestRange(ulong Address, uint Length);

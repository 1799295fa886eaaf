namespace Virtio.Balloon;

/// <summary>A run of contiguous 4 KiB guest pages: what the balloon hands its back ends.</summary>
/// <param name="FirstPfn">The first page frame number (guest physical address / 4096).</param>
/// <param name="PageCount">Pages in the run (at least 1).</param>
public readonly record struct GuestPageRange(ulong FirstPfn, ulong PageCount)
{
    /// <summary>The first guest physical address.</summary>
    public ulong Address => FirstPfn << 12;

    /// <summary>Bytes in the run.</summary>
    public ulong Length => PageCount << 12;

    /// <summary>One past the last page frame number.</summary>
    public ulong EndPfn => FirstPfn + PageCount;
}

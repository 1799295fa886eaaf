namespace Virtio.Interop.Qemu;

/// <summary>What the QEMU machine of <see cref="QtestMachine.StartWithBalloon"/> looks like.</summary>
public sealed record QemuBalloonOptions
{
    /// <summary>Guest RAM in bytes (shared with this process through a file in /dev/shm).</summary>
    public ulong MemoryBytes { get; init; } = 256UL << 20;

    /// <summary>Offer the packed ring (<c>packed=on</c>).</summary>
    public bool Packed { get; init; }

    /// <summary>Free page hinting (<c>free-page-hint=on</c>, with an iothread).</summary>
    public bool FreePageHint { get; init; } = true;

    /// <summary>Free page reporting (<c>free-page-reporting=on</c>).</summary>
    public bool FreePageReporting { get; init; } = true;

    /// <summary>Deflate on OOM (<c>deflate-on-oom=on</c>).</summary>
    public bool DeflateOnOom { get; init; } = true;

    /// <summary>Start paused (<c>-S</c>): fine for inflate, deflate and reporting, not for hinting or stats timers.</summary>
    public bool Paused { get; init; }
}

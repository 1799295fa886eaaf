namespace Virtio.Balloon;

/// <summary>
/// Why the balloon device refused (part of) a guest message. Every refusal is counted per reason
/// (<c>BalloonDevice.Rejected</c>); none is fatal to the VMM, and none is applied halfway: a refused inflate or
/// deflate changes no page, a refused report discards nothing.
/// </summary>
public enum BalloonMessageError
{
    /// <summary>No error.</summary>
    None = 0,

    /// <summary>A buffer in the wrong direction (a device-writable PFN array, a device-readable report, ...).</summary>
    WrongDirection,

    /// <summary>A PFN array whose length is not a multiple of 4 bytes.</summary>
    LengthNotMultipleOfFour,

    /// <summary>A PFN array longer than the configured cap.</summary>
    TooManyPfns,

    /// <summary>A PFN (or a reported range) outside guest RAM.</summary>
    OutsideGuestRam,

    /// <summary>A statistics buffer longer than the cap (its values are not taken).</summary>
    StatsTooLong,

    /// <summary>A statistics buffer whose length is not a multiple of 10 bytes (the whole entries are taken).</summary>
    StatsTruncated,

    /// <summary>A second statistics buffer while one was outstanding (the first is returned, as QEMU does).</summary>
    SecondStatsBuffer,

    /// <summary>A reported range that is not whole 4 KiB pages.</summary>
    NotPageAligned,

    /// <summary>Free page hint blocks that arrived while no report of the current id ran (a stale id, after a stop): ignored, as the spec says.</summary>
    UnrequestedHint,

    /// <summary>A hint command buffer of the wrong size, or a hint-array start command with a block size that is not a power of two from 4 KiB to 1 GiB.</summary>
    BadHintCommand,

    /// <summary>A hint array whose length is not a multiple of 8 bytes, or longer than 64 MiB.</summary>
    HintArrayLength,

    /// <summary>A hint-array entry not aligned to the block size or not inside guest RAM (the entries before it were applied).</summary>
    HintMisaligned,
}

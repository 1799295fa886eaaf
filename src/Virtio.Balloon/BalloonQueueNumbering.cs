namespace Virtio.Balloon;

/// <summary>
/// How a balloon's queues are numbered. The spec's text gives fixed indices, but the peers differ, so a device
/// picks the numbering of the drivers it serves (docs/INTEROP.md).
/// </summary>
public enum BalloonQueueNumbering
{
    /// <summary>
    /// Linux's: only the negotiated queues, consecutively: inflateq 0, deflateq 1, then statsq, free_page_vq and
    /// reporting_vq as negotiated (without STATS_VQ and FREE_PAGE_HINT, reporting_vq is 2). The default.
    /// </summary>
    Linux = 0,

    /// <summary>The spec's fixed indices: inflateq 0, deflateq 1, statsq 2, free_page_vq 3, reporting_vq 4.</summary>
    Fixed = 1,

    /// <summary>
    /// QEMU 7.2's device: inflateq 0, deflateq 1, statsq 2 always, then free_page_vq (if hinting) and reporting_vq
    /// (if reporting) consecutively. Agrees with Linux whenever STATS_VQ is negotiated.
    /// </summary>
    Qemu = 2,
}

using System;
using Virtio.Balloon.Hints;
using Virtio.Ring.Transport;

namespace Virtio.Balloon.Device;

/// <summary>What a VMM chooses for its balloon device.</summary>
public sealed class BalloonDeviceOptions
{
    /// <summary>
    /// The balloon features offered (a subset of <see cref="BalloonFeatureBits.All"/>). By default
    /// MUST_TELL_HOST, STATS_VQ and DEFLATE_ON_OOM, as QEMU offers them; add PAGE_REPORTING, PAGE_POISON and
    /// FREE_PAGE_HINT as the VMM supports them.
    /// </summary>
    public ulong OfferedFeatures { get; init; } =
        (1UL << BalloonFeatureBits.MustTellHost) | (1UL << BalloonFeatureBits.StatsVq) | (1UL << BalloonFeatureBits.DeflateOnOom);

    /// <summary>Which free page hint protocol the device speaks (the driver must be configured alike); the spec's by default.</summary>
    public FreePageHintProtocol HintProtocol { get; init; } = FreePageHintProtocol.Standard;

    /// <summary>A legacy big-endian peer: hint command fields and hint-array entries are big-endian (off: little-endian, as VIRTIO 1.x says).</summary>
    public bool LegacyBigEndianHints { get; init; }

    /// <summary>Where applied free page hints go at first (see <see cref="BalloonDevice.FreePageHintSink"/>).</summary>
    public IFreePageHintSink? FreePageHintSink { get; init; }

    /// <summary>Where the balloon's metrics are created (the VMM's DI container gives one); null: a shared <c>Virtio.Balloon</c> meter.</summary>
    public System.Diagnostics.Metrics.IMeterFactory? MeterFactory { get; init; }

    /// <summary>How the queues are numbered; <see cref="BalloonQueueNumbering.Linux"/> by default.</summary>
    public BalloonQueueNumbering Numbering { get; init; } = BalloonQueueNumbering.Linux;

    /// <summary>
    /// Most page frame numbers one inflate or deflate request may carry; longer requests are refused
    /// (<see cref="BalloonMessageError.TooManyPfns"/>). Linux sends at most 256. Default 1024.
    /// </summary>
    public int MaxPfnsPerRequest { get; init; } = 1024;

    /// <summary>Most statistics entries a stats buffer may carry (Linux sends 10-16). Default 64.</summary>
    public int MaxStatsEntries { get; init; } = 64;

    /// <summary>Largest queue size (QueueSizeMax). Default 128, as QEMU.</summary>
    public int MaxQueueSize { get; init; } = 128;

    /// <summary>
    /// How often the device asks the guest for fresh statistics (QEMU's guest-stats-polling-interval);
    /// <see cref="TimeSpan.Zero"/> (the default) only when the VMM calls <see cref="BalloonDevice.RequestStatistics"/>.
    /// </summary>
    public TimeSpan StatisticsInterval { get; init; } = TimeSpan.Zero;

    /// <summary>The device model's own options: threading and the transport features offered.</summary>
    public VirtioDeviceOptions? Device { get; init; }
}

using System;
using Virtio.Balloon.Hints;
using Virtio.Ring;

namespace Virtio.Balloon.Driver;

/// <summary>How the simulated guest's balloon driver negotiates and behaves (Linux's defaults).</summary>
public sealed class BalloonDriverOptions
{
    /// <summary>Balloon features the driver wants; it takes those the device offers. Default: all.</summary>
    public ulong WantedFeatures { get; init; } = BalloonFeatureBits.All;

    /// <summary>The ring format to ask for (packed needs the device to offer VIRTIO_F_RING_PACKED).</summary>
    public VirtqueueFormat RingFormat { get; init; } = VirtqueueFormat.Split;

    /// <summary>How the device numbers its queues: Linux's way unless the device is QEMU's without STATS_VQ.</summary>
    public BalloonQueueNumbering Numbering { get; init; } = BalloonQueueNumbering.Linux;

    /// <summary>Largest queue size to use (the device's QueueSizeMax caps it). Default 128.</summary>
    public int QueueSize { get; init; } = 128;

    /// <summary>Page frame numbers per inflate or deflate request (Linux: 256).</summary>
    public int PfnsPerRequest { get; init; } = 256;

    /// <summary>Pages deflated on an out-of-memory event with DEFLATE_ON_OOM (Linux: 256).</summary>
    public int OomDeflatePages { get; init; } = 256;

    /// <summary>Smallest order free page reporting reports (Linux: pageblock order 9, 2 MiB).</summary>
    public int ReportingOrder { get; init; } = 9;

    /// <summary>Ranges per free page report (Linux: PAGE_REPORTING_CAPACITY, 32).</summary>
    public int ReportingCapacity { get; init; } = 32;

    /// <summary>
    /// With PAGE_POISON: the pattern the guest poisons free pages with (written to <c>poison_val</c>, and into
    /// pages before they are reported). 0 means poisoning without a pattern (pages read as zero).
    /// </summary>
    public uint PoisonValue { get; init; }

    /// <summary>Which free page hint protocol the driver speaks (the device must be configured alike); the spec's by default.</summary>
    public FreePageHintProtocol HintProtocol { get; init; } = FreePageHintProtocol.Standard;

    /// <summary>
    /// The order of the free blocks hinted: 10 (4 MiB, as Linux and the original patch) by default, down to 0
    /// (4 KiB). Free blocks of this order and above are hinted; with the hint-array protocol a larger block is
    /// sent as its blocks of this order (the start command carries one block size).
    /// </summary>
    public int HintOrder { get; init; } = 10;

    /// <summary>Bytes of each hint array in the pool (hint-array protocol): a power of two from 4 KiB to 4 MiB, 4 MiB by default (524,288 addresses).</summary>
    public int HintArrayBytes { get; init; } = 4 << 20;

    /// <summary>Hint arrays in the pool, allocated once from guest memory at initialisation and reused by every report.</summary>
    public int HintArrayCount { get; init; } = 2;

    /// <summary>A legacy big-endian device: hint command fields and addresses are big-endian.</summary>
    public bool LegacyBigEndianHints { get; init; }

    /// <summary>
    /// Called after the driver wrote guest memory itself (hint arrays and commands, PFN and statistics buffers,
    /// poison), with the guest physical address and length: what a migration's dirty log must see. Rings are
    /// written by the device too; a VMM logs those pages itself.
    /// </summary>
    public Action<ulong, ulong>? GuestWriteObserver { get; init; }

    /// <summary>How long any wait for the device may take before the driver gives up (bounded waits).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(10);
}

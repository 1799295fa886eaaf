namespace Virtio.Balloon;

/// <summary>virtio-balloon feature bits (VIRTIO 1.2, 5.5.3; Linux's include/uapi/linux/virtio_balloon.h).</summary>
public static class BalloonFeatureBits
{
    /// <summary><c>VIRTIO_BALLOON_F_MUST_TELL_HOST</c>: the driver tells the device before it reuses deflated pages.</summary>
    public const int MustTellHost = 0;

    /// <summary><c>VIRTIO_BALLOON_F_STATS_VQ</c>: a statistics queue is present.</summary>
    public const int StatsVq = 1;

    /// <summary><c>VIRTIO_BALLOON_F_DEFLATE_ON_OOM</c>: the driver deflates when the guest runs out of memory.</summary>
    public const int DeflateOnOom = 2;

    /// <summary><c>VIRTIO_BALLOON_F_FREE_PAGE_HINT</c>: a free page hinting queue and <c>free_page_hint_cmd_id</c>.</summary>
    public const int FreePageHint = 3;

    /// <summary><c>VIRTIO_BALLOON_F_PAGE_POISON</c>: the guest poisons free pages; <c>poison_val</c> holds the pattern.</summary>
    public const int PagePoison = 4;

    /// <summary><c>VIRTIO_BALLOON_F_REPORTING</c> (the spec's PAGE_REPORTING): a free page reporting queue.</summary>
    public const int PageReporting = 5;

    /// <summary>Every feature this library implements.</summary>
    public const ulong All = (1UL << MustTellHost) | (1UL << StatsVq) | (1UL << DeflateOnOom) | (1UL << FreePageHint)
        | (1UL << PagePoison) | (1UL << PageReporting);

    /// <summary>True when <paramref name="features"/> has <paramref name="bit"/>.</summary>
    public static bool Has(ulong features, int bit) => (features & (1UL << bit)) != 0;
}

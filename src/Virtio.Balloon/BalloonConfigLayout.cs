namespace Virtio.Balloon;

/// <summary>
/// The balloon's configuration space (VIRTIO 1.2, 5.5.4, <c>struct virtio_balloon_config</c>): four le32 fields,
/// little-endian even for legacy devices. How much of it exists depends on the offered features, as in QEMU:
/// 16 bytes with PAGE_POISON, else 12 with FREE_PAGE_HINT, else 8.
/// </summary>
public static class BalloonConfigLayout
{
    /// <summary><c>num_pages</c> (device-written): the target balloon size in 4 KiB pages.</summary>
    public const int NumPagesOffset = 0;

    /// <summary><c>actual</c> (driver-written): the pages in the balloon now.</summary>
    public const int ActualOffset = 4;

    /// <summary><c>free_page_hint_cmd_id</c> (device-written; <c>free_page_report_cmd_id</c> in the original patch).</summary>
    public const int FreePageHintCommandIdOffset = 8;

    /// <summary><c>poison_val</c> (driver-written): the pattern free pages hold with PAGE_POISON.</summary>
    public const int PoisonValueOffset = 12;

    /// <summary>Bytes of configuration space a device offering <paramref name="offeredFeatures"/> has.</summary>
    public static int SizeFor(ulong offeredFeatures) =>
        BalloonFeatureBits.Has(offeredFeatures, BalloonFeatureBits.PagePoison) ? 16
        : BalloonFeatureBits.Has(offeredFeatures, BalloonFeatureBits.FreePageHint) ? 12
        : 8;

    /// <summary>True when a driver write of <paramref name="length"/> bytes at <paramref name="offset"/> touches only driver-written fields.</summary>
    public static bool IsDriverWritable(int offset, int length) =>
        length > 0 && (Within(offset, length, ActualOffset) || Within(offset, length, PoisonValueOffset));

    private static bool Within(int offset, int length, int field) =>
        offset >= field && offset + length <= field + sizeof(uint);
}

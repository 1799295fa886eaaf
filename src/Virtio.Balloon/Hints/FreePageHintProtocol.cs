namespace Virtio.Balloon.Hints;

/// <summary>
/// The two wire protocols of free page hinting, both on feature bit FREE_PAGE_HINT (3). Device and driver must be
/// configured alike: the feature bit does not say which one a peer speaks.
/// </summary>
public enum FreePageHintProtocol
{
    /// <summary>
    /// The VIRTIO specification's protocol (VIRTIO 1.2, 5.5.6.5; Linux since 5.7, QEMU since 5.0): a 4-byte outbuf
    /// holding the command id, then each free block as its own device-writable buffer, then a 4-byte outbuf holding
    /// STOP. The driver keeps the blocks off its free lists until the device writes DONE.
    /// </summary>
    Standard = 0,

    /// <summary>
    /// The original patch's protocol (virtio-balloon free page hint v34): a start command
    /// <c>{le32 id, le32 block size in bytes}</c> as an outbuf, then arrays of le64 guest physical addresses of free
    /// blocks (up to 4 MiB each, in guest memory) as buffers, then a stop command <c>{0, 0}</c>. The blocks stay on
    /// the guest's free lists: a hint is only a hint.
    /// </summary>
    HintArrays = 1,
}

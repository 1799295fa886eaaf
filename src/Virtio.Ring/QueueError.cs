namespace Virtio.Ring;

/// <summary>
/// Why a queue stopped: a value the other side wrote broke a rule of the spec. Once a queue reports an error it
/// is broken: every further operation is a no-op that reports nothing available, until the queue is reset. A
/// device model maps any error to <c>DEVICE_NEEDS_RESET</c> (VIRTIO 1.x, 2.1.2).
/// </summary>
public enum QueueError
{
    /// <summary>The queue works.</summary>
    None = 0,

    /// <summary>The queue size is not one the ring format allows (split: a power of two from 1 to 32768).</summary>
    InvalidQueueSize,

    /// <summary>A ring area (descriptor table, driver area, device area) is not inside guest memory.</summary>
    RingNotInGuestMemory,

    /// <summary>A ring area is misaligned (2.7: descriptor table 16, available ring 2, used ring 4).</summary>
    RingMisaligned,

    /// <summary>The available index moved by more than the queue size since the device last looked (2.7.6).</summary>
    AvailIndexJump,

    /// <summary>
    /// The driver made a chain available while Q chains were already in flight: it re-offered descriptors the
    /// device still holds.
    /// </summary>
    InFlightExceedsQueueSize,

    /// <summary>A head index in the available ring is not below the queue size.</summary>
    HeadIndexOutOfRange,

    /// <summary>A descriptor's <c>next</c> is not below the size of the table it is in.</summary>
    NextIndexOutOfRange,

    /// <summary>A chain is longer than the queue size (or than its indirect table): a loop (2.7.5.3.1).</summary>
    ChainTooLong,

    /// <summary>An indirect descriptor although <c>VIRTIO_F_INDIRECT_DESC</c> was not negotiated.</summary>
    IndirectNotNegotiated,

    /// <summary>
    /// A descriptor has both INDIRECT and NEXT set (split 2.7.5.3.1), or (packed) an INDIRECT descriptor is part
    /// of a list linked by NEXT.
    /// </summary>
    IndirectWithNext,

    /// <summary>An INDIRECT descriptor inside an indirect table (2.7.5.3.1).</summary>
    NestedIndirect,

    /// <summary>An indirect table's length is zero or not a multiple of 16.</summary>
    IndirectTableLength,

    /// <summary>An indirect table is not inside guest memory.</summary>
    IndirectTableNotInGuestMemory,

    /// <summary>The chain's lengths add up to more than 2^32 - 1 bytes, or one buffer is 2 GiB or longer.</summary>
    ChainLengthOverflow,

    /// <summary>A device-readable descriptor follows a device-writable one (2.7.4.2).</summary>
    ReadableAfterWritable,

    /// <summary>A buffer's GPA range is not inside one guest memory region.</summary>
    BufferNotInGuestMemory,

    /// <summary>Packed: a buffer ID is not below the queue size.</summary>
    BufferIdOutOfRange,

    /// <summary>Packed: a buffer ID was made available again while the device still holds it.</summary>
    BufferIdInUse,

    /// <summary>Packed: a descriptor inside a list is not marked available for the current wrap counter.</summary>
    DescriptorNotAvailable,

    /// <summary>Driver side: the used index moved by more than the number of buffers in flight.</summary>
    UsedIndexJump,

    /// <summary>Driver side: a used element names a descriptor that is not the head of a chain in flight.</summary>
    UsedIdInvalid,

    /// <summary>Restored queue state is inconsistent with the ring in guest memory.</summary>
    InvalidSavedState,
}

using System;

namespace Virtio.Ring.Transport;

/// <summary>Why a device interrupts the driver; the bits of virtio-mmio's InterruptStatus (4.2.2).</summary>
[Flags]
public enum VirtioInterruptReason : uint
{
    /// <summary>No interrupt.</summary>
    None = 0,

    /// <summary>Used buffer notification (bit 0).</summary>
    UsedBuffer = 1,

    /// <summary>Configuration change notification (bit 1).</summary>
    ConfigurationChange = 2,
}

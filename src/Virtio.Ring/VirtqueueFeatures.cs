using System;

namespace Virtio.Ring;

/// <summary>
/// The negotiated features that change how a ring is driven. Derive them from the 64-bit negotiated feature
/// set with <see cref="VirtqueueFeaturesExtensions.FromFeatureBits"/>.
/// </summary>
[Flags]
public enum VirtqueueFeatures
{
    /// <summary>No ring feature negotiated.</summary>
    None = 0,

    /// <summary><c>VIRTIO_F_INDIRECT_DESC</c> (bit 28).</summary>
    IndirectDescriptors = 1 << 0,

    /// <summary><c>VIRTIO_F_EVENT_IDX</c> (bit 29).</summary>
    EventIndex = 1 << 1,

    /// <summary><c>VIRTIO_F_IN_ORDER</c> (bit 35).</summary>
    InOrder = 1 << 2,
}

/// <summary>Conversions for <see cref="VirtqueueFeatures"/>.</summary>
public static class VirtqueueFeaturesExtensions
{
    /// <summary>The ring features present in a negotiated 64-bit feature set.</summary>
    public static VirtqueueFeatures FromFeatureBits(ulong negotiated)
    {
        VirtqueueFeatures f = VirtqueueFeatures.None;
        if ((negotiated & (1UL << VirtioFeatureBits.IndirectDesc)) != 0)
        {
            f |= VirtqueueFeatures.IndirectDescriptors;
        }

        if ((negotiated & (1UL << VirtioFeatureBits.EventIdx)) != 0)
        {
            f |= VirtqueueFeatures.EventIndex;
        }

        if ((negotiated & (1UL << VirtioFeatureBits.InOrder)) != 0)
        {
            f |= VirtqueueFeatures.InOrder;
        }

        return f;
    }
}

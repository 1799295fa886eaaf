using System;

namespace Virtio.Ring.Internal;

/// <summary>
/// Whether the device queues keep their <see cref="VirtqueueCounters"/>: the runtime's metrics feature switch
/// (<c>MetricsSupport</c> in the project, <c>System.Diagnostics.Metrics.Meter.IsSupported</c> in runtimeconfig).
/// A static readonly bool, so the optimizing JIT (and NativeAOT) fold the check away and, when it is off, the
/// counting code with it.
/// </summary>
internal static class RingCounting
{
    public static readonly bool Enabled =
        !AppContext.TryGetSwitch("System.Diagnostics.Metrics.Meter.IsSupported", out bool supported) || supported;
}

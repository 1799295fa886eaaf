using System;

namespace Virtio.Ring;

/// <summary>
/// Keeps a <see cref="GuestMemory"/>'s host memory mapped while held, even if the memory is disposed meanwhile
/// (for example by the VMM's shutdown path on another thread). Spans obtained from the memory stay valid until
/// both the memory is disposed and every lease is released. Dispose exactly once.
/// </summary>
public struct GuestMemoryLease : IDisposable
{
    private GuestMemory? _memory;

    internal GuestMemoryLease(GuestMemory memory) => _memory = memory;

    /// <summary>The leased memory.</summary>
    public readonly GuestMemory Memory => _memory ?? throw new ObjectDisposedException(nameof(GuestMemoryLease));

    /// <summary>Releases the lease.</summary>
    public void Dispose()
    {
        GuestMemory? memory = _memory;
        _memory = null;
        memory?.ReleaseReference();
    }
}

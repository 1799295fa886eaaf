using System.Runtime.InteropServices;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Split;

/// <summary>
/// The driver thread's private state. Only the driver thread writes it; padding keeps the device thread's
/// state and the ring memory off these cache lines.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct SplitDriverState
{
    public CacheLinePadding Before;
    public ushort FreeHead;
    public ushort FreeTail;
    public int NumFree;
    public int InFlight; // chains added and not yet returned used
    public ushort AvailShadow; // avail idx including added but unpublished chains
    public ushort AvailPublished; // avail idx last written to ring memory
    public ushort AvailKicked; // avail idx at the last kick decision
    public ushort LastUsed; // next used-ring index to read (last_used_idx)
    public ushort UsedIdxShadow; // the device's used idx as last read
    public ushort UsedEventWritten;
    public ushort AvailFlagsShadow;
    public bool CallbacksEnabled;
    public int DetachCursor;
    public QueueError Error;
    public ulong ErrorDetail;
    public bool Halted;
    public bool Disposed;
    public int AddOrderFirst;
    public int BatchRemaining; // IN_ORDER: buffers left in the batch the last used element named
    public uint BatchLastLength;
    public CacheLinePadding After;
}

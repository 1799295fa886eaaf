using System.Runtime.InteropServices;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Packed;

/// <summary>
/// The driver thread's private state (positions, wrap counters, free counts). Only the driver thread
/// writes it; padding keeps the device thread's state and the ring memory off these cache lines.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct PackedDriverState
{
    public CacheLinePadding Before;
    public int FreeIdCount;
    public ushort NextAvail;
    public bool AvailWrap;
    public ushort NextUsed;
    public bool UsedWrap;
    public int AddedSinceKick; // slots made available since the last kick decision
    public uint DriverEventWritten;
    public bool CallbacksEnabled;
    public int DetachCursor;
    public QueueError Error;
    public ulong ErrorDetail;
    public bool Halted;
    public bool Disposed;
    public int AddOrderFirst;
    public int BatchRemaining; // IN_ORDER: buffers left in the batch the last used descriptor named
    public uint BatchLastLength;
    public CacheLinePadding After;
}

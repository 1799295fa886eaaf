using System;

namespace Virtio.Balloon.Hints;

/// <summary>A transition of the balloon device's free page hint state machine.</summary>
public sealed class FreePageHintStatusChangedEventArgs : EventArgs
{
    /// <summary>Creates the event data.</summary>
    public FreePageHintStatusChangedEventArgs(FreePageHintStatus previous, FreePageHintStatus status, uint commandId)
    {
        Previous = previous;
        Status = status;
        CommandId = commandId;
    }

    /// <summary>The state before.</summary>
    public FreePageHintStatus Previous { get; }

    /// <summary>The state now.</summary>
    public FreePageHintStatus Status { get; }

    /// <summary>The id of the report the transition belongs to (the current id).</summary>
    public uint CommandId { get; }
}

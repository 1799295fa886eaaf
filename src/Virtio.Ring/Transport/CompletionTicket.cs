namespace Virtio.Ring.Transport;

/// <summary>
/// A popped chain whose completion the device model hands to another thread: what
/// <see cref="VirtioDevice.DeferCompletion"/> returns and <see cref="VirtioDevice.Complete"/> takes. It names the
/// queue, the chain, and the queue's incarnation (every reset, queue reset and restore starts a new one), so a
/// completion that arrives after its queue was reset is recognised and dropped instead of being pushed onto a
/// ring that never held the chain. A plain value: no allocation per request.
/// </summary>
public readonly struct CompletionTicket
{
    internal CompletionTicket(int queueIndex, ushort chainId, uint epoch)
    {
        QueueIndex = queueIndex;
        ChainId = chainId;
        Epoch = epoch;
    }

    /// <summary>The queue the chain was popped from.</summary>
    public int QueueIndex { get; }

    /// <summary>The chain's <see cref="DescriptorChain.Id"/>.</summary>
    public ushort ChainId { get; }

    /// <summary>The queue's incarnation when the chain was popped.</summary>
    internal uint Epoch { get; }
}

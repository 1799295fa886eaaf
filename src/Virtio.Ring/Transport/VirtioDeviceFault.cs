using System;

namespace Virtio.Ring.Transport;

/// <summary>What went wrong in a <see cref="VirtioDeviceFault"/>.</summary>
public enum VirtioDeviceFaultKind
{
    /// <summary>The guest broke a ring rule; <see cref="VirtioDeviceFault.QueueError"/> says which.</summary>
    QueueBroken = 1,

    /// <summary>
    /// A device-model callback threw (<see cref="VirtioDeviceFault.Exception"/>): a bug in the model, contained at
    /// the device-model boundary so that it reaches neither the VMM's exit handler nor a worker thread's top.
    /// </summary>
    ModelException = 2,

    /// <summary>A driver's ring was bad when the queue was enabled (its addresses or size).</summary>
    QueueSetupRejected = 3,
}

/// <summary>
/// A failure the device contained: it set <c>DEVICE_NEEDS_RESET</c> (with a configuration change notification
/// once the driver is running, VIRTIO 1.2, 2.1.2) and reports the failure here, through
/// <see cref="VirtioDevice.Faulted"/> and <see cref="VirtioDevice.LastFault"/>.
/// </summary>
public sealed class VirtioDeviceFault
{
    internal VirtioDeviceFault(VirtioDeviceFaultKind kind, string source, int queueIndex, QueueError queueError, ulong queueErrorDetail, Exception? exception)
    {
        Kind = kind;
        Source = source;
        QueueIndex = queueIndex;
        QueueError = queueError;
        QueueErrorDetail = queueErrorDetail;
        Exception = exception;
    }

    /// <summary>What went wrong.</summary>
    public VirtioDeviceFaultKind Kind { get; }

    /// <summary>Where: the callback or operation's name (<c>OnQueueNotify</c>, <c>OnReset</c>, <c>QueueReady</c>, ...).</summary>
    public string Source { get; }

    /// <summary>The queue concerned, or -1.</summary>
    public int QueueIndex { get; }

    /// <summary>The ring rule the guest broke, or <see cref="Ring.QueueError.None"/>.</summary>
    public QueueError QueueError { get; }

    /// <summary>The offending value of <see cref="QueueError"/> (index, address or length).</summary>
    public ulong QueueErrorDetail { get; }

    /// <summary>The exception a device-model callback threw, or null.</summary>
    public Exception? Exception { get; }

    /// <inheritdoc/>
    public override string ToString() => Kind switch
    {
        VirtioDeviceFaultKind.QueueBroken => $"queue {QueueIndex} broken in {Source}: {QueueError} (0x{QueueErrorDetail:x})",
        VirtioDeviceFaultKind.QueueSetupRejected => $"queue {QueueIndex} rejected at {Source}: {QueueError}",
        _ => $"{Source} threw: {Exception}",
    };
}

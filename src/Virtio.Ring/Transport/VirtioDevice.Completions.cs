using System.Numerics;
using System.Threading;

namespace Virtio.Ring.Transport;

/// <summary>
/// Asynchronous completion for <see cref="VirtioDevice"/>: a chain popped on the serving thread is completed
/// later from any thread (an I/O completion, a timer, the VMM's control thread answering a stats request).
/// <para>
/// <b>Hand-off.</b> <see cref="Complete"/> puts (incarnation, chain ID, written length) into the queue's
/// <see cref="CompletionRing"/> (lock-free, multi-producer) and rings a doorbell; the serving thread drains the
/// ring, pushes each used element, publishes once and makes one notification decision for the batch. Only the
/// serving thread ever touches the ring's device side, so the ring code stays single-threaded. With workers the
/// doorbell wakes the worker (one eventfd write, skipped while a wake is already pending); inline there is no
/// serving thread to wake, so the completing thread drains under the device's control lock (the hand-off is
/// lock-free, the drain is not).
/// </para>
/// <para>
/// <b>Resets.</b> A ticket carries its queue's incarnation. A completion whose queue was reset, queue-reset or
/// restored since the pop is dropped (the chain is not on the ring any more: the driver reclaimed it) and counted
/// in <see cref="DroppedCompletions"/>, whether it arrives before the reset drains the ring or after.
/// </para>
/// </summary>
public abstract partial class VirtioDevice
{
    /// <summary>
    /// On the serving thread, for a chain just popped from queue <paramref name="index"/>: a ticket with which any
    /// thread can complete it later through <see cref="Complete"/>. Allocates nothing.
    /// </summary>
    public CompletionTicket DeferCompletion(int index, ushort chainId) =>
        new(index, chainId, Volatile.Read(ref _queues[index].Epoch));

    /// <summary>
    /// Completes a deferred chain from any thread: it will be pushed as used with
    /// <paramref name="writtenLength"/> bytes written, published, and the driver notified as its event
    /// suppression asks. Returns false when the chain's queue was reset since the pop: the completion is dropped
    /// and counted (one that races the reset is handed over, then dropped and counted by the reset or the drain). Allocates nothing (the queue's hand-off ring is created on the first completion). Complete a
    /// ticket once; completing a chain twice is a model bug and faults the device.
    /// </summary>
    public bool Complete(in CompletionTicket ticket, uint writtenLength)
    {
        if ((uint)ticket.QueueIndex >= (uint)_queues.Length)
        {
            return false;
        }

        VirtqueueSlot slot = _queues[ticket.QueueIndex];
        if (Volatile.Read(ref slot.Epoch) != ticket.Epoch)
        {
            Interlocked.Increment(ref _droppedCompletions); // the reset already happened: drop it here
            return false;
        }

        CompletionRing ring = slot.Completions ?? CreateCompletionRing(slot);
        var spin = new SpinWait();
        while (!ring.TryEnqueue(ticket.Epoch, ticket.ChainId, writtenLength))
        {
            // Full: at most Q live completions fit in 2Q cells, so the rest are stale ones the serving thread
            // has not dropped yet. Wake it and wait for room, unless this one is stale too or the queue is not
            // being served.
            if (Volatile.Read(ref slot.Epoch) != ticket.Epoch
                || (Status & (DeviceStatus.DriverOk | DeviceStatus.DeviceNeedsReset | DeviceStatus.Failed)) != DeviceStatus.DriverOk)
            {
                // Stale, or nobody serves the queue until the driver resets the device: nothing to wait for.
                Interlocked.Increment(ref _droppedCompletions);
                return false;
            }

            RingDoorbell(ticket.QueueIndex, slot);
            spin.SpinOnce();
        }

        RingDoorbell(ticket.QueueIndex, slot);
        return true; // handed over; a reset racing this call still drops it, counted where it is drained
    }

    private void RingDoorbell(int index, VirtqueueSlot slot)
    {
        // Full barrier (Exchange): the entry is published before the flag, and the serving thread clears the flag
        // before it drains, so an entry is either drained now or finds the flag clear and rings again.
        if (Interlocked.Exchange(ref slot.DrainRequested, 1) != 0)
        {
            return;
        }

        if (_threading != QueueThreading.Inline)
        {
            WakeServer(slot);
            return;
        }

        lock (_control)
        {
            ServeQueue(index, kicked: false);
        }
    }

    private CompletionRing CreateCompletionRing(VirtqueueSlot slot)
    {
        int capacity = (int)BitOperations.RoundUpToPowerOf2((uint)System.Math.Max(2, 2 * MaxQueueSize));
        var ring = new CompletionRing(capacity);
        return Interlocked.CompareExchange(ref slot.Completions, ring, null) ?? ring;
    }

    /// <summary>The serving thread pushes every handed-over completion of the current incarnation and publishes once.</summary>
    private void DrainCompletions(int index, VirtqueueSlot slot, DeviceVirtqueue queue)
    {
        CompletionRing? ring = slot.Completions;
        Interlocked.Exchange(ref slot.DrainRequested, 0);
        if (ring is null)
        {
            return;
        }

        uint epoch = slot.Epoch; // fixed while this thread serves: it only moves while the server is parked
        bool pushed = false;
        while (ring.TryDequeue(out uint entryEpoch, out ushort id, out uint length))
        {
            if (entryEpoch != epoch)
            {
                Interlocked.Increment(ref _droppedCompletions);
                continue;
            }

            queue.PushUsed(id, length); // a model bug (an ID not in flight) throws: ServeQueue contains it
            pushed = true;
        }

        if (pushed && queue.PublishUsed())
        {
            SignalUsedBuffers(index);
        }
    }

    /// <summary>At a detach (server parked): everything still in the ring belongs to the old incarnation.</summary>
    private void DropPendingCompletions(VirtqueueSlot slot)
    {
        CompletionRing? ring = slot.Completions;
        Interlocked.Exchange(ref slot.DrainRequested, 0);
        while (ring is not null && ring.TryDequeue(out _, out _, out _))
        {
            Interlocked.Increment(ref _droppedCompletions);
        }
    }
}

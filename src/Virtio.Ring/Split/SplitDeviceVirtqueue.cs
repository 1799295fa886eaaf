using System;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading;
using Virtio.Ring.Internal;
using Virtio.Ring.Memory;

namespace Virtio.Ring.Split;

/// <summary>
/// The device side of a split virtqueue (VIRTIO 1.x, 2.7): what a VMM runs to consume the buffers a guest
/// driver makes available and to return them used.
/// <para>
/// <b>Protocol.</b> The driver writes descriptors, then head indices into the available ring, then (after a
/// write barrier) the available ring's <c>idx</c>. The device reads <c>idx</c> with acquire semantics, then the
/// ring entries and descriptors it covers; it writes used elements, then (release) the used ring's <c>idx</c>,
/// then, after a full barrier, reads the driver's <c>used_event</c> or <c>flags</c> to decide whether to
/// interrupt (2.7.7, 2.7.10, 2.7.13).
/// </para>
/// <para>
/// <b>Trust.</b> Everything in ring memory is written by the guest and is untrusted. Each value is read once into
/// a local, validated, and only the validated copy is used: the available index may not move by more than the
/// queue size; head and next indices must be in range; a chain may not be longer than the queue (loop); indirect
/// tables must be negotiated, not nested, not combined with NEXT, a non-zero multiple of 16 bytes, and inside
/// guest memory; readable buffers may not follow writable ones; lengths may not overflow; every buffer must lie
/// inside one guest memory region. A violation breaks the queue (<see cref="Error"/>): it then reports nothing
/// available and writes nothing until the VMM resets it, so a hostile guest costs the VMM one check per call.
/// </para>
/// <para>
/// <b>Threads.</b> One thread owns the device side at a time; the driver runs concurrently on another thread or
/// process, sharing only ring memory. All private state (shadow indices, counters) lives in this object, never in
/// ring memory, so the two sides only share the cache lines the spec makes them share.
/// </para>
/// </summary>
public sealed unsafe class SplitDeviceVirtqueue : IDisposable
{
    private DeviceState _hot; // this side's mutable state, alone on its cache lines (see DeviceState)
    private const int InitialSegmentCapacity = 16;

    private readonly GuestMemory _memory;
    private readonly SplitQueueLayout _layout;
    private readonly VirtqueueFeatures _features;
    private readonly int _size;
    private readonly ushort _mask;
    private readonly bool _eventIdx;
    private readonly bool _indirect;
    private readonly byte* _descTable;
    private readonly byte* _avail;
    private readonly byte* _used;
    private readonly byte* _usedEvent;
    private readonly byte* _availEvent;

    // Device-private state: read and written by the owning thread only.
    private readonly bool _inOrder;
    private readonly ushort[]? _popOrder;  // IN_ORDER: heads in flight, oldest first (a ring of Q entries)
    private ChainSegmentRecord[] _segments;


    private SplitDeviceVirtqueue(GuestMemory memory, in SplitQueueLayout layout, VirtqueueFeatures features, byte* desc, byte* avail, byte* used)
    {
        _memory = memory;
        _layout = layout;
        _features = features;
        _size = layout.QueueSize;
        _mask = (ushort)(layout.QueueSize - 1);
        _eventIdx = (features & VirtqueueFeatures.EventIndex) != 0;
        _indirect = (features & VirtqueueFeatures.IndirectDescriptors) != 0;
        _inOrder = (features & VirtqueueFeatures.InOrder) != 0;
        _popOrder = _inOrder ? new ushort[layout.QueueSize] : null;
        _descTable = desc;
        _avail = avail;
        _used = used;
        _usedEvent = avail + SplitQueueLayout.UsedEventOffset(_size);
        _availEvent = used + SplitQueueLayout.AvailEventOffset(_size);
        _segments = new ChainSegmentRecord[Math.Min(_size, InitialSegmentCapacity)];
        _hot.NotificationsEnabled = true;
        _hot.AvailEventWritten = unchecked((ushort)(_hot.NextAvail - 1)); // unknown: the first empty ring writes it
        memory.AddReference();
    }

    /// <summary>Queue size Q.</summary>
    public int QueueSize => _size;

    /// <summary>Where the queue lives.</summary>
    public SplitQueueLayout Layout => _layout;

    /// <summary>Negotiated ring features.</summary>
    public VirtqueueFeatures Features => _features;

    /// <summary>Why the queue is broken, or <see cref="QueueError.None"/>.</summary>
    public QueueError Error => _hot.Error;

    /// <summary>The offending value (index, address or length) of <see cref="Error"/>, for the VMM's log.</summary>
    public ulong ErrorDetail => _hot.ErrorDetail;

    /// <summary>True once the guest broke a rule; the VMM should set DEVICE_NEEDS_RESET.</summary>
    public bool IsBroken => _hot.Error != QueueError.None;

    /// <summary>Chains popped and not yet pushed back as used.</summary>
    public int InFlight => (ushort)(_hot.NextAvail - _hot.NextUsed);

    /// <summary>The next available-ring index the device will read.</summary>
    public ushort NextAvail => _hot.NextAvail;

    /// <summary>Whether the device currently asks for available-buffer notifications.</summary>
    public bool NotificationsEnabled => _hot.NotificationsEnabled;

    /// <summary>
    /// Attaches to a split queue the driver placed in guest memory, starting from the reset state (next
    /// available index 0, used index 0). Ring memory is not written. Fails with a typed error when the queue
    /// size is invalid, an area is misaligned, or an area is not inside guest memory.
    /// </summary>
    public static bool TryAttach(
        GuestMemory memory,
        in SplitQueueLayout layout,
        VirtqueueFeatures features,
        [NotNullWhen(true)] out SplitDeviceVirtqueue? queue,
        out QueueError error)
    {
        return TryCreate(memory, layout, features, out queue, out error);
    }

    /// <summary>
    /// Recreates a device-side queue from saved state. The state is validated as guest input: layout as in
    /// <see cref="TryAttach"/>, the number of chains in flight (NextAvail - NextUsed) and the driver's current
    /// available index must each be within the queue size.
    /// </summary>
    public static bool TryRestore(
        GuestMemory memory,
        in SplitQueueState state,
        [NotNullWhen(true)] out SplitDeviceVirtqueue? queue,
        out QueueError error)
    {
        if (!TryCreate(memory, state.Layout, state.Features, out queue, out error))
        {
            return false;
        }

        ushort inFlight = (ushort)(state.NextAvail - state.NextUsed);
        ushort availIdx = LittleEndian.VolatileRead16(queue._avail + SplitQueueLayout.RingIdxOffset);
        if (inFlight > queue._size || (ushort)(availIdx - state.NextAvail) > queue._size)
        {
            queue.Dispose();
            queue = null;
            error = QueueError.InvalidSavedState;
            return false;
        }

        queue._hot.NextAvail = state.NextAvail;
        queue._hot.AvailIdxShadow = state.NextAvail;
        queue._hot.NextUsed = state.NextUsed;
        queue._hot.PublishedUsed = state.NextUsed;
        queue._hot.SignalledUsed = state.NextUsed;
        queue._hot.AvailEventWritten = unchecked((ushort)(state.NextAvail - 1));
        queue._hot.UsedFlagsShadow = LittleEndian.Read16(queue._used + SplitQueueLayout.RingFlagsOffset);
        queue._hot.NotificationsEnabled = state.NotificationsEnabled;
        if (queue._popOrder != null)
        {
            // In order, the chains in flight are the avail entries NextUsed .. NextAvail - 1. They are guest
            // memory, so each is checked like any head.
            for (int i = 0; i < inFlight; i++)
            {
                ushort head = LittleEndian.Read16(queue._avail + SplitQueueLayout.RingEntriesOffset + (2 * ((state.NextUsed + i) & queue._mask)));
                if (head >= queue._size)
                {
                    queue.Dispose();
                    queue = null;
                    error = QueueError.InvalidSavedState;
                    return false;
                }

                queue._popOrder[i] = head;
            }
        }

        return true;
    }

    /// <summary>
    /// Saves the state for <see cref="TryRestore"/>. Publish used elements first
    /// (<see cref="PublishUsed"/>); chains still in flight are recorded as such.
    /// </summary>
    public SplitQueueState SaveState()
    {
        ThrowIfDisposed();
        if (_hot.NextUsed != _hot.PublishedUsed)
        {
            ThrowHelper.ThrowInvalidOperation("Publish used elements before saving queue state.");
        }

        return new SplitQueueState(_layout, _features, _hot.NextAvail, _hot.PublishedUsed, _hot.NotificationsEnabled);
    }

    /// <summary>
    /// Pops the next available chain. Returns false when none is available or the queue is broken (check
    /// <see cref="Error"/>). The chain is valid until the next call to <see cref="TryPop"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryPop(out DescriptorChain chain)
    {
        ushort next = _hot.NextAvail;
        if (next == _hot.AvailIdxShadow && !RefreshAvailIndex())
        {
            chain = default;
            return false;
        }

        // 2.7.6: every chain holds a descriptor until it is used, so a driver can never have more than Q chains
        // in flight. More means it re-offered descriptors the device still holds. (Every popped chain gets one
        // used element, so the chains in flight are exactly NextAvail - NextUsed.)
        int inFlight = (ushort)(next - _hot.NextUsed);
        if (inFlight == _size)
        {
            chain = default;
            return Fail(QueueError.InFlightExceedsQueueSize, (ulong)inFlight);
        }

        // The acquire load of avail->idx in RefreshAvailIndex orders this read of the ring entry after it.
        ushort head = LittleEndian.Read16(_avail + SplitQueueLayout.RingEntriesOffset + (2 * (next & _mask)));
        _hot.NextAvail = (ushort)(next + 1);
        if (!(head < _size && TryPopSingle(head, out chain)))
        {
            // The walks return their totals in registers and the chain is built here, so it never goes through
            // memory on the way out.
            WalkResult walk = WalkChain(head);
            if (walk.Count == 0)
            {
                chain = default;
                return false;
            }

            ReadOnlySpan<ChainSegmentRecord> segments = MemoryMarshal.CreateReadOnlySpan(ref MemoryMarshal.GetArrayDataReference(_segments), walk.Count);
            chain = new DescriptorChain(head, segments, _memory, walk.Readable, walk.ReadableBytes, walk.WritableBytes);
        }

        if (_popOrder != null)
        {
            _popOrder[(_hot.PopOrderFirst + inFlight) & _mask] = head;
        }

        return true;
    }

    /// <summary>
    /// Adds a used element for chain <paramref name="id"/> (from <see cref="DescriptorChain.Id"/>) that the device
    /// wrote <paramref name="writtenLength"/> bytes into. Not visible to the driver until <see cref="PublishUsed"/>.
    /// A no-op on a broken queue.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PushUsed(ushort id, uint writtenLength)
    {
        if (_hot.Halted)
        {
            ThrowIfDisposed();
            return;
        }

        ushort nextUsed = _hot.NextUsed;
        if (id >= _size || nextUsed == _hot.NextAvail || (_popOrder != null && _popOrder[_hot.PopOrderFirst] != id))
        {
            ThrowBadPush(id);
        }

        if (_popOrder != null)
        {
            _hot.PopOrderFirst = (_hot.PopOrderFirst + 1) & _mask;
        }

        byte* element = _used + SplitQueueLayout.RingEntriesOffset + (UsedElement.Size * (nextUsed & _mask));
        LittleEndian.Write32(element, id);
        LittleEndian.Write32(element + 4, writtenLength);
        _hot.NextUsed = (ushort)(nextUsed + 1);
        _hot.Counts.Used(0, writtenLength); // the buffers are counted per publish (FlushUsed)
    }

    /// <summary>
    /// With <c>VIRTIO_F_IN_ORDER</c>: returns every chain in flight up to and including <paramref name="lastId"/>
    /// (in the order they were popped) with a single used element, as 2.7.9 allows: the element names the batch's
    /// last chain and carries its written length; the used index moves by the batch size. The driver treats the
    /// earlier chains of the batch as fully written.
    /// </summary>
    public void PushUsedBatch(ushort lastId, uint writtenLength)
    {
        if (_hot.Halted)
        {
            ThrowIfDisposed();
            return;
        }

        if (_popOrder == null)
        {
            ThrowHelper.ThrowInvalidOperation("Batched used elements need VIRTIO_F_IN_ORDER.");
        }

        int count = 0;
        int inFlight = InFlight;
        while (count < inFlight && _popOrder[(_hot.PopOrderFirst + count) & _mask] != lastId)
        {
            count++;
        }

        if (count == inFlight)
        {
            ThrowBadPush(lastId);
        }

        count++;
        byte* element = _used + SplitQueueLayout.RingEntriesOffset + (UsedElement.Size * (_hot.NextUsed & _mask));
        LittleEndian.Write32(element, lastId);
        LittleEndian.Write32(element + 4, writtenLength);
        _hot.NextUsed = (ushort)(_hot.NextUsed + count);
        _hot.Counts.Used(0, writtenLength);

        _hot.PopOrderFirst = (_hot.PopOrderFirst + count) & _mask;
    }

    /// <summary>
    /// Makes every pushed used element visible to the driver (one release store of the used ring's idx) without
    /// deciding about an interrupt: for polling drivers, or to publish early within a long batch.
    /// </summary>
    public void FlushUsed()
    {
        if (_hot.Halted)
        {
            ThrowIfDisposed();
            return;
        }

        ushort now = _hot.NextUsed;
        if (now != _hot.PublishedUsed)
        {
            // 2.7.8 (the device's mirror of 2.7.13.3): the used elements must be visible before the idx that
            // publishes them. A release store orders every earlier store (the elements above) before it, on ARM64
            // as on x86-64.
            LittleEndian.VolatileWrite16(_used + SplitQueueLayout.RingIdxOffset, now);
            _hot.Counts.Used((ushort)(now - _hot.PublishedUsed), 0); // per publish, not per buffer
            _hot.PublishedUsed = now;
        }
    }

    /// <summary>
    /// Publishes every pushed used element (<see cref="FlushUsed"/>) and returns whether the driver must be sent a
    /// used-buffer notification for what was published since the last decision: with EVENT_IDX when the used
    /// index passed the driver's <c>used_event</c>, otherwise unless the driver set <c>VIRTQ_AVAIL_F_NO_INTERRUPT</c>.
    /// </summary>
    public bool PublishUsed()
    {
        FlushUsed();
        ushort now = _hot.PublishedUsed;
        ushort old = _hot.SignalledUsed;
        if (now == old || _hot.Halted)
        {
            return false;
        }

        _hot.SignalledUsed = now;

        // 2.7.7: the idx store must be globally visible before we read used_event/flags; otherwise the driver
        // can re-enable interrupts after our read and before seeing our idx, and both sides wait forever. Only a
        // full barrier orders a store before a later load.
        Interlocked.MemoryBarrier();
        bool notify;
        if (_eventIdx)
        {
            ushort usedEvent = LittleEndian.Read16(_usedEvent);
            notify = EventIndex.NeedsNotification(usedEvent, now, old);
        }
        else
        {
            ushort flags = LittleEndian.Read16(_avail + SplitQueueLayout.RingFlagsOffset);
            notify = (flags & SplitQueueLayout.AvailFlagNoInterrupt) == 0;
        }

        _hot.Counts.Decision(notify);
        return notify;
    }

    /// <summary>What this queue has done since it was attached (see <see cref="VirtqueueCounters"/>). Any thread.</summary>
    public VirtqueueCounters Counters => _hot.Counts.Snapshot();

    /// <summary>Counts available-buffer notifications served (the device model's serving thread).</summary>
    internal void CountNotificationsReceived(ulong notifications) => _hot.Counts.Received(notifications);

    /// <summary>
    /// Asks the driver not to send available-buffer notifications (without EVENT_IDX: sets
    /// <c>VIRTQ_USED_F_NO_NOTIFY</c>; with it: stops moving <c>avail_event</c>). Advisory: a kick may still come.
    /// </summary>
    public void DisableAvailableNotifications()
    {
        ThrowIfDisposed();
        if (!_hot.NotificationsEnabled || _hot.Halted)
        {
            return;
        }

        _hot.NotificationsEnabled = false;
        if (!_eventIdx)
        {
            WriteUsedFlags(SplitQueueLayout.UsedFlagNoNotify);
        }
    }

    /// <summary>
    /// Asks for available-buffer notifications again and re-checks the ring. Returns
    /// <see cref="NotificationRecheck.BuffersPending"/> when buffers are already available: the driver may have
    /// published them while notifications were off, without a kick, so the caller must process them now (this
    /// re-check is what keeps a kick from being lost).
    /// </summary>
    public NotificationRecheck EnableAvailableNotifications()
    {
        ThrowIfDisposed();
        if (_hot.Halted)
        {
            return NotificationRecheck.NothingPending;
        }

        _hot.NotificationsEnabled = true;
        if (_eventIdx)
        {
            WriteAvailEvent(_hot.NextAvail);
        }
        else
        {
            WriteUsedFlags(0);
        }

        // 2.7.10: our re-enable must be visible before we look at avail->idx again, or a driver that published in
        // between and read the old suppression state would skip its kick while we skip the buffer.
        Interlocked.MemoryBarrier();
        return ReadAvailIndex(out ushort idx) && idx != _hot.NextAvail ? NotificationRecheck.BuffersPending : NotificationRecheck.NothingPending;
    }

    /// <summary>Releases the queue's reference on guest memory. Ring memory is left as it is.</summary>
    public void Dispose()
    {
        if (_hot.Disposed)
        {
            return;
        }

        _hot.Disposed = true;
        _hot.Halted = true;
        _hot.AvailIdxShadow = _hot.NextAvail; // sends TryPop to the slow path, which throws
        _memory.ReleaseReference();
    }

    private static bool TryCreate(
        GuestMemory memory,
        in SplitQueueLayout layout,
        VirtqueueFeatures features,
        [NotNullWhen(true)] out SplitDeviceVirtqueue? queue,
        out QueueError error)
    {
        ArgumentNullException.ThrowIfNull(memory);
        queue = null;
        error = layout.Validate();
        if (error != QueueError.None)
        {
            return false;
        }

        int q = layout.QueueSize;
        byte* desc = memory.TranslateOrNull(layout.DescriptorTableAddress, (ulong)SplitQueueLayout.DescriptorTableBytes(q));
        byte* avail = memory.TranslateOrNull(layout.DriverAreaAddress, (ulong)SplitQueueLayout.AvailRingBytes(q));
        byte* used = memory.TranslateOrNull(layout.DeviceAreaAddress, (ulong)SplitQueueLayout.UsedRingBytes(q));
        if (desc == null || avail == null || used == null)
        {
            error = QueueError.RingNotInGuestMemory;
            return false;
        }

        // Host alignment follows GPA alignment only if the region's host base is aligned as well; the volatile
        // accesses to idx fields need it, so check the host addresses too (attached regions may be odd).
        if (((nuint)desc % SplitQueueLayout.DescriptorTableAlignment) != 0
            || ((nuint)avail % SplitQueueLayout.AvailRingAlignment) != 0
            || ((nuint)used % SplitQueueLayout.UsedRingAlignment) != 0)
        {
            error = QueueError.RingMisaligned;
            return false;
        }

        queue = new SplitDeviceVirtqueue(memory, layout, features, desc, avail, used);
        return true;
    }

    /// <summary>Slow path of <see cref="TryPop"/>: the shadow says the ring is empty, so read the driver's idx.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool RefreshAvailIndex()
    {
        if (!ReadAvailIndex(out ushort idx))
        {
            return false;
        }

        if (idx != _hot.NextAvail)
        {
            return true;
        }

        // Empty. With EVENT_IDX and notifications on, re-arm avail_event at the next index we will read so the
        // driver kicks for it (2.7.10), then look once more: the driver may have published just before seeing it.
        if (!_hot.NotificationsEnabled || !_eventIdx || _hot.AvailEventWritten == _hot.NextAvail)
        {
            return false;
        }

        WriteAvailEvent(_hot.NextAvail);
        Interlocked.MemoryBarrier(); // store avail_event before re-loading avail->idx (store-load order: full barrier)
        return ReadAvailIndex(out idx) && idx != _hot.NextAvail;
    }

    /// <summary>Reads and validates the driver's avail->idx into the shadow. False when broken.</summary>
    private bool ReadAvailIndex(out ushort idx)
    {
        if (_hot.Halted)
        {
            ThrowIfDisposed();
            idx = _hot.NextAvail;
            return false;
        }

        // Acquire: the ring entries and descriptors this idx covers are read after it (2.7.13.3 on the driver's
        // side pairs with this: it writes them before a write barrier and the idx).
        idx = LittleEndian.VolatileRead16(_avail + SplitQueueLayout.RingIdxOffset);

        // 2.7.6: the driver can make at most Q buffers available beyond what the device has read.
        if ((ushort)(idx - _hot.NextAvail) > _size)
        {
            return Fail(QueueError.AvailIndexJump, idx);
        }

        _hot.AvailIdxShadow = idx;
        return true;
    }

    private void WriteUsedFlags(ushort value)
    {
        if (value != _hot.UsedFlagsShadow)
        {
            _hot.UsedFlagsShadow = value;
            LittleEndian.Write16(_used + SplitQueueLayout.RingFlagsOffset, value);
        }
    }

    private void WriteAvailEvent(ushort value)
    {
        LittleEndian.Write16(_availEvent, value);
        _hot.AvailEventWritten = value;
    }

    /// <summary>
    /// Fast path for the most common chain, one direct descriptor: reads it once and, when it has neither NEXT
    /// nor INDIRECT and translates, hands it out. Anything else (and every failure) goes to <see cref="WalkChain"/>,
    /// which reads the chain again from the start and applies every rule; nothing is committed here on failure.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryPopSingle(ushort head, out DescriptorChain chain)
    {
        byte* desc = _descTable + ((nuint)head * SplitDescriptor.Size);
        ushort flags = LittleEndian.Read16(desc + SplitDescriptor.FlagsOffset);
        uint length = LittleEndian.Read32(desc + SplitDescriptor.LengthOffset);
        ulong address = LittleEndian.Read64(desc);
        byte* host;
        if ((flags & (SplitDescriptor.FlagNext | SplitDescriptor.FlagIndirect)) != 0
            || length > int.MaxValue
            || (host = _hot.Regions.Translate(_memory, address, length)) == null)
        {
            chain = default;
            return false;
        }

        ChainSegmentRecord[] segments = _segments;
        Debug.Assert(segments.Length >= 1, "room for one segment always");
        ref ChainSegmentRecord first = ref MemoryMarshal.GetArrayDataReference(segments);
        first = new ChainSegmentRecord(host, (int)length, _hot.Regions.Index);
        bool readable = (flags & SplitDescriptor.FlagWrite) == 0;
        chain = new DescriptorChain(head, MemoryMarshal.CreateReadOnlySpan(ref first, 1), _memory, readable ? 1 : 0, readable ? length : 0, readable ? 0 : length);
        return true;
    }

    /// <summary>
    /// Pops a chain of more than one descriptor: <see cref="TryWalkFast"/> when the chain is well formed and
    /// ordinary, else <see cref="WalkChainChecked"/>, which reads it again from the start and applies every rule.
    /// </summary>
    private WalkResult WalkChain(ushort head)
    {
        WalkResult fast = TryWalkFast(head);
        return fast.Count != 0 ? fast : WalkChainChecked(head);
    }

    /// <summary>
    /// The walk of an ordinary chain: every descriptor inside the cached guest memory region, the chain no longer
    /// than the segment scratch, at most one indirect table. Applies the same rules as
    /// <see cref="WalkChainChecked"/> but only to decide; on anything else (and on every broken rule) it returns
    /// no chain (count 0) having committed nothing, and the checked walk reads the chain again from the start (so
    /// the values used are still read once, by that walk) and reports the error.
    /// </summary>
    /// <remarks>
    /// Shaped for the CPU, because this loop is the per-descriptor cost of every device:
    /// <list type="bullet">
    /// <item>No calls. A call anywhere in a loop, however cold, makes the JIT keep the loop's values in the five
    /// callee-saved registers or on the stack; without calls the hot ones stay in registers (16 descriptors:
    /// 69 -> 47 ns when the calls went).</item>
    /// <item>The next descriptor's address does not wait for the load of <c>next</c>: drivers place chains in
    /// consecutive entries (Linux's and ours), so the loop goes on at the following entry and only a branch
    /// compares it with <c>next</c>. A predicted branch lets the CPU start the following descriptor's loads at
    /// once, where a data dependency would serialise every descriptor behind a load; other chains pay one
    /// misprediction per jump.</item>
    /// <item>One test of the flags per descriptor covers INDIRECT and the readable-then-writable order; one compare
    /// of the record pointer covers both the loop rule and the scratch's capacity; the readable prefix is recorded
    /// once, at the first writable descriptor.</item>
    /// </list>
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private WalkResult TryWalkFast(ushort head)
    {
        if (head >= _size)
        {
            return default;
        }

        ChainSegmentRecord[] segments = _segments;
        ref ChainSegmentRecord first = ref MemoryMarshal.GetArrayDataReference(segments);
        ref ChainSegmentRecord record = ref first;

        // 2.7.5.3.1: a chain visits at most its table's entries (more means a loop) and holds at most Q buffers;
        // the scratch holds at most Q, so its end bounds the direct part, and the checked walk decides beyond it.
        ref ChainSegmentRecord limit = ref Unsafe.Add(ref first, segments.Length);
        ulong regionGpa = _hot.Regions.Gpa;
        ulong regionLength = _hot.Regions.Length;
        byte* regionHost = _hot.Regions.Host;
        int regionIndex = _hot.Regions.Index;
        byte* table = _descTable;
        uint tableSize = (uint)_size;
        uint index = head;
        byte* desc = table + ((nuint)index * SplitDescriptor.Size);
        bool inIndirect = false;

        // 2.7.4.2: readable descriptors, then writable ones. The phase is the WRITE flag every descriptor must
        // carry from here on (0, then WRITE from the first writable one), so one test per descriptor covers the
        // order rule, the phase change and INDIRECT.
        ushort phase = 0;
        int readable = -1; // the number of readable buffers, known at the first writable one
        ulong readableBytes = 0;
        ulong totalBytes = 0;

        while (true)
        {
            if (Unsafe.AreSame(ref record, ref limit))
            {
                return default;
            }

            // One read of the descriptor's fields into locals.
            ulong address = LittleEndian.Read64(desc);
            uint length = LittleEndian.Read32(desc + SplitDescriptor.LengthOffset);
            ushort flags = LittleEndian.Read16(desc + SplitDescriptor.FlagsOffset);
            ushort next = LittleEndian.Read16(desc + SplitDescriptor.NextOffset);

            if ((flags & (SplitDescriptor.FlagIndirect | SplitDescriptor.FlagWrite)) != phase)
            {
                if ((flags & SplitDescriptor.FlagIndirect) != 0)
                {
                    // 2.7.5.3.1: negotiated, not nested, not with NEXT, a non-zero multiple of 16 bytes, in memory.
                    ulong tableOffset = address - regionGpa;
                    if (inIndirect || !_indirect || (flags & SplitDescriptor.FlagNext) != 0
                        || length == 0 || length % SplitDescriptor.Size != 0
                        || tableOffset >= regionLength || length > regionLength - tableOffset)
                    {
                        return default;
                    }

                    inIndirect = true;
                    table = regionHost + tableOffset;
                    tableSize = length / SplitDescriptor.Size;
                    index = 0;
                    desc = table;
                    int used = (int)((nuint)Unsafe.ByteOffset(ref first, ref record) / (nuint)sizeof(ChainSegmentRecord));
                    limit = ref Unsafe.Add(ref first, (int)Math.Min((uint)used + tableSize, (uint)segments.Length));
                    continue;
                }

                if (phase != 0)
                {
                    return default; // readable after writable
                }

                phase = SplitDescriptor.FlagWrite;
                readable = (int)((nuint)Unsafe.ByteOffset(ref first, ref record) / (nuint)sizeof(ChainSegmentRecord));
                readableBytes = totalBytes;
            }

            // In the region, and under 2 GiB (a span's length): the two length limits as one compare.
            ulong offset = address - regionGpa; // wraps to a huge value below the region
            if (offset >= regionLength || length > Math.Min(regionLength - offset, (ulong)int.MaxValue))
            {
                return default;
            }

            totalBytes += length;
            record = new ChainSegmentRecord(regionHost + offset, (int)length, regionIndex);
            record = ref Unsafe.Add(ref record, 1);
            if ((flags & SplitDescriptor.FlagNext) == 0)
            {
                break;
            }

            // Go on at the following entry unless the driver said otherwise (see remarks); both are range-checked.
            index++;
            desc += SplitDescriptor.Size;
            if (next != index)
            {
                index = next;
                desc = table + ((nuint)index * SplitDescriptor.Size);
            }

            if (index >= tableSize)
            {
                return default;
            }
        }

        // Lengths are below 2^31 and at most Q of them: the sum fits a ulong; the chain's must fit 32 bits.
        if (totalBytes > uint.MaxValue)
        {
            return default;
        }

        int count = (int)((nuint)Unsafe.ByteOffset(ref first, ref record) / (nuint)sizeof(ChainSegmentRecord));
        if (readable < 0)
        {
            readable = count;
            readableBytes = totalBytes;
        }

        return new WalkResult(count, readable, (uint)readableBytes, (uint)(totalBytes - readableBytes));
    }

    /// <summary>
    /// The complete walk: reads the chain at <paramref name="head"/> once, applying every rule and reporting the
    /// first one broken, into the private segment records the returned <see cref="DescriptorChain"/> iterates.
    /// Runs when <see cref="TryWalkFast"/> declines: indirect tables or buffers outside the cached region, a
    /// chain longer than the scratch, and every malformed chain.
    /// </summary>
    /// <remarks>
    /// Each descriptor field is loaded exactly once into a local (the "read once" rule), and only the copies are
    /// used. Writable totals are derived (total - readable) and "seen a writable buffer" is
    /// <c>count &gt; readable</c>.
    /// </remarks>
    private WalkResult WalkChainChecked(ushort head)
    {
        QueueError error;
        ulong detail;
        if (head >= _size)
        {
            Fail(QueueError.HeadIndexOutOfRange, head);
            return default;
        }

        ChainSegmentRecord[] segments = _segments;
        byte* table = _descTable;
        uint tableSize = (uint)_size;
        uint index = head;
        uint visited = 0;
        bool inIndirect = false; // explicit: a guest may point an indirect table at the descriptor table itself
        int count = 0;
        int readable = 0;
        ulong totalBytes = 0;
        ulong readableBytes = 0;

        while (true)
        {
            // 2.7.5.3.1: no chain is longer than its table; more visits than entries means a loop.
            if (++visited > tableSize)
            {
                error = QueueError.ChainTooLong;
                detail = head;
                goto Failed;
            }

            // The one read of this descriptor: every field is loaded once, and only these copies are used.
            byte* desc = table + ((nuint)index * SplitDescriptor.Size);
            ulong address = LittleEndian.Read64(desc);
            uint length = LittleEndian.Read32(desc + SplitDescriptor.LengthOffset);
            ushort flags = LittleEndian.Read16(desc + SplitDescriptor.FlagsOffset);
            ushort next = LittleEndian.Read16(desc + SplitDescriptor.NextOffset);

            if ((flags & SplitDescriptor.FlagIndirect) != 0)
            {
                // Only the last descriptor of the direct part may be indirect; entering twice means nesting.
                table = EnterIndirect(address, length, flags, index, inIndirect);
                if (table == null)
                {
                    return default;
                }

                inIndirect = true;
                tableSize = length / SplitDescriptor.Size;
                index = 0;
                visited = 0;
                continue;
            }

            if (length > int.MaxValue)
            {
                error = QueueError.ChainLengthOverflow;
                detail = length;
                goto Failed;
            }

            totalBytes += length;
            if ((flags & SplitDescriptor.FlagWrite) == 0)
            {
                // 2.7.4.2: device-readable descriptors come before device-writable ones.
                if (count != readable)
                {
                    error = QueueError.ReadableAfterWritable;
                    detail = index;
                    goto Failed;
                }

                readable++;
                readableBytes += length;
            }

            byte* host = _hot.Regions.Translate(_memory, address, length);
            if (host == null)
            {
                error = QueueError.BufferNotInGuestMemory;
                detail = address;
                goto Failed;
            }

            if (count == segments.Length)
            {
                // Indirect entries count towards the chain's length too (2.7.5.3.1: no chain longer than Q); the
                // scratch never holds more than Q, so this check only runs when it is full.
                if (count == _size)
                {
                    error = QueueError.ChainTooLong;
                    detail = head;
                    goto Failed;
                }

                segments = GrowSegments();
            }

            // count < segments.Length was just established: store without a second bounds check.
            Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(segments), count++) = new ChainSegmentRecord(host, (int)length, _hot.Regions.Index);

            if ((flags & SplitDescriptor.FlagNext) == 0)
            {
                break;
            }

            index = next;
            if (index >= tableSize)
            {
                error = QueueError.NextIndexOutOfRange;
                detail = index;
                goto Failed;
            }
        }

        // Each length is below 2^31 and there are at most Q of them, so the sum cannot wrap a ulong; checking the
        // 32-bit limit once here is the same rule as checking it per descriptor.
        if (totalBytes > uint.MaxValue)
        {
            error = QueueError.ChainLengthOverflow;
            detail = totalBytes;
            goto Failed;
        }

        return new WalkResult(count, readable, (uint)readableBytes, (uint)(totalBytes - readableBytes));

    Failed:
        // One call site for every failure keeps calls out of the loop.
        Fail(error, detail);
        return default;
    }

    /// <summary>Validates an INDIRECT descriptor (2.7.5.3) and returns its table, or null (queue broken).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* EnterIndirect(ulong address, uint length, ushort flags, uint index, bool inIndirect)
    {
        if (inIndirect)
        {
            Fail(QueueError.NestedIndirect, index);
            return null;
        }

        if (!_indirect)
        {
            Fail(QueueError.IndirectNotNegotiated, index);
            return null;
        }

        if ((flags & SplitDescriptor.FlagNext) != 0)
        {
            Fail(QueueError.IndirectWithNext, index);
            return null;
        }

        if (length == 0 || length % SplitDescriptor.Size != 0)
        {
            Fail(QueueError.IndirectTableLength, length);
            return null;
        }

        byte* table = _hot.Regions.Translate(_memory, address, length);
        if (table == null)
        {
            Fail(QueueError.IndirectTableNotInGuestMemory, address);
        }

        return table;
    }

    /// <summary>Host address of a guest range (inside one region), or null; the last region hit is cached.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ChainSegmentRecord[] GrowSegments() => _segments = ChainSegmentRecord.Grow(_segments, _size);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool Fail(QueueError error, ulong detail)
    {
        Debug.Assert(error != QueueError.None, "a failure has a reason");
        if (_hot.Error == QueueError.None)
        {
            _hot.Error = error;
            _hot.ErrorDetail = detail;
        }

        _hot.Halted = true;

        // Make the fast path of TryPop fall into the slow path, which reports the broken state.
        _hot.AvailIdxShadow = _hot.NextAvail;
        return false;
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadPush(ushort id)
    {
        ThrowIfDisposed();
        if (id >= _size)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(id), $"Chain id {id} is not below the queue size {_size}.");
        }

        if (_popOrder != null && InFlight != 0)
        {
            ThrowHelper.ThrowInvalidOperation($"With VIRTIO_F_IN_ORDER chains are used in the order they were popped; {id} is not next (or not in flight).");
        }

        ThrowHelper.ThrowInvalidOperation("PushUsed without a popped chain in flight.");
    }

    private void ThrowIfDisposed()
    {
        if (_hot.Disposed)
        {
            ThrowHelper.ThrowObjectDisposed(nameof(SplitDeviceVirtqueue));
        }
    }

    /// <summary>
    /// What a walk found: 16 bytes, so it comes back in two registers. <see cref="Count"/> 0 means no chain (the
    /// fast walk declined, or the checked walk broke the queue).
    /// </summary>
    private readonly struct WalkResult(int count, int readable, uint readableBytes, uint writableBytes)
    {
        public readonly int Count = count;
        public readonly int Readable = readable;
        public readonly uint ReadableBytes = readableBytes;
        public readonly uint WritableBytes = writableBytes;
    }

    /// <summary>
    /// The device thread's private state. Only the device thread writes it; padding keeps the driver thread's
    /// state (often the next object on the heap) and the ring memory off these cache lines.
    /// </summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct DeviceState
    {
        public CacheLinePadding Before;
        public ushort NextAvail; // next available-ring index to read (last_avail_idx)
        public ushort AvailIdxShadow; // the driver's idx as last read; _nextAvail == shadow means "look again"
        public ushort NextUsed; // used idx including pushed but unpublished elements
        public ushort PublishedUsed; // used idx last written to ring memory
        public ushort SignalledUsed; // used idx at the last interrupt decision
        public ushort AvailEventWritten; // last value written to avail_event
        public ushort UsedFlagsShadow; // last value written to used->flags
        public bool NotificationsEnabled;
        public bool Halted; // broken or disposed: the hot paths test this one flag
        public int PopOrderFirst;
        public QueueCounts Counts;  // VirtqueueCounters, beside the used-side fields they follow
        public RegionCache Regions; // the region the last buffer was in
        public QueueError Error;
        public ulong ErrorDetail;
        public bool Disposed;
        public CacheLinePadding After;
    }
}

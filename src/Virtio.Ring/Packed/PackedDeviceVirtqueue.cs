using System;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using System.Threading;
using Virtio.Ring.Internal;
using Virtio.Ring.Memory;

namespace Virtio.Ring.Packed;

/// <summary>
/// The device side of a packed virtqueue (VIRTIO 1.2, 2.8 "Packed Virtqueues").
/// <para>
/// <b>Protocol.</b> Driver and device share one ring of descriptors. The driver makes a list available by
/// writing its descriptors in consecutive slots and then, after a write barrier, the first descriptor's flags
/// with AVAIL = its wrap counter and USED = the inverse. The device polls the slot it reads next: an acquire
/// load of the flags, then the rest of the list. It returns a buffer by writing one used descriptor (buffer ID,
/// written length, AVAIL = USED = its wrap counter) at the slot it writes next and skipping as many slots as the
/// list had descriptors.
/// </para>
/// <para>
/// <b>Batching.</b> <see cref="PushUsed"/> writes the ID and length at once, and the flags of every used
/// descriptor but the first of a batch; <see cref="PublishUsed"/> then writes the first one's flags with a release
/// store. The driver polls slots in order, so it sees the whole batch at once and never a partial one.
/// </para>
/// <para>
/// <b>Trust.</b> As for the split ring, every guest-written value is read once, validated, and only the copy is
/// used: availability against the wrap counter, list length (no more than Q slots, no more than Q descriptors in
/// flight), buffer ID range and uniqueness among buffers in flight, INDIRECT rules (negotiated, not in a NEXT list,
/// not nested, table a non-zero multiple of 16 bytes inside guest memory), readable-before-writable, length
/// overflow, and every GPA range. A violation breaks the queue with a <see cref="QueueError"/>.
/// </para>
/// </summary>
public sealed unsafe class PackedDeviceVirtqueue : IDisposable
{
    private const int InitialSegmentCapacity = 16;
    private const uint NoPendingFirst = uint.MaxValue; // no slot is 0xFFFF: a packed queue has at most 32768

    private DeviceState _hot; // this side's mutable state, alone on its cache lines (see DeviceState)

    private readonly GuestMemory _memory;
    private readonly PackedQueueLayout _layout;
    private readonly VirtqueueFeatures _features;
    private readonly int _size;
    private readonly bool _eventIdx;
    private readonly bool _indirect;
    private readonly byte* _ring;
    private readonly byte* _driverEvent;
    private readonly byte* _deviceEvent;
    private readonly int _prefetchSlots;     // how far ahead of the next slot a scan prefetches
    private readonly ushort[] _slotsOfId;   // descriptors each buffer ID in flight occupies; 0 = not in flight
    private readonly ushort[]? _popOrder;   // IN_ORDER: buffer IDs in flight, oldest first (a ring of Q entries)

    // Device-private state.
    private ChainSegmentRecord[] _segments;

    // A run of descriptors from _hot.NextAvail known to be available: their flags, read once by one scan of the
    // cache line (PackedFlagScanner), 16 bits each with the first in the low bits. Never crosses the ring's end.

    private PackedDeviceVirtqueue(GuestMemory memory, in PackedQueueLayout layout, VirtqueueFeatures features, byte* ring, byte* driverEvent, byte* deviceEvent)
    {
        _memory = memory;
        _layout = layout;
        _features = features;
        _size = layout.QueueSize;
        _eventIdx = (features & VirtqueueFeatures.EventIndex) != 0;
        _indirect = (features & VirtqueueFeatures.IndirectDescriptors) != 0;
        _ring = ring;
        _driverEvent = driverEvent;
        _deviceEvent = deviceEvent;
        _slotsOfId = new ushort[_size];
        _prefetchSlots = PackedFlagScanner.PrefetchSlots(_size);
        _popOrder = (features & VirtqueueFeatures.InOrder) != 0 ? new ushort[_size] : null;
        _segments = new ChainSegmentRecord[Math.Min(_size, InitialSegmentCapacity)];
        _hot.AvailWrap = true;
        _hot.UsedWrap = true;
        _hot.PendingFirst = NoPendingFirst;
        _hot.NotificationsEnabled = true;
        _hot.DeviceEventWritten = uint.MaxValue; // unknown: the first write always happens
        memory.AddReference();
    }

    /// <summary>Queue size Q.</summary>
    public int QueueSize => _size;

    /// <summary>Where the queue lives.</summary>
    public PackedQueueLayout Layout => _layout;

    /// <summary>Negotiated ring features.</summary>
    public VirtqueueFeatures Features => _features;

    /// <summary>Why the queue is broken, or <see cref="QueueError.None"/>.</summary>
    public QueueError Error => _hot.Error;

    /// <summary>The offending value of <see cref="Error"/>.</summary>
    public ulong ErrorDetail => _hot.ErrorDetail;

    /// <summary>True once the guest broke a rule; the VMM should set DEVICE_NEEDS_RESET.</summary>
    public bool IsBroken => _hot.Error != QueueError.None;

    /// <summary>Buffers popped and not yet pushed back.</summary>
    public int InFlight => _hot.InFlightBuffers;

    /// <summary>Ring slot the device reads next.</summary>
    public ushort NextAvail => _hot.NextAvail;

    /// <summary>Whether the device currently asks for available-buffer notifications.</summary>
    public bool NotificationsEnabled => _hot.NotificationsEnabled;

    /// <summary>
    /// Attaches to a packed queue the driver placed in guest memory, from the reset state (both wrap counters 1,
    /// both positions 0). Ring memory is not written: the driver may already have made buffers available.
    /// </summary>
    public static bool TryAttach(
        GuestMemory memory,
        in PackedQueueLayout layout,
        VirtqueueFeatures features,
        [NotNullWhen(true)] out PackedDeviceVirtqueue? queue,
        out QueueError error)
    {
        ArgumentNullException.ThrowIfNull(memory);
        queue = null;
        error = layout.Validate();
        if (error != QueueError.None)
        {
            return false;
        }

        byte* ring = memory.TranslateOrNull(layout.DescriptorRingAddress, (ulong)PackedQueueLayout.DescriptorRingBytes(layout.QueueSize));
        byte* driverEvent = memory.TranslateOrNull(layout.DriverAreaAddress, EventSuppression.Size);
        byte* deviceEvent = memory.TranslateOrNull(layout.DeviceAreaAddress, EventSuppression.Size);
        if (ring == null || driverEvent == null || deviceEvent == null)
        {
            error = QueueError.RingNotInGuestMemory;
            return false;
        }

        if (((nuint)ring % PackedQueueLayout.DescriptorRingAlignment) != 0
            || ((nuint)driverEvent % PackedQueueLayout.EventSuppressionAlignment) != 0
            || ((nuint)deviceEvent % PackedQueueLayout.EventSuppressionAlignment) != 0)
        {
            error = QueueError.RingMisaligned;
            return false;
        }

        queue = new PackedDeviceVirtqueue(memory, layout, features, ring, driverEvent, deviceEvent);
        return true;
    }

    /// <summary>
    /// Recreates a device-side queue from saved state, validating it like guest input: layout as in
    /// <see cref="TryAttach"/>, positions below the queue size, and the buffers in flight: at most Q, IDs below Q
    /// and unique, each at least one slot, their slots adding up to exactly the slots between the used and the
    /// available position.
    /// </summary>
    public static bool TryRestore(
        GuestMemory memory,
        in PackedQueueState state,
        [NotNullWhen(true)] out PackedDeviceVirtqueue? queue,
        out QueueError error)
    {
        if (!TryAttach(memory, state.Layout, state.Features, out queue, out error))
        {
            return false;
        }

        if (!queue.TryRestoreInFlight(state))
        {
            queue.Dispose();
            queue = null;
            error = QueueError.InvalidSavedState;
            return false;
        }

        queue._hot.NextAvail = state.NextAvail;
        queue._hot.AvailWrap = state.AvailWrapCounter;
        queue._hot.NextUsed = state.NextUsed;
        queue._hot.UsedWrap = state.UsedWrapCounter;
        queue._hot.NotificationsEnabled = state.NotificationsEnabled;
        return true;
    }

    /// <summary>
    /// Saves the state for <see cref="TryRestore"/>, buffers in flight included; pushed used descriptors must be
    /// published first (<see cref="FlushUsed"/> or <see cref="PublishUsed"/>).
    /// </summary>
    public PackedQueueState SaveState()
    {
        ThrowIfDisposed();
        if (_hot.PendingFirst != NoPendingFirst)
        {
            ThrowHelper.ThrowInvalidOperation("Publish pushed used descriptors before saving a packed queue.");
        }

        var inFlight = new PackedInFlightBuffer[_hot.InFlightBuffers];
        if (_popOrder != null)
        {
            for (int i = 0; i < inFlight.Length; i++)
            {
                ushort id = _popOrder[PackedRingPosition.WrapIndex(_hot.PopOrderFirst + i, _size)];
                inFlight[i] = new PackedInFlightBuffer(id, _slotsOfId[id]);
            }
        }
        else
        {
            int n = 0;
            for (int id = 0; id < _size && n < inFlight.Length; id++)
            {
                if (_slotsOfId[id] != 0)
                {
                    inFlight[n++] = new PackedInFlightBuffer((ushort)id, _slotsOfId[id]);
                }
            }
        }

        return new PackedQueueState(_layout, _features, _hot.NextAvail, _hot.AvailWrap, _hot.NextUsed, _hot.UsedWrap, _hot.NotificationsEnabled, inFlight);
    }

    /// <summary>Checks a saved state's positions and buffers in flight and, if they agree, takes the buffers.</summary>
    private bool TryRestoreInFlight(in PackedQueueState state)
    {
        if (state.NextAvail >= _size || state.NextUsed >= _size)
        {
            return false;
        }

        int slotsInFlight = PackedRingPosition.SlotsBetween(state.NextUsed, state.UsedWrapCounter, state.NextAvail, state.AvailWrapCounter, _size);
        PackedInFlightBuffer[] buffers = state.InFlight ?? [];
        if (slotsInFlight < 0 || slotsInFlight > _size || buffers.Length > _size)
        {
            return false;
        }

        int slots = 0;
        for (int i = 0; i < buffers.Length; i++)
        {
            PackedInFlightBuffer buffer = buffers[i];
            if (buffer.Id >= _size || buffer.Slots == 0 || _slotsOfId[buffer.Id] != 0)
            {
                Array.Clear(_slotsOfId);
                return false;
            }

            _slotsOfId[buffer.Id] = buffer.Slots;
            slots += buffer.Slots;
            if (_popOrder != null)
            {
                _popOrder[i] = buffer.Id;
            }
        }

        if (slots != slotsInFlight)
        {
            Array.Clear(_slotsOfId);
            return false;
        }

        _hot.InFlightBuffers = buffers.Length;
        _hot.PopOrderFirst = 0;
        return true;
    }

    /// <summary>
    /// Pops the next available buffer. Returns false when none is available or the queue is broken. The chain
    /// is valid until the next call.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryPop(out DescriptorChain chain)
    {
        if (_hot.RunFlags == 0 && !ScanRun())
        {
            chain = default;
            return false;
        }

        // Fast path: a one-descriptor list (no NEXT, no INDIRECT), the common case for most devices.
        if (((ushort)_hot.RunFlags & (PackedDescriptor.FlagNext | PackedDescriptor.FlagIndirect)) == 0)
        {
            return TryPopSingleFast(out chain) || PopSingle(out chain);
        }

        return TryWalkListFast(out chain) || WalkList(out chain);
    }

    /// <summary>
    /// Writes the used descriptor for buffer <paramref name="id"/> (from <see cref="DescriptorChain.Id"/>) that
    /// the device wrote <paramref name="writtenLength"/> bytes into, and skips the slots its list occupied. The
    /// first used descriptor of a batch becomes visible at <see cref="PublishUsed"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PushUsed(ushort id, uint writtenLength)
    {
        if (_hot.Halted)
        {
            ThrowIfDisposed();
            return;
        }

        if (id >= _size || _slotsOfId[id] == 0 || (_popOrder != null && _popOrder[_hot.PopOrderFirst] != id))
        {
            ThrowBadPush(id);
        }

        if (_popOrder != null)
        {
            _hot.PopOrderFirst = PackedRingPosition.WrapIndex(_hot.PopOrderFirst + 1, _size);
        }

        int slots = _slotsOfId[id];
        _slotsOfId[id] = 0;
        WriteUsed(id, writtenLength, slots);
        _hot.InFlightBuffers--;
        _hot.Counts.Used(1, writtenLength);
    }

    /// <summary>
    /// With <c>VIRTIO_F_IN_ORDER</c>: returns every buffer in flight up to and including <paramref name="lastId"/>
    /// (in the order they were popped) with one used descriptor carrying <paramref name="lastId"/> and its
    /// written length, then skips all of the batch's slots (2.8.8 "In-order use of descriptors"). The driver
    /// treats the earlier buffers of the batch as fully written.
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
            ThrowHelper.ThrowInvalidOperation("Batched used descriptors need VIRTIO_F_IN_ORDER.");
        }

        // Find the batch first, so that a caller bug (an ID not in flight) changes nothing.
        int count = 0;
        while (count < _hot.InFlightBuffers && _popOrder[PackedRingPosition.WrapIndex(_hot.PopOrderFirst + count, _size)] != lastId)
        {
            count++;
        }

        if (count == _hot.InFlightBuffers)
        {
            ThrowBadPush(lastId);
        }

        count++;
        int slots = 0;
        for (int i = 0; i < count; i++)
        {
            ushort id = _popOrder[PackedRingPosition.WrapIndex(_hot.PopOrderFirst + i, _size)];
            slots += _slotsOfId[id];
            _slotsOfId[id] = 0;
        }

        _hot.PopOrderFirst = PackedRingPosition.WrapIndex(_hot.PopOrderFirst + count, _size);
        _hot.InFlightBuffers -= count;
        WriteUsed(lastId, writtenLength, slots);
        _hot.Counts.Used(count, writtenLength);
    }

    /// <summary>
    /// Makes every pushed used descriptor visible (one release store of the batch's first flags) without deciding
    /// about an interrupt: for polling drivers.
    /// </summary>
    public void FlushUsed()
    {
        if (_hot.Halted)
        {
            ThrowIfDisposed();
            return;
        }

        uint pending = _hot.PendingFirst;
        if (pending != NoPendingFirst)
        {
            // The ids, lengths and later flags of the batch were written with plain stores; the release store of
            // the first descriptor's flags orders them all before it (2.8.9: first marked last).
            LittleEndian.VolatileWrite16(_ring + ((nuint)(pending & 0xFFFF) * PackedDescriptor.Size) + PackedDescriptor.FlagsOffset, (ushort)(pending >> 16));
            _hot.PendingFirst = NoPendingFirst;
        }
    }

    /// <summary>
    /// Makes every pushed used descriptor visible (<see cref="FlushUsed"/>) and returns whether to send a
    /// used-buffer notification for what was used since the last decision, as the driver event suppression
    /// structure asks.
    /// </summary>
    public bool PublishUsed()
    {
        FlushUsed();
        if (_hot.Halted || _hot.UsedSinceSignal == 0)
        {
            return false;
        }

        // The flags store must be visible before the driver event suppression structure is read (store-load
        // order: a full barrier), or a driver enabling notifications meanwhile could be missed.
        Interlocked.MemoryBarrier();
        uint snapshot = LittleEndian.VolatileRead32(_driverEvent);
        int advanced = _hot.UsedSinceSignal;
        _hot.UsedSinceSignal = 0;
        ushort flags = (ushort)(snapshot >> 16);

        // DISABLE: no; ENABLE (and DESC without EVENT_IDX, and the reserved value 3): yes; DESC: the event offset.
        bool notify = flags != EventSuppression.FlagsDisable
            && (flags != EventSuppression.FlagsDesc || !_eventIdx
                || EventSuppression.NeedsNotification((ushort)snapshot, _hot.NextUsed, _hot.UsedWrap, advanced, _size));
        _hot.Counts.Decision(notify);
        return notify;
    }

    /// <summary>What this queue has done since it was attached (see <see cref="VirtqueueCounters"/>). Any thread.</summary>
    public VirtqueueCounters Counters => _hot.Counts.Snapshot();

    /// <summary>Counts available-buffer notifications served (the device model's serving thread).</summary>
    internal void CountNotificationsReceived(ulong notifications) => _hot.Counts.Received(notifications);

    /// <summary>Asks the driver not to send available-buffer notifications (device event flags DISABLE).</summary>
    public void DisableAvailableNotifications()
    {
        ThrowIfDisposed();
        if (_hot.Halted || !_hot.NotificationsEnabled)
        {
            return;
        }

        _hot.NotificationsEnabled = false;
        WriteDeviceEvent(EventSuppression.Encode(0, false), EventSuppression.FlagsDisable);
    }

    /// <summary>
    /// Asks for available-buffer notifications again (ENABLE, or DESC at the next slot with EVENT_IDX) and
    /// re-checks the ring. Returns <see cref="NotificationRecheck.BuffersPending"/> when a buffer is already
    /// available.
    /// </summary>
    public NotificationRecheck EnableAvailableNotifications()
    {
        ThrowIfDisposed();
        if (_hot.Halted)
        {
            return NotificationRecheck.NothingPending;
        }

        _hot.NotificationsEnabled = true;
        ArmDeviceEvent();

        // Store-load: the enable must be visible before the slot is looked at again.
        Interlocked.MemoryBarrier();
        ushort flags = LittleEndian.VolatileRead16(_ring + ((nuint)_hot.NextAvail * PackedDescriptor.Size) + PackedDescriptor.FlagsOffset);
        return PackedDescriptor.IsAvailable(flags, _hot.AvailWrap) ? NotificationRecheck.BuffersPending : NotificationRecheck.NothingPending;
    }

    /// <summary>Releases the queue's reference on guest memory.</summary>
    public void Dispose()
    {
        if (_hot.Disposed)
        {
            return;
        }

        _hot.Disposed = true;
        _hot.Halted = true;
        _hot.RunFlags = 0; // TryPop must reach the halted check, not a cached run
        _memory.ReleaseReference();
    }

    /// <summary>
    /// Learns which descriptors from the next slot are available: one scan of up to four (one cache line, not
    /// past the ring's end), with acquire ordering, so the rest of each descriptor is read after its flags.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool ScanRun()
    {
        if (_hot.Halted)
        {
            ThrowIfDisposed();
            return false;
        }

        int count = Math.Min(PackedFlagScanner.MaxRun, _size - _hot.NextAvail);
        int n = PackedFlagScanner.Scan(_ring + ((nuint)_hot.NextAvail * PackedDescriptor.Size), count, _hot.AvailWrap, out ulong flags);
        if (Sse.IsSupported)
        {
            // A hint, not a read: ask for the cache line a prefetch distance ahead (PackedFlagScanner.PrefetchSlots),
            // which a driver that keeps the ring full finished writing long ago, so its transfer from the driver's
            // core overlaps the work on the lines before it.
            int ahead = _hot.NextAvail + _prefetchSlots;
            if (ahead >= _size)
            {
                ahead -= _size;
            }

            Sse.Prefetch0(_ring + ((nuint)(uint)ahead * PackedDescriptor.Size));
        }
        if (n == 0)
        {
            if (!RecheckAvailable(out ushort headFlags))
            {
                return false;
            }

            flags = headFlags;
            n = 1;
        }

        Debug.Assert(n == RunLength(flags), "an available descriptor's flags are never 0");
        _hot.RunFlags = flags;
        return true;
    }

    /// <summary>Slow path of <see cref="TryPop"/>: nothing available at the slot.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool RecheckAvailable(out ushort flags)
    {
        flags = 0;
        if (_hot.Halted)
        {
            ThrowIfDisposed();
            return false;
        }

        // Empty. With EVENT_IDX and notifications on, point the device event at this slot so the driver kicks
        // when it fills it, then look once more (the driver may have filled it before seeing the new event).
        if (!_hot.NotificationsEnabled || !_eventIdx || !ArmDeviceEvent())
        {
            return false;
        }

        Interlocked.MemoryBarrier();
        flags = LittleEndian.VolatileRead16(_ring + ((nuint)_hot.NextAvail * PackedDescriptor.Size) + PackedDescriptor.FlagsOffset);
        return PackedDescriptor.IsAvailable(flags, _hot.AvailWrap);
    }

    /// <summary>Writes the device event structure for "notify me at the next slot"; false if unchanged.</summary>
    private bool ArmDeviceEvent() =>
        _eventIdx
            ? WriteDeviceEvent(EventSuppression.Encode(_hot.NextAvail, _hot.AvailWrap), EventSuppression.FlagsDesc)
            : WriteDeviceEvent(EventSuppression.Encode(0, false), EventSuppression.FlagsEnable);

    private bool WriteDeviceEvent(ushort desc, ushort flags)
    {
        uint value = desc | ((uint)flags << 16);
        if (value == _hot.DeviceEventWritten)
        {
            return false;
        }

        _hot.DeviceEventWritten = value;
        LittleEndian.VolatileWrite32(_deviceEvent, value); // one aligned 32-bit store: desc and flags together
        return true;
    }

    /// <summary>
    /// The pop of an ordinary one-descriptor list, inlined into <see cref="TryPop"/>: its buffer inside the cached
    /// region, its ID free, room in flight. On anything else it returns false having
    /// committed nothing, and <see cref="PopSingle"/> reads the descriptor again and applies every rule.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryPopSingleFast(out DescriptorChain chain)
    {
        uint slot = _hot.NextAvail;
        byte* desc = _ring + ((nuint)slot * PackedDescriptor.Size);
        ulong address = LittleEndian.Read64(desc);
        uint length = LittleEndian.Read32(desc + PackedDescriptor.LengthOffset);
        ushort id = LittleEndian.Read16(desc + PackedDescriptor.IdOffset);
        ulong offset = address - _hot.Regions.Gpa; // wraps to a huge value below the region
        ulong regionLength = _hot.Regions.Length;
        ushort[] slotsOfId = _slotsOfId;
        if (offset >= regionLength
            || length > Math.Min(regionLength - offset, (ulong)int.MaxValue)
            || id >= (uint)slotsOfId.Length
            || slotsOfId[id] != 0
            || InFlightSlots >= _size)
        {
            chain = default;
            return false;
        }

        ChainSegmentRecord[] segments = _segments;
        ref ChainSegmentRecord first = ref MemoryMarshal.GetArrayDataReference(segments);
        first = new ChainSegmentRecord(_hot.Regions.Host + offset, (int)length, _hot.Regions.Index);
        slotsOfId[id] = 1;
        if (_popOrder != null)
        {
            _popOrder[PackedRingPosition.WrapIndex(_hot.PopOrderFirst + _hot.InFlightBuffers, _size)] = id;
        }

        _hot.InFlightBuffers++;
        if (++slot == (uint)_size)
        {
            slot = 0;
            _hot.AvailWrap = !_hot.AvailWrap;
        }

        _hot.NextAvail = (ushort)slot;
        ulong run = _hot.RunFlags;
        _hot.RunFlags = run >> 16;
        bool readable = (run & PackedDescriptor.FlagWrite) == 0;
        chain = new DescriptorChain(id, MemoryMarshal.CreateReadOnlySpan(ref first, 1), _memory, readable ? 1 : 0, readable ? length : 0, readable ? 0 : length);
        return true;
    }

    /// <summary>A list of one direct descriptor whose flags (available, no NEXT, no INDIRECT) were scanned.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool PopSingle(out DescriptorChain chain)
    {
        chain = default;
        ushort flags = (ushort)_hot.RunFlags;
        uint slot = _hot.NextAvail;
        byte* desc = _ring + ((nuint)slot * PackedDescriptor.Size);
        ulong address = LittleEndian.Read64(desc);
        uint length = LittleEndian.Read32(desc + PackedDescriptor.LengthOffset);
        ushort id = LittleEndian.Read16(desc + PackedDescriptor.IdOffset);
        if (length > int.MaxValue)
        {
            return Fail(QueueError.ChainLengthOverflow, length);
        }

        byte* host = _hot.Regions.Translate(_memory, address, length);
        if (host == null)
        {
            return Fail(QueueError.BufferNotInGuestMemory, address);
        }

        ChainSegmentRecord[] segments = _segments;
        Debug.Assert(segments.Length >= 1, "room for one segment always");
        segments[0] = new ChainSegmentRecord(host, (int)length, _hot.Regions.Index);
        bool wrap = _hot.AvailWrap;
        if (++slot == (uint)_size)
        {
            slot = 0;
            wrap = !wrap;
        }

        int readable = (flags & PackedDescriptor.FlagWrite) == 0 ? 1 : 0;
        return CommitPop(id, 1, slot, wrap, _hot.RunFlags, segments.AsSpan(0, 1), readable, readable == 1 ? length : 0, length, out chain);
    }

    /// <summary>
    /// The walk of an ordinary list of direct descriptors: every buffer inside the cached guest memory region, the
    /// list no longer than the segment scratch, its ID free. It applies the same rules
    /// as <see cref="WalkList"/> but only to decide: on anything else (an indirect descriptor, and every broken
    /// rule) it returns false having committed nothing, and <see cref="WalkList"/> reads the list again from the
    /// start (so the values used are still read once, by that walk) and reports the error.
    /// </summary>
    /// <remarks>
    /// No calls inside the loop, so its values stay in registers (the reasoning is at the split ring's
    /// <c>TryWalkFast</c>); one flag test per descriptor covers INDIRECT and the readable-then-writable order.
    /// </remarks>
    private bool TryWalkListFast(out DescriptorChain chain)
    {
        chain = default;
        ChainSegmentRecord[] segments = _segments;
        ref ChainSegmentRecord first = ref MemoryMarshal.GetArrayDataReference(segments);
        ref ChainSegmentRecord record = ref first;
        ref ChainSegmentRecord limit = ref Unsafe.Add(ref first, segments.Length); // at most Q (2.8.17)
        ulong regionGpa = _hot.Regions.Gpa;
        ulong regionLength = _hot.Regions.Length;
        byte* regionHost = _hot.Regions.Host;
        int regionIndex = _hot.Regions.Index;
        uint slot = _hot.NextAvail;
        bool wrap = _hot.AvailWrap;
        ulong run = _hot.RunFlags;
        byte* desc = _ring + ((nuint)slot * PackedDescriptor.Size);
        ushort flags = (ushort)run;
        ushort phase = 0; // the WRITE flag every descriptor must carry from here on (2.8.4: readable ones first)
        int readable = -1;
        ulong readableBytes = 0;
        ulong totalBytes = 0;
        ushort id;

        while (true)
        {
            ulong address = LittleEndian.Read64(desc);
            uint length = LittleEndian.Read32(desc + PackedDescriptor.LengthOffset);
            id = LittleEndian.Read16(desc + PackedDescriptor.IdOffset);
            if ((flags & (PackedDescriptor.FlagIndirect | PackedDescriptor.FlagWrite)) != phase)
            {
                if ((flags & PackedDescriptor.FlagIndirect) != 0 || phase != 0)
                {
                    return false;
                }

                phase = PackedDescriptor.FlagWrite;
                readable = (int)((nuint)Unsafe.ByteOffset(ref first, ref record) / (nuint)sizeof(ChainSegmentRecord));
                readableBytes = totalBytes;
            }

            // In the region, and under 2 GiB (a span's length): the two length limits as one compare.
            ulong offset = address - regionGpa; // wraps to a huge value below the region
            if (offset >= regionLength || length > Math.Min(regionLength - offset, (ulong)int.MaxValue))
            {
                return false;
            }

            totalBytes += length;
            record = new ChainSegmentRecord(regionHost + offset, (int)length, regionIndex);
            record = ref Unsafe.Add(ref record, 1);
            desc += PackedDescriptor.Size;
            if (++slot == (uint)_size)
            {
                slot = 0;
                wrap = !wrap;
                desc = _ring;
            }

            if ((flags & PackedDescriptor.FlagNext) == 0)
            {
                break;
            }

            if (Unsafe.AreSame(ref record, ref limit))
            {
                return false; // the checked walk grows the scratch or finds the list longer than Q
            }

            // The next descriptor's flags: from the scan while it lasts, else one read, ordered after the head's
            // acquire load; every descriptor of a list must be available (2.8.6, 2.8.15).
            run >>= 16;
            if (run != 0)
            {
                flags = (ushort)run;
            }
            else
            {
                flags = LittleEndian.Read16(desc + PackedDescriptor.FlagsOffset);
                if (!PackedDescriptor.IsAvailable(flags, wrap))
                {
                    return false;
                }
            }
        }

        int count = (int)((nuint)Unsafe.ByteOffset(ref first, ref record) / (nuint)sizeof(ChainSegmentRecord));

        // CommitPop's checks, made here first so that a failure declines instead of breaking the queue.
        if (totalBytes > uint.MaxValue || id >= _size || _slotsOfId[id] != 0 || InFlightSlots + count > _size)
        {
            return false;
        }

        if (readable < 0)
        {
            readable = count;
            readableBytes = totalBytes;
        }

        return CommitPop(id, count, slot, wrap, _hot.RunFlags, MemoryMarshal.CreateReadOnlySpan(ref first, count), readable, readableBytes, totalBytes, out chain);
    }

    /// <summary>
    /// Reads the list starting at the next slot; the flags of its first descriptors were already read (and found
    /// available) by the scan: the nonzero lanes of <c>RunFlags</c>.
    /// </summary>
    private bool WalkList(out DescriptorChain chain)
    {
        chain = default;
        QueueError error;
        ulong detail;
        ChainSegmentRecord[] segments = _segments;
        uint slot = _hot.NextAvail;
        bool wrap = _hot.AvailWrap;
        ulong run = _hot.RunFlags;
        int runCount = RunLength(run);
        ushort flags = (ushort)run;
        int count = 0;
        int readable = 0;
        ulong totalBytes = 0;
        ulong readableBytes = 0;
        ushort id;

        while (true)
        {
            // 2.8.17: no list longer than the queue (which also bounds a list that runs all the way round).
            // Every direct descriptor is one segment, so count is also the number of slots read so far.
            if (count == _size)
            {
                error = QueueError.ChainTooLong;
                detail = (ulong)count;
                goto Failed;
            }

            byte* desc = _ring + ((nuint)slot * PackedDescriptor.Size);
            if (count > 0)
            {
                if (count < runCount)
                {
                    flags = (ushort)(run >> (16 * count)); // scanned with the head: already checked available
                }
                else
                {
                    // Ordered after the head's acquire load. Every descriptor of a list carries correct AVAIL/USED
                    // bits (2.8.6), and a device must not use one it has not seen made available (2.8.15).
                    flags = LittleEndian.Read16(desc + PackedDescriptor.FlagsOffset);
                    if (!PackedDescriptor.IsAvailable(flags, wrap))
                    {
                        error = QueueError.DescriptorNotAvailable;
                        detail = slot;
                        goto Failed;
                    }
                }
            }

            ulong address = LittleEndian.Read64(desc);
            uint length = LittleEndian.Read32(desc + PackedDescriptor.LengthOffset);
            id = LittleEndian.Read16(desc + PackedDescriptor.IdOffset);
            if (++slot == (uint)_size)
            {
                slot = 0;
                wrap = !wrap;
            }

            if ((flags & PackedDescriptor.FlagIndirect) != 0)
            {
                // 2.8.19: an indirect descriptor is a list of its own, never part of a NEXT list.
                if (count > 0 || (flags & PackedDescriptor.FlagNext) != 0)
                {
                    error = QueueError.IndirectWithNext;
                    detail = slot;
                    goto Failed;
                }

                return PopIndirect(address, length, id, slot, wrap, run, out chain);
            }

            if (length > int.MaxValue)
            {
                error = QueueError.ChainLengthOverflow;
                detail = length;
                goto Failed;
            }

            totalBytes += length;
            if ((flags & PackedDescriptor.FlagWrite) == 0)
            {
                if (count != readable)
                {
                    error = QueueError.ReadableAfterWritable;
                    detail = slot;
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
                segments = GrowSegments();
            }

            Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(segments), count++) = new ChainSegmentRecord(host, (int)length, _hot.Regions.Index);
            if ((flags & PackedDescriptor.FlagNext) == 0)
            {
                break;
            }
        }

        // Lengths are below 2^31 and at most Q of them: the sum cannot wrap, so one check after the walk suffices.
        if (totalBytes > uint.MaxValue)
        {
            error = QueueError.ChainLengthOverflow;
            detail = totalBytes;
            goto Failed;
        }

        return CommitPop(id, count, slot, wrap, run, segments.AsSpan(0, count), readable, readableBytes, totalBytes, out chain);

    Failed:
        return Fail(error, detail);
    }

    /// <summary>
    /// Validates the list's buffer ID and the slots in flight, then takes the list: advances the read position,
    /// consumes the scanned run and hands out the chain. Everything is passed by value so the walk's locals stay
    /// in registers.
    /// </summary>
    private bool CommitPop(
        ushort id,
        int slots,
        uint nextSlot,
        bool nextWrap,
        ulong run,
        ReadOnlySpan<ChainSegmentRecord> segments,
        int readable,
        ulong readableBytes,
        ulong totalBytes,
        out DescriptorChain chain)
    {
        chain = default;

        // The buffer ID is in the list's last descriptor (2.8.6).
        if (id >= _size)
        {
            return Fail(QueueError.BufferIdOutOfRange, id);
        }

        if (_slotsOfId[id] != 0)
        {
            return Fail(QueueError.BufferIdInUse, id);
        }

        // A driver can only fill slots the device has handed back: more than Q in flight means slots were reused.
        int inFlightSlots = InFlightSlots;
        if (inFlightSlots + slots > _size)
        {
            return Fail(QueueError.InFlightExceedsQueueSize, (ulong)(inFlightSlots + slots));
        }

        _slotsOfId[id] = (ushort)slots;
        _hot.InFlightBuffers++;
        if (_popOrder != null)
        {
            _popOrder[PackedRingPosition.WrapIndex(_hot.PopOrderFirst + _hot.InFlightBuffers - 1, _size)] = id;
        }

        _hot.NextAvail = (ushort)nextSlot;
        _hot.AvailWrap = nextWrap;
        _hot.RunFlags = slots < PackedFlagScanner.MaxRun ? run >> (16 * slots) : 0; // the lanes past the list's slots

        chain = new DescriptorChain(id, segments, _memory, readable, (uint)readableBytes, (uint)(totalBytes - readableBytes));
        return true;
    }

    /// <summary>
    /// A one-slot list whose descriptor is INDIRECT (2.8.7): every entry of the table, in order, belongs to the
    /// buffer; only WRITE is meaningful in an entry and INDIRECT is forbidden.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool PopIndirect(ulong tableAddress, uint tableLength, ushort id, uint nextSlot, bool nextWrap, ulong run, out DescriptorChain chain)
    {
        chain = default;
        if (!_indirect)
        {
            return Fail(QueueError.IndirectNotNegotiated, tableAddress);
        }

        if (tableLength == 0 || tableLength % PackedDescriptor.Size != 0)
        {
            return Fail(QueueError.IndirectTableLength, tableLength);
        }

        uint entries = tableLength / PackedDescriptor.Size;
        if (entries > (uint)_size)
        {
            return Fail(QueueError.ChainTooLong, entries);
        }

        byte* table = _hot.Regions.Translate(_memory, tableAddress, tableLength);
        if (table == null)
        {
            return Fail(QueueError.IndirectTableNotInGuestMemory, tableAddress);
        }

        ChainSegmentRecord[] segments = _segments;
        int count = 0;
        int readable = 0;
        ulong totalBytes = 0;
        ulong readableBytes = 0;
        for (uint i = 0; i < entries; i++)
        {
            byte* desc = table + ((nuint)i * PackedDescriptor.Size);
            ulong address = LittleEndian.Read64(desc);
            uint length = LittleEndian.Read32(desc + PackedDescriptor.LengthOffset);
            ushort flags = LittleEndian.Read16(desc + PackedDescriptor.FlagsOffset);
            if ((flags & PackedDescriptor.FlagIndirect) != 0)
            {
                return Fail(QueueError.NestedIndirect, i);
            }

            if (length > int.MaxValue)
            {
                return Fail(QueueError.ChainLengthOverflow, length);
            }

            totalBytes += length;
            if ((flags & PackedDescriptor.FlagWrite) == 0)
            {
                if (count != readable)
                {
                    return Fail(QueueError.ReadableAfterWritable, i);
                }

                readable++;
                readableBytes += length;
            }

            if (totalBytes > uint.MaxValue)
            {
                return Fail(QueueError.ChainLengthOverflow, totalBytes);
            }

            byte* host = _hot.Regions.Translate(_memory, address, length);
            if (host == null)
            {
                return Fail(QueueError.BufferNotInGuestMemory, address);
            }

            if (count == segments.Length)
            {
                segments = GrowSegments();
            }

            segments[count++] = new ChainSegmentRecord(host, (int)length, _hot.Regions.Index);
        }

        return CommitPop(id, 1, nextSlot, nextWrap, run, segments.AsSpan(0, count), readable, readableBytes, totalBytes, out chain);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void WriteUsed(ushort id, uint writtenLength, int slots)
    {
        Debug.Assert(slots is > 0 and <= ushort.MaxValue, "every buffer occupies at least one slot");
        uint slot = _hot.NextUsed;
        byte* desc = _ring + ((nuint)slot * PackedDescriptor.Size);
        LittleEndian.Write16(desc + PackedDescriptor.IdOffset, id);
        LittleEndian.Write32(desc + PackedDescriptor.LengthOffset, writtenLength);
        ushort flags = (ushort)(PackedDescriptor.UsedBits(_hot.UsedWrap) | (writtenLength != 0 ? PackedDescriptor.FlagWrite : 0));
        if (_hot.PendingFirst == NoPendingFirst)
        {
            _hot.PendingFirst = slot | ((uint)flags << 16); // one store: the slot (< 32768) and its flags
        }
        else
        {
            // The driver cannot look past the batch's first (still unpublished) descriptor, so a plain store is
            // enough here; PublishUsed's release store orders it.
            LittleEndian.Write16(desc + PackedDescriptor.FlagsOffset, flags);
        }

        slot += (uint)slots;
        if (slot >= (uint)_size)
        {
            slot -= (uint)_size;
            _hot.UsedWrap = !_hot.UsedWrap;
        }

        _hot.NextUsed = (ushort)slot;
        _hot.UsedSinceSignal += slots;
    }

    /// <summary>Slots popped and not yet used: derived from the positions, so pop and push store nothing for it.</summary>
    private int InFlightSlots => PackedRingPosition.SlotsBetween(_hot.NextUsed, _hot.UsedWrap, _hot.NextAvail, _hot.AvailWrap, _size);

    /// <summary>Descriptors whose flags a scanned run still holds: its nonzero lanes (available flags are never 0).</summary>
    private static int RunLength(ulong run) => (64 - BitOperations.LeadingZeroCount(run) + 15) / 16;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ChainSegmentRecord[] GrowSegments() => _segments = ChainSegmentRecord.Grow(_segments, _size);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool Fail(QueueError error, ulong detail)
    {
        if (_hot.Error == QueueError.None)
        {
            _hot.Error = error;
            _hot.ErrorDetail = detail;
        }

        _hot.Halted = true;
        _hot.RunFlags = 0;
        return false;
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadPush(ushort id)
    {
        ThrowIfDisposed();
        if (id >= _size)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(id), $"Buffer id {id} is not below the queue size {_size}.");
        }

        ThrowHelper.ThrowInvalidOperation(_popOrder != null && _slotsOfId[id] != 0
            ? $"With VIRTIO_F_IN_ORDER buffers are used in the order they were popped; {id} is not next."
            : $"Buffer id {id} is not a buffer the device popped and still holds.");
    }

    private void ThrowIfDisposed()
    {
        if (_hot.Disposed)
        {
            ThrowHelper.ThrowObjectDisposed(nameof(PackedDeviceVirtqueue));
        }
    }

    /// <summary>
    /// The device thread's private state (positions, wrap counters, the scanned run). Only the device thread
    /// writes it; padding keeps the driver thread's state and the ring memory off these cache lines.
    /// </summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct DeviceState
    {
        public CacheLinePadding Before;
        public ushort NextAvail;
        public bool AvailWrap;
        public ushort NextUsed;
        public bool UsedWrap;
        public int InFlightBuffers;
        public int UsedSinceSignal; // slots advanced since the last interrupt decision
        public uint PendingFirst; // the used descriptor whose flags FlushUsed still has to write: slot | flags << 16
        public uint DeviceEventWritten; // last value stored to the device event suppression structure
        public bool NotificationsEnabled;
        public bool Halted;
        public int PopOrderFirst;
        public QueueCounts Counts;  // VirtqueueCounters, beside the used-side fields they follow
        public ulong RunFlags;
        public RegionCache Regions; // the region the last buffer was in
        public QueueError Error;
        public ulong ErrorDetail;
        public bool Disposed;
        public CacheLinePadding After;
    }
}

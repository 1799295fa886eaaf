using System;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Threading;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Packed;

/// <summary>
/// The driver side of a packed virtqueue (VIRTIO 1.2, 2.8): what a guest driver does to hand buffers to a device
/// and get them back.
/// <para>
/// <b>Protocol.</b> <see cref="TryAdd"/> writes a list into consecutive slots from the next free one: every
/// descriptor but the first completely, then, after a write barrier (a release store), the first descriptor's
/// flags, which makes the whole list available at once (2.8.21 "Updating flags"). The buffer ID, taken from a
/// private free list, goes into the list's last descriptor. <see cref="PublishAvailable"/> is the kick decision: a full
/// barrier, then the device event suppression structure. <see cref="TryGetUsed"/> polls the next used slot with
/// an acquire load of its flags, maps the buffer ID back to the caller's token and skips the list's slots.
/// </para>
/// <para>
/// <b>Bookkeeping.</b> Buffer IDs, each buffer's slot count, indirect table and token live in this object; the
/// device can only name an ID, which is checked (in range, in flight) before it is used.
/// </para>
/// </summary>
/// <typeparam name="TToken">What the caller gets back with each used buffer.</typeparam>
public sealed unsafe class PackedDriverVirtqueue<TToken> : IDisposable
{
    private PackedDriverState _hot; // this side's mutable state, alone on its cache lines (see PackedDriverState)
    private readonly GuestMemory _memory;
    private readonly PackedQueueLayout _layout;
    private readonly IndirectDescriptorPool? _pool;
    private readonly int _size;
    private readonly bool _eventIdx;
    private readonly byte* _ring;
    private readonly byte* _driverEvent;
    private readonly byte* _deviceEvent;
    private readonly ushort[] _freeIds;
    private readonly BufferState[] _buffers;
    private readonly ushort[]? _addOrder;     // IN_ORDER: buffer IDs in flight, oldest first (a ring of Q entries)

    // Driver-private state.

    /// <summary>
    /// Places a fresh packed queue at <paramref name="layout"/>: zeroes the descriptor ring (2.8.13: "The
    /// descriptor ring is zero-initialized") and both event suppression structures, wrap counters 1.
    /// </summary>
    public PackedDriverVirtqueue(GuestMemory memory, in PackedQueueLayout layout, VirtqueueFeatures features, IndirectDescriptorPool? indirectPool = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        if (!PackedQueueLayout.IsValidQueueSize(layout.QueueSize))
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(layout), "A packed queue's size is 1 to 32768.");
        }

        if (layout.Validate() != QueueError.None)
        {
            ThrowHelper.ThrowArgument(nameof(layout), "The descriptor ring is 16-byte aligned, the event suppression structures 4-byte aligned.");
        }

        _ring = memory.TranslateOrNull(layout.DescriptorRingAddress, (ulong)PackedQueueLayout.DescriptorRingBytes(layout.QueueSize));
        _driverEvent = memory.TranslateOrNull(layout.DriverAreaAddress, EventSuppression.Size);
        _deviceEvent = memory.TranslateOrNull(layout.DeviceAreaAddress, EventSuppression.Size);
        if (_ring == null || _driverEvent == null || _deviceEvent == null)
        {
            ThrowHelper.ThrowArgument(nameof(layout), "Every part of the queue must lie inside one guest memory region.");
        }

        memory.AddReference();
        _memory = memory;
        _layout = layout;
        Features = features;
        _pool = (features & VirtqueueFeatures.IndirectDescriptors) != 0 ? indirectPool : null;
        _size = layout.QueueSize;
        _eventIdx = (features & VirtqueueFeatures.EventIndex) != 0;
        _freeIds = new ushort[_size];
        _buffers = new BufferState[_size];
        _addOrder = (features & VirtqueueFeatures.InOrder) != 0 ? new ushort[_size] : null;
        InitializeRing();
    }

    /// <summary>Queue size Q.</summary>
    public int QueueSize => _size;

    /// <summary>Where the queue lives.</summary>
    public PackedQueueLayout Layout => _layout;

    /// <summary>Negotiated ring features.</summary>
    public VirtqueueFeatures Features { get; }

    /// <summary>Free descriptor slots.</summary>
    public int FreeDescriptors => FreeSlots;

    /// <summary>Buffers made available and not yet returned used.</summary>
    public int InFlight => _size - _hot.FreeIdCount;

    /// <summary>Why the queue is broken, or <see cref="QueueError.None"/>.</summary>
    public QueueError Error => _hot.Error;

    /// <summary>The offending value of <see cref="Error"/>.</summary>
    public ulong ErrorDetail => _hot.ErrorDetail;

    /// <summary>True once the device broke a rule.</summary>
    public bool IsBroken => _hot.Error != QueueError.None;

    /// <summary>
    /// Makes a list of device-readable then device-writable buffers available (visible to the device at once).
    /// Returns false when the ring has no room or the queue is broken; a list longer than the queue throws.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAdd(ReadOnlySpan<GuestRange> readable, ReadOnlySpan<GuestRange> writable, TToken token)
    {
        // Fast path: one direct descriptor, the most common buffer, written in place.
        return readable.Length + writable.Length == 1 && !_hot.Halted
            ? TryAddOne(readable.IsEmpty ? writable[0] : readable[0], readable.IsEmpty, token)
            : TryAddList(readable, writable, token);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryAddOne(GuestRange range, bool isWritable, TToken token)
    {
        int freeIds = _hot.FreeIdCount;
        if (freeIds == 0 || FreeSlots == 0)
        {
            return false;
        }

        ushort id = _freeIds[--freeIds];
        _hot.FreeIdCount = freeIds;
        uint head = _hot.NextAvail;
        bool wrap = _hot.AvailWrap;
        byte* desc = _ring + ((nuint)head * PackedDescriptor.Size);
        LittleEndian.Write64(desc, range.Address);
        LittleEndian.Write32(desc + PackedDescriptor.LengthOffset, range.Length);
        LittleEndian.Write16(desc + PackedDescriptor.IdOffset, id);
        ref BufferState state = ref _buffers[id];
        state.Token = token;
        state.Info = BufferState.Pack(1, -1);
        if (_addOrder != null)
        {
            state.WritableBytes = isWritable ? range.Length : 0;
            _addOrder[PackedRingPosition.WrapIndex(_hot.AddOrderFirst + InFlight - 1, _size)] = id;
        }

        _hot.AddedSinceKick++;
        if (++head == (uint)_size)
        {
            head = 0;
            _hot.AvailWrap = !wrap;
        }

        _hot.NextAvail = (ushort)head;

        // 2.8.21 "Updating flags": the descriptor is written; a release store of its flags makes it available.
        LittleEndian.VolatileWrite16(
            desc + PackedDescriptor.FlagsOffset,
            (ushort)(PackedDescriptor.AvailableBits(wrap) | (isWritable ? PackedDescriptor.FlagWrite : 0)));
        return true;
    }

    private bool TryAddList(ReadOnlySpan<GuestRange> readable, ReadOnlySpan<GuestRange> writable, TToken token)
    {
        int total = readable.Length + writable.Length;
        if (_hot.Halted || (uint)(total - 1) >= (uint)_size)
        {
            return AddSlow(total);
        }

        int table = -1;
        int slots = total;
        if (total > 1 && _pool != null && _pool.TryRent(total, out table))
        {
            slots = 1;
        }

        if (slots > FreeSlots || _hot.FreeIdCount == 0)
        {
            if (table >= 0)
            {
                _pool!.Return(table);
            }

            return false;
        }

        ushort id = _freeIds[--_hot.FreeIdCount];
        uint head = _hot.NextAvail;
        ushort headFlags;
        if (table >= 0)
        {
            WriteIndirectTable(readable, writable, table);
            headFlags = (ushort)(PackedDescriptor.FlagIndirect | PackedDescriptor.AvailableBits(_hot.AvailWrap));
            byte* desc = _ring + ((nuint)head * PackedDescriptor.Size);
            LittleEndian.Write64(desc, _pool!.TableAddress(table));
            LittleEndian.Write32(desc + PackedDescriptor.LengthOffset, (uint)(total * PackedDescriptor.Size));
            LittleEndian.Write16(desc + PackedDescriptor.IdOffset, id);
            Advance(ref _hot.NextAvail, ref _hot.AvailWrap, 1);
        }
        else
        {
            headFlags = WriteList(readable, writable, id);
        }

        ref BufferState state = ref _buffers[id];
        state.Token = token;
        state.Info = BufferState.Pack(slots, table);
        if (_addOrder != null)
        {
            uint writableBytes = 0;
            foreach (GuestRange r in writable)
            {
                writableBytes += r.Length;
            }

            state.WritableBytes = writableBytes;
            _addOrder[PackedRingPosition.WrapIndex(_hot.AddOrderFirst + InFlight - 1, _size)] = id;
        }

        _hot.AddedSinceKick += slots;

        // 2.8.21 "Updating flags": everything else in the list is written; a release store of the first
        // descriptor's flags makes the list available in one step and never half-written.
        LittleEndian.VolatileWrite16(_ring + ((nuint)head * PackedDescriptor.Size) + PackedDescriptor.FlagsOffset, headFlags);
        return true;
    }

    /// <summary>
    /// Nothing to do for a packed ring: each list became available when <see cref="TryAdd"/> wrote its first
    /// flags. Present so that code written for either format can call it.
    /// </summary>
    public void FlushAvailable() => ThrowIfDisposed();

    /// <summary>
    /// The kick decision after one or more <see cref="TryAdd"/> calls: returns whether the device asked to be
    /// notified (ENABLE; or DESC with EVENT_IDX when the lists just added covered the slot it named).
    /// </summary>
    public bool PublishAvailable()
    {
        if (_hot.Halted)
        {
            ThrowIfDisposed();
            return false;
        }

        int added = _hot.AddedSinceKick;
        if (added == 0)
        {
            return false;
        }

        _hot.AddedSinceKick = 0;

        // 2.8.21.2: the flags stores must be visible before the device event suppression structure is read.
        Interlocked.MemoryBarrier();
        uint snapshot = LittleEndian.VolatileRead32(_deviceEvent);
        ushort flags = (ushort)(snapshot >> 16);
        if (flags == EventSuppression.FlagsDisable)
        {
            return false;
        }

        if (flags != EventSuppression.FlagsDesc || !_eventIdx)
        {
            return true;
        }

        return EventSuppression.NeedsNotification((ushort)snapshot, _hot.NextAvail, _hot.AvailWrap, added, _size);
    }

    /// <summary>
    /// Takes the next used buffer back: its token and the bytes the device wrote. False when the device has
    /// returned nothing new or the queue is broken. With notifications enabled and EVENT_IDX, an empty ring
    /// re-arms the driver event structure and looks once more.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGetUsed([MaybeNullWhen(false)] out TToken token, out uint writtenLength)
    {
        if (_addOrder != null)
        {
            return TryGetUsedInOrder(out token, out writtenLength);
        }

        byte* desc = _ring + ((nuint)_hot.NextUsed * PackedDescriptor.Size);

        // Acquire: the id and length are read after the flags that published them.
        ushort flags = _hot.Halted ? (ushort)0 : LittleEndian.VolatileRead16(desc + PackedDescriptor.FlagsOffset);
        if (!PackedDescriptor.IsUsed(flags, _hot.UsedWrap) && !RecheckUsed())
        {
            token = default;
            writtenLength = 0;
            return false;
        }

        ushort id = LittleEndian.Read16(desc + PackedDescriptor.IdOffset);
        uint length = LittleEndian.Read32(desc + PackedDescriptor.LengthOffset);
        if (id >= _size || _buffers[id].Slots == 0)
        {
            Fail(QueueError.UsedIdInvalid, id);
            token = default;
            writtenLength = 0;
            return false;
        }

        Advance(ref _hot.NextUsed, ref _hot.UsedWrap, _buffers[id].Slots);
        token = FreeBuffer(id);
        writtenLength = length; // 2.8.4: only meaningful with WRITE; a device that wrote nothing reports 0 anyway
        return true;
    }

    /// <summary>
    /// IN_ORDER (2.8.8): the used descriptor at the next used slot names the last buffer of a batch; every buffer
    /// in flight up to it, oldest first, is used (the earlier ones fully written), and the batch's slots are
    /// skipped one buffer at a time.
    /// </summary>
    private bool TryGetUsedInOrder([MaybeNullWhen(false)] out TToken token, out uint writtenLength)
    {
        Debug.Assert(_addOrder != null, "in-order bookkeeping exists");
        token = default;
        writtenLength = 0;
        if (_hot.BatchRemaining == 0)
        {
            byte* desc = _ring + ((nuint)_hot.NextUsed * PackedDescriptor.Size);
            ushort flags = _hot.Halted ? (ushort)0 : LittleEndian.VolatileRead16(desc + PackedDescriptor.FlagsOffset);
            if (!PackedDescriptor.IsUsed(flags, _hot.UsedWrap) && !RecheckUsed())
            {
                return false;
            }

            ushort id = LittleEndian.Read16(desc + PackedDescriptor.IdOffset);
            uint length = LittleEndian.Read32(desc + PackedDescriptor.LengthOffset);
            int count = 0;
            int inFlight = InFlight;
            while (count < inFlight && _addOrder[PackedRingPosition.WrapIndex(_hot.AddOrderFirst + count, _size)] != id)
            {
                count++;
            }

            if (count == inFlight)
            {
                Fail(QueueError.UsedIdInvalid, id);
                return false;
            }

            _hot.BatchRemaining = count + 1;
            _hot.BatchLastLength = length;
        }

        ushort next = _addOrder[_hot.AddOrderFirst];
        _hot.AddOrderFirst = PackedRingPosition.WrapIndex(_hot.AddOrderFirst + 1, _size);
        writtenLength = --_hot.BatchRemaining == 0 ? _hot.BatchLastLength : _buffers[next].WritableBytes;
        Advance(ref _hot.NextUsed, ref _hot.UsedWrap, _buffers[next].Slots);
        token = FreeBuffer(next);
        return true;
    }

    /// <summary>Asks the device not to send used-buffer notifications (driver event flags DISABLE).</summary>
    public void DisableUsedNotifications()
    {
        ThrowIfDisposed();
        if (_hot.Halted || !_hot.CallbacksEnabled)
        {
            return;
        }

        _hot.CallbacksEnabled = false;
        WriteDriverEvent(0, EventSuppression.FlagsDisable);
    }

    /// <summary>
    /// Asks for a used-buffer notification for the next used buffer (ENABLE, or DESC at the next used slot with
    /// EVENT_IDX) and re-checks; <see cref="NotificationRecheck.BuffersPending"/> when a used buffer is already
    /// waiting.
    /// </summary>
    public NotificationRecheck EnableUsedNotifications() => Recheck(EnableUsedNotificationsAt(0));

    /// <summary>
    /// With EVENT_IDX, asks to be notified only when the device reaches about three quarters of the slots in
    /// flight (<c>virtqueue_enable_cb_delayed</c>); otherwise as <see cref="EnableUsedNotifications"/>.
    /// </summary>
    public NotificationRecheck EnableUsedNotificationsDelayed() =>
        Recheck(EnableUsedNotificationsAt(_eventIdx ? (_size - FreeSlots) * 3 / 4 : 0));

    /// <summary>
    /// After a device reset: hands back the token of every buffer still in flight, one at a time. Once a buffer is
    /// detached the queue takes no more buffers until <see cref="Reset"/>.
    /// </summary>
    public bool TryDetachUnused([MaybeNullWhen(false)] out TToken token)
    {
        ThrowIfDisposed();
        for (; _hot.DetachCursor < _size; _hot.DetachCursor++)
        {
            if (_buffers[_hot.DetachCursor].Slots != 0)
            {
                // The ring positions still count the detached buffer's slots: until Reset the queue takes no more.
                _hot.Halted = true;
                token = FreeBuffer((ushort)_hot.DetachCursor);
                return true;
            }
        }

        token = default;
        return false;
    }

    /// <summary>Returns the queue to its initial state; every buffer must have been taken back first.</summary>
    public void Reset()
    {
        ThrowIfDisposed();
        if (InFlight != 0)
        {
            ThrowHelper.ThrowInvalidOperation($"{InFlight} buffers are still in flight: take them back with TryDetachUnused first.");
        }

        InitializeRing();
    }

    /// <summary>Releases the queue's references; ring memory is left as it is.</summary>
    public void Dispose()
    {
        if (_hot.Disposed)
        {
            return;
        }

        _hot.Disposed = true;
        _hot.Halted = true;
        _memory.ReleaseReference();
    }

    private void InitializeRing()
    {
        new Span<byte>(_ring, PackedQueueLayout.DescriptorRingBytes(_size)).Clear();
        new Span<byte>(_driverEvent, EventSuppression.Size).Clear();
        new Span<byte>(_deviceEvent, EventSuppression.Size).Clear();
        for (int i = 0; i < _size; i++)
        {
            _freeIds[i] = (ushort)(_size - 1 - i); // ID 0 is handed out first
            _buffers[i] = default;
        }

        _hot.FreeIdCount = _size;
        _hot.AddOrderFirst = 0;
        _hot.BatchRemaining = 0;
        _hot.NextAvail = 0;
        _hot.AvailWrap = true;
        _hot.NextUsed = 0;
        _hot.UsedWrap = true;
        _hot.AddedSinceKick = 0;
        _hot.DriverEventWritten = 0;
        _hot.CallbacksEnabled = true;
        _hot.DetachCursor = 0;
        _hot.Error = QueueError.None;
        _hot.ErrorDetail = 0;
        _hot.Halted = false;
    }

    /// <summary>Writes a direct list from the next free slot; returns the head's flags, not yet stored.</summary>
    private ushort WriteList(ReadOnlySpan<GuestRange> readable, ReadOnlySpan<GuestRange> writable, ushort id)
    {
        int last = readable.Length + writable.Length - 1;
        ushort headFlags = 0;
        for (int i = 0; i <= last; i++)
        {
            bool isWritable = i >= readable.Length;
            GuestRange range = isWritable ? writable[i - readable.Length] : readable[i];
            ushort flags = (ushort)(PackedDescriptor.AvailableBits(_hot.AvailWrap)
                | (isWritable ? PackedDescriptor.FlagWrite : 0)
                | (i < last ? PackedDescriptor.FlagNext : 0));
            byte* desc = _ring + ((nuint)_hot.NextAvail * PackedDescriptor.Size);
            LittleEndian.Write64(desc, range.Address);
            LittleEndian.Write32(desc + PackedDescriptor.LengthOffset, range.Length);
            LittleEndian.Write16(desc + PackedDescriptor.IdOffset, id); // 2.8.6: the last one's ID counts
            if (i == 0)
            {
                headFlags = flags;
            }
            else
            {
                LittleEndian.Write16(desc + PackedDescriptor.FlagsOffset, flags);
            }

            Advance(ref _hot.NextAvail, ref _hot.AvailWrap, 1);
        }

        return headFlags;
    }

    private void WriteIndirectTable(ReadOnlySpan<GuestRange> readable, ReadOnlySpan<GuestRange> writable, int table)
    {
        Debug.Assert(_pool != null, "indirect lists need the pool");
        byte* entries = _pool.TableHost(table);
        int total = readable.Length + writable.Length;
        for (int i = 0; i < total; i++)
        {
            bool isWritable = i >= readable.Length;
            GuestRange range = isWritable ? writable[i - readable.Length] : readable[i];
            Unsafe.WriteUnaligned(
                entries + ((nuint)i * PackedDescriptor.Size),
                new PackedDescriptor(range.Address, range.Length, 0, isWritable ? PackedDescriptor.FlagWrite : (ushort)0));
        }
    }

    private TToken FreeBuffer(ushort id)
    {
        ref BufferState state = ref _buffers[id];
        Debug.Assert(state.Slots != 0, "only buffers in flight are freed");
        if (state.Info > BufferState.NoTableMax)
        {
            _pool!.Return(state.IndirectTable);
        }

        TToken token = state.Token;
        if (RuntimeHelpers.IsReferenceOrContainsReferences<TToken>())
        {
            state.Token = default!; // let the collector have it
        }

        state.Info = 0; // not in flight
        _freeIds[_hot.FreeIdCount++] = id;
        return token;
    }

    /// <summary>
    /// Free descriptor slots: Q less the slots in flight, derived from the positions, so add and get-used store
    /// nothing for it.
    /// </summary>
    private int FreeSlots => _size - PackedRingPosition.SlotsBetween(_hot.NextUsed, _hot.UsedWrap, _hot.NextAvail, _hot.AvailWrap, _size);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Advance(ref ushort position, ref bool wrap, int slots)
    {
        int next = position + slots;
        if (next >= _size)
        {
            next -= _size;
            wrap = !wrap;
        }

        position = (ushort)next;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool RecheckUsed()
    {
        // No out parameter for the flags (the callers do not need them): taking a local's address would keep the
        // hot path's flags in memory instead of a register.
        if (_hot.Halted)
        {
            ThrowIfDisposed();
            return false;
        }

        if (!_hot.CallbacksEnabled || !_eventIdx || !WriteDriverEvent(EventSuppression.Encode(_hot.NextUsed, _hot.UsedWrap), EventSuppression.FlagsDesc))
        {
            return false;
        }

        Interlocked.MemoryBarrier(); // store the event before re-loading the slot's flags
        ushort flags = LittleEndian.VolatileRead16(_ring + ((nuint)_hot.NextUsed * PackedDescriptor.Size) + PackedDescriptor.FlagsOffset);
        return PackedDescriptor.IsUsed(flags, _hot.UsedWrap);
    }

    private static NotificationRecheck Recheck(bool pending) =>
        pending ? NotificationRecheck.BuffersPending : NotificationRecheck.NothingPending;

    private bool EnableUsedNotificationsAt(int slotsAhead)
    {
        ThrowIfDisposed();
        if (_hot.Halted)
        {
            return false;
        }

        _hot.CallbacksEnabled = true;
        if (_eventIdx)
        {
            ushort position = _hot.NextUsed;
            bool wrap = _hot.UsedWrap;
            Advance(ref position, ref wrap, slotsAhead);
            WriteDriverEvent(EventSuppression.Encode(position, wrap), EventSuppression.FlagsDesc);
        }
        else
        {
            WriteDriverEvent(0, EventSuppression.FlagsEnable);
        }

        // Store-load: the enable must be visible before the next used slot is looked at again.
        Interlocked.MemoryBarrier();
        ushort flags = LittleEndian.VolatileRead16(_ring + ((nuint)_hot.NextUsed * PackedDescriptor.Size) + PackedDescriptor.FlagsOffset);
        if (!PackedDescriptor.IsUsed(flags, _hot.UsedWrap))
        {
            return false;
        }

        if (slotsAhead == 0)
        {
            return true;
        }

        // Delayed: report only when the used descriptors already reach past the requested slot.
        ushort scan = _hot.NextUsed;
        bool scanWrap = _hot.UsedWrap;
        int seen = 0;
        while (seen <= slotsAhead)
        {
            byte* desc = _ring + ((nuint)scan * PackedDescriptor.Size);
            if (!PackedDescriptor.IsUsed(LittleEndian.VolatileRead16(desc + PackedDescriptor.FlagsOffset), scanWrap))
            {
                return false;
            }

            ushort id = LittleEndian.Read16(desc + PackedDescriptor.IdOffset);
            int slots = id < _size ? _buffers[id].Slots : 0;
            if (slots == 0)
            {
                return true; // let TryGetUsed see and report the bad id
            }

            seen += slots;
            Advance(ref scan, ref scanWrap, slots);
        }

        return true;
    }

    private bool WriteDriverEvent(ushort desc, ushort flags)
    {
        uint value = desc | ((uint)flags << 16);
        if (value == _hot.DriverEventWritten)
        {
            return false;
        }

        _hot.DriverEventWritten = value;
        LittleEndian.VolatileWrite32(_driverEvent, value);
        return true;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool AddSlow(int total)
    {
        ThrowIfDisposed();
        if (total == 0)
        {
            ThrowHelper.ThrowArgument(nameof(total), "A buffer needs at least one element.");
        }

        if (total > _size)
        {
            ThrowHelper.ThrowArgument(nameof(total), $"A list of {total} elements is longer than the queue ({_size}).");
        }

        return false;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void Fail(QueueError error, ulong detail)
    {
        if (_hot.Error == QueueError.None)
        {
            _hot.Error = error;
            _hot.ErrorDetail = detail;
        }

        _hot.Halted = true;
    }

    private void ThrowIfDisposed()
    {
        if (_hot.Disposed)
        {
            ThrowHelper.ThrowObjectDisposed(nameof(PackedDriverVirtqueue<TToken>));
        }
    }

    private struct BufferState
    {
        /// <summary>Largest <see cref="Info"/> of a buffer without an indirect table.</summary>
        public const uint NoTableMax = 0xFFFF;

        public TToken Token;
        public uint Info; // slots in the low 16 bits (0: not in flight), indirect table + 1 in the high: one store
        public uint WritableBytes; // IN_ORDER: reported for buffers a batch covers without naming them

        /// <summary>Ring slots the buffer occupies; 0 when it is not in flight.</summary>
        public readonly int Slots => (int)(Info & 0xFFFF);

        /// <summary>The buffer's indirect table, or -1.</summary>
        public readonly int IndirectTable => (int)(Info >> 16) - 1;

        public static uint Pack(int slots, int table)
        {
            Debug.Assert(slots is > 0 and <= 32768 && table is >= -1 and < 32768, "a queue and a pool have at most 32768 of each");
            return (uint)slots | ((uint)(table + 1) << 16);
        }
    }
}

using System;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Threading;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Split;

/// <summary>
/// The driver side of a split virtqueue (VIRTIO 1.x, 2.7): what a guest driver does to hand buffers to a device
/// and get them back. Used by in-process simulations, tests, and anything that plays the guest.
/// <para>
/// <b>Protocol.</b> <see cref="TryAdd"/> writes a chain's descriptors and its head into the next available-ring
/// slot; nothing is visible to the device yet. <see cref="PublishAvailable"/> makes every added chain available with one
/// release store of <c>avail-&gt;idx</c> (2.7.13.3), then, after a full barrier, reads the device's suppression
/// state and says whether to notify (2.7.13.4, <c>virtqueue_kick_prepare</c>). <see cref="TryGetUsed"/> reads
/// <c>used-&gt;idx</c> with acquire semantics before the used elements it covers.
/// </para>
/// <para>
/// <b>Bookkeeping.</b> The free list, each chain's length, tail and indirect table, and the caller's token live
/// in this object, never in the shared descriptor table: a device scribbling on descriptors cannot corrupt the
/// driver. Used elements from the device are still checked (the id must be a chain in flight, the used index may
/// not run ahead of what is in flight) and a violation breaks the queue instead of corrupting it.
/// </para>
/// <para>
/// <b>Tokens.</b> <typeparamref name="TToken"/> is stored in a per-head array: any type, no boxing, no allocation.
/// </para>
/// </summary>
/// <typeparam name="TToken">What the caller gets back with each used buffer.</typeparam>
public sealed unsafe class SplitDriverVirtqueue<TToken> : IDisposable
{
    private SplitDriverState _hot; // this side's mutable state, alone on its cache lines (see SplitDriverState)
    private readonly GuestMemory _memory;
    private readonly SplitQueueLayout _layout;
    private readonly IndirectDescriptorPool? _pool;
    private readonly int _size;
    private readonly ushort _mask;
    private readonly bool _eventIdx;
    private readonly byte* _descTable;
    private readonly byte* _avail;
    private readonly byte* _used;
    private readonly byte* _usedEvent;
    private readonly byte* _availEvent;

    // Driver-private state.
    private readonly ushort[] _next;          // free list and chain links (never the shared table's next fields)
    private readonly HeadState[] _heads;      // per head descriptor: chain length, tail, indirect table, token
    private readonly bool _inOrder;
    private readonly ushort[]? _addOrder;     // IN_ORDER: heads in flight, oldest first (a ring of Q entries)

    /// <summary>
    /// Places a fresh queue at <paramref name="layout"/>: zeroes the three areas and starts every index at 0,
    /// as a driver does before it tells the device where the queue is (3.1.1).
    /// </summary>
    /// <param name="memory">Guest memory holding the rings.</param>
    /// <param name="layout">Queue size and area addresses (aligned, inside guest memory).</param>
    /// <param name="features">Negotiated ring features.</param>
    /// <param name="indirectPool">
    /// Tables for indirect chains; used only when <see cref="VirtqueueFeatures.IndirectDescriptors"/> is
    /// negotiated. The driver becomes its only user.
    /// </param>
    public SplitDriverVirtqueue(GuestMemory memory, in SplitQueueLayout layout, VirtqueueFeatures features, IndirectDescriptorPool? indirectPool = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        SplitQueueLayout.ValidateQueueSize(layout.QueueSize);
        if (layout.Validate() != QueueError.None)
        {
            ThrowHelper.ThrowArgument(nameof(layout), "Ring areas must be aligned: descriptor table 16, available ring 2, used ring 4.");
        }

        int q = layout.QueueSize;
        _descTable = memory.TranslateOrNull(layout.DescriptorTableAddress, (ulong)SplitQueueLayout.DescriptorTableBytes(q));
        _avail = memory.TranslateOrNull(layout.DriverAreaAddress, (ulong)SplitQueueLayout.AvailRingBytes(q));
        _used = memory.TranslateOrNull(layout.DeviceAreaAddress, (ulong)SplitQueueLayout.UsedRingBytes(q));
        if (_descTable == null || _avail == null || _used == null)
        {
            ThrowHelper.ThrowArgument(nameof(layout), "Every ring area must lie inside one guest memory region.");
        }

        memory.AddReference();
        _memory = memory;
        _layout = layout;
        Features = features;
        _pool = (features & VirtqueueFeatures.IndirectDescriptors) != 0 ? indirectPool : null;
        _size = q;
        _mask = (ushort)(q - 1);
        _eventIdx = (features & VirtqueueFeatures.EventIndex) != 0;
        _usedEvent = _avail + SplitQueueLayout.UsedEventOffset(q);
        _availEvent = _used + SplitQueueLayout.AvailEventOffset(q);
        _next = new ushort[q];
        _heads = new HeadState[q];
        _inOrder = (features & VirtqueueFeatures.InOrder) != 0;
        _addOrder = _inOrder ? new ushort[q] : null;
        InitializeRing();
    }

    /// <summary>Queue size Q.</summary>
    public int QueueSize => _size;

    /// <summary>Where the queue lives.</summary>
    public SplitQueueLayout Layout => _layout;

    /// <summary>Negotiated ring features.</summary>
    public VirtqueueFeatures Features { get; }

    /// <summary>Free descriptors in the table.</summary>
    public int FreeDescriptors => _hot.NumFree;

    /// <summary>Chains added and not yet returned used (published or not).</summary>
    public int InFlight => _hot.InFlight;

    /// <summary>Why the queue is broken (the device violated the protocol), or <see cref="QueueError.None"/>.</summary>
    public QueueError Error => _hot.Error;

    /// <summary>The offending value of <see cref="Error"/>.</summary>
    public ulong ErrorDetail => _hot.ErrorDetail;

    /// <summary>True once the device broke a rule.</summary>
    public bool IsBroken => _hot.Error != QueueError.None;

    /// <summary>
    /// Adds a chain of device-readable then device-writable buffers. It becomes visible to the device at the
    /// next <see cref="PublishAvailable"/>. Returns false when the descriptor table has no room (or the queue is broken);
    /// a chain longer than the queue can never be added and throws. With indirect descriptors negotiated and a
    /// pool table free, a multi-buffer chain costs one ring descriptor.
    /// </summary>
    public bool TryAdd(ReadOnlySpan<GuestRange> readable, ReadOnlySpan<GuestRange> writable, TToken token)
    {
        int total = readable.Length + writable.Length;
        if (_hot.Halted || (uint)(total - 1) >= (uint)_size)
        {
            return AddSlow(total);
        }

        ushort head;
        int descriptors;
        if (total > 1 && _pool != null && _pool.TryRent(total, out int table))
        {
            if (_hot.NumFree == 0)
            {
                _pool.Return(table);
                return false;
            }

            head = WriteIndirect(readable, writable, table);
            descriptors = 1;
            _heads[head].IndirectTable = table;
            _heads[head].Tail = head;
        }
        else
        {
            if (total > _hot.NumFree)
            {
                return false;
            }

            head = WriteDirect(readable, writable, out ushort tail);
            descriptors = total;
            _heads[head].IndirectTable = -1;
            _heads[head].Tail = tail;
        }

        ref HeadState state = ref _heads[head];
        state.DescriptorCount = (ushort)descriptors;
        state.Token = token;
        _hot.NumFree -= descriptors;
        if (_addOrder != null)
        {
            state.WritableBytes = SumLengths(writable);
            _addOrder[(_hot.AddOrderFirst + _hot.InFlight) & _mask] = head; // Q is a power of 2 (2.7)
        }

        _hot.InFlight++;

        // The slot is free: at most Q chains are in flight, so the device consumed the entry Q adds ago.
        LittleEndian.Write16(_avail + SplitQueueLayout.RingEntriesOffset + (2 * (_hot.AvailShadow & _mask)), head);
        _hot.AvailShadow++;
        return true;
    }

    /// <summary>
    /// Makes every added chain available to the device (one release store of the available ring's idx) without
    /// the kick decision: what a polling driver does after each add, like Linux's <c>virtqueue_add</c>.
    /// </summary>
    public void FlushAvailable()
    {
        if (_hot.Halted)
        {
            ThrowIfDisposed();
            return;
        }

        ushort now = _hot.AvailShadow;
        if (now != _hot.AvailPublished)
        {
            // 2.7.13.3: descriptors and ring entries before idx. The release store orders every earlier store
            // before it (x86-64: plain store; ARM64: stlr).
            LittleEndian.VolatileWrite16(_avail + SplitQueueLayout.RingIdxOffset, now);
            _hot.AvailPublished = now;
        }
    }

    /// <summary>
    /// Makes every added chain available (<see cref="FlushAvailable"/>) and returns whether the device must be
    /// notified of what was published since the last decision (<c>virtqueue_kick_prepare</c>): with EVENT_IDX when
    /// the new index passed the device's <c>avail_event</c>, otherwise unless the device set <c>VIRTQ_USED_F_NO_NOTIFY</c>.
    /// </summary>
    public bool PublishAvailable()
    {
        FlushAvailable();
        ushort now = _hot.AvailPublished;
        ushort old = _hot.AvailKicked;
        if (now == old || _hot.Halted)
        {
            return false;
        }

        _hot.AvailKicked = now;

        // 2.7.13.4: the idx store must be visible before we read the device's flags/avail_event; store-load order
        // needs a full barrier on every architecture.
        Interlocked.MemoryBarrier();
        if (_eventIdx)
        {
            return EventIndex.NeedsNotification(LittleEndian.Read16(_availEvent), now, old);
        }

        return (LittleEndian.Read16(_used + SplitQueueLayout.RingFlagsOffset) & SplitQueueLayout.UsedFlagNoNotify) == 0;
    }

    /// <summary>
    /// Takes the next used chain back: its token and the number of bytes the device says it wrote. Returns false
    /// when the device has returned nothing new (or the queue is broken). With used-buffer notifications enabled
    /// and EVENT_IDX, finding the ring empty re-arms <c>used_event</c> and looks once more, so no interrupt is
    /// lost between the last look and the next wait.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGetUsed([MaybeNullWhen(false)] out TToken token, out uint writtenLength)
    {
        if (_addOrder != null)
        {
            return TryGetUsedInOrder(out token, out writtenLength);
        }

        ushort last = _hot.LastUsed;
        if (last == _hot.UsedIdxShadow && !RefreshUsedIndex())
        {
            token = default;
            writtenLength = 0;
            return false;
        }

        // Covered by the acquire load of used->idx in RefreshUsedIndex.
        byte* element = _used + SplitQueueLayout.RingEntriesOffset + (UsedElement.Size * (last & _mask));
        uint id = LittleEndian.Read32(element);
        uint length = LittleEndian.Read32(element + 4);
        if (id >= (uint)_size || _heads[id].DescriptorCount == 0)
        {
            Fail(QueueError.UsedIdInvalid, id);
            token = default;
            writtenLength = 0;
            return false;
        }

        _hot.LastUsed = (ushort)(last + 1);
        token = FreeChain((ushort)id);
        writtenLength = length;
        return true;
    }

    /// <summary>
    /// IN_ORDER (2.7.9): the used element at the next used slot names the last chain of a batch; every chain in
    /// flight up to it, oldest first, is used, the earlier ones fully written. The batch may not be longer than
    /// what the used index published.
    /// </summary>
    private bool TryGetUsedInOrder([MaybeNullWhen(false)] out TToken token, out uint writtenLength)
    {
        Debug.Assert(_addOrder != null, "in-order bookkeeping exists");
        token = default;
        writtenLength = 0;
        if (_hot.BatchRemaining == 0)
        {
            ushort last = _hot.LastUsed;
            if (last == _hot.UsedIdxShadow && !RefreshUsedIndex())
            {
                return false;
            }

            byte* element = _used + SplitQueueLayout.RingEntriesOffset + (UsedElement.Size * (last & _mask));
            uint id = LittleEndian.Read32(element);
            uint length = LittleEndian.Read32(element + 4);
            int published = (ushort)(_hot.UsedIdxShadow - last);
            int count = 0;
            while (count < _hot.InFlight && count < published && _addOrder[(_hot.AddOrderFirst + count) & _mask] != id)
            {
                count++;
            }

            if (count == _hot.InFlight || count == published)
            {
                Fail(QueueError.UsedIdInvalid, id);
                return false;
            }

            _hot.BatchRemaining = count + 1;
            _hot.BatchLastLength = length;
        }

        ushort head = _addOrder[_hot.AddOrderFirst];
        _hot.AddOrderFirst = (_hot.AddOrderFirst + 1) & _mask;
        writtenLength = --_hot.BatchRemaining == 0 ? _hot.BatchLastLength : _heads[head].WritableBytes;
        _hot.LastUsed++;
        token = FreeChain(head);
        return true;
    }

    private static uint SumLengths(ReadOnlySpan<GuestRange> ranges)
    {
        uint sum = 0;
        foreach (GuestRange r in ranges)
        {
            sum += r.Length;
        }

        return sum;
    }

    /// <summary>
    /// Asks the device not to send used-buffer notifications (without EVENT_IDX: <c>VIRTQ_AVAIL_F_NO_INTERRUPT</c>;
    /// with it, <c>used_event</c> is parked just behind the used index so it will not be crossed). Advisory.
    /// </summary>
    public void DisableUsedNotifications()
    {
        ThrowIfDisposed();
        if (!_hot.CallbacksEnabled || _hot.Halted)
        {
            return;
        }

        _hot.CallbacksEnabled = false;
        if (_eventIdx)
        {
            WriteUsedEvent((ushort)(_hot.LastUsed - 1));
        }
        else
        {
            WriteAvailFlags((ushort)(_hot.AvailFlagsShadow | SplitQueueLayout.AvailFlagNoInterrupt));
        }
    }

    /// <summary>
    /// Asks for a used-buffer notification for the next used buffer and re-checks. Returns
    /// <see cref="NotificationRecheck.BuffersPending"/> when used buffers are already waiting (the caller should
    /// take them now instead of waiting for an interrupt).
    /// </summary>
    public NotificationRecheck EnableUsedNotifications() => Recheck(EnableUsedNotificationsAt(0));

    /// <summary>
    /// Like <see cref="EnableUsedNotifications"/>, but with EVENT_IDX asks to be notified only after about three
    /// quarters of the chains in flight are used (<c>virtqueue_enable_cb_delayed</c>). Returns
    /// <see cref="NotificationRecheck.BuffersPending"/> when more than that many are already waiting.
    /// </summary>
    public NotificationRecheck EnableUsedNotificationsDelayed() => Recheck(
        EnableUsedNotificationsAt(_eventIdx ? (ushort)((ushort)(_hot.AvailShadow - _hot.LastUsed) * 3 / 4) : (ushort)0));

    /// <summary>
    /// After a device reset: hands back, one at a time, the token of every chain still in flight and frees its
    /// descriptors. Returns false when none is left. Then call <see cref="Reset"/>.
    /// </summary>
    public bool TryDetachUnused([MaybeNullWhen(false)] out TToken token)
    {
        ThrowIfDisposed();
        for (; _hot.DetachCursor < _size; _hot.DetachCursor++)
        {
            if (_heads[_hot.DetachCursor].DescriptorCount != 0)
            {
                token = FreeChain((ushort)_hot.DetachCursor);
                return true;
            }
        }

        token = default;
        return false;
    }

    /// <summary>
    /// Returns the queue to its initial state (ring memory zeroed, indices 0, broken state cleared), as after a
    /// device or queue reset. Every chain must have been taken back first (<see cref="TryDetachUnused"/>).
    /// </summary>
    public void Reset()
    {
        ThrowIfDisposed();
        if (_hot.InFlight != 0)
        {
            ThrowHelper.ThrowInvalidOperation($"{_hot.InFlight} chains are still in flight: take them back with TryDetachUnused first.");
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
        _hot.UsedIdxShadow = _hot.LastUsed;
        _memory.ReleaseReference();
    }

    private void InitializeRing()
    {
        new Span<byte>(_descTable, SplitQueueLayout.DescriptorTableBytes(_size)).Clear();
        new Span<byte>(_avail, SplitQueueLayout.AvailRingBytes(_size)).Clear();
        new Span<byte>(_used, SplitQueueLayout.UsedRingBytes(_size)).Clear();
        for (int i = 0; i < _size; i++)
        {
            _next[i] = (ushort)(i + 1);
            _heads[i] = default;
        }

        _hot.FreeHead = 0;
        _hot.FreeTail = (ushort)(_size - 1);
        _hot.NumFree = _size;
        _hot.AddOrderFirst = 0;
        _hot.BatchRemaining = 0;
        _hot.InFlight = 0;
        _hot.AvailShadow = 0;
        _hot.AvailPublished = 0;
        _hot.AvailKicked = 0;
        _hot.LastUsed = 0;
        _hot.UsedIdxShadow = 0;
        _hot.UsedEventWritten = 0;
        _hot.AvailFlagsShadow = 0;
        _hot.CallbacksEnabled = true;
        _hot.DetachCursor = 0;
        _hot.Error = QueueError.None;
        _hot.ErrorDetail = 0;
        _hot.Halted = false;
    }

    private ushort WriteDirect(ReadOnlySpan<GuestRange> readable, ReadOnlySpan<GuestRange> writable, out ushort tail)
    {
        ushort head = _hot.FreeHead;
        ushort index = head;
        int last = readable.Length + writable.Length - 1;
        for (int i = 0; i <= last; i++)
        {
            bool isWritable = i >= readable.Length;
            GuestRange range = isWritable ? writable[i - readable.Length] : readable[i];
            ushort next = _next[index];
            ushort flags = (ushort)((isWritable ? SplitDescriptor.FlagWrite : 0) | (i < last ? SplitDescriptor.FlagNext : 0));
            Unsafe.WriteUnaligned(
                _descTable + ((nuint)index * SplitDescriptor.Size),
                new SplitDescriptor(range.Address, range.Length, flags, i < last ? next : (ushort)0));
            if (i < last)
            {
                index = next;
            }
        }

        tail = index;
        _hot.FreeHead = _next[index];
        return head;
    }

    private ushort WriteIndirect(ReadOnlySpan<GuestRange> readable, ReadOnlySpan<GuestRange> writable, int table)
    {
        Debug.Assert(_pool != null, "indirect chains need the pool");
        byte* entries = _pool.TableHost(table);
        int last = readable.Length + writable.Length - 1;
        for (int i = 0; i <= last; i++)
        {
            bool isWritable = i >= readable.Length;
            GuestRange range = isWritable ? writable[i - readable.Length] : readable[i];
            ushort flags = (ushort)((isWritable ? SplitDescriptor.FlagWrite : 0) | (i < last ? SplitDescriptor.FlagNext : 0));
            Unsafe.WriteUnaligned(
                entries + ((nuint)i * SplitDescriptor.Size),
                new SplitDescriptor(range.Address, range.Length, flags, i < last ? (ushort)(i + 1) : (ushort)0));
        }

        ushort head = _hot.FreeHead;
        _hot.FreeHead = _next[head];
        Unsafe.WriteUnaligned(
            _descTable + ((nuint)head * SplitDescriptor.Size),
            new SplitDescriptor(_pool.TableAddress(table), (uint)((last + 1) * SplitDescriptor.Size), SplitDescriptor.FlagIndirect, 0));
        return head;
    }

    private TToken FreeChain(ushort head)
    {
        ref HeadState state = ref _heads[head];
        Debug.Assert(state.DescriptorCount != 0, "only chains in flight are freed");
        if (_inOrder)
        {
            // 2.7.9: with IN_ORDER the driver uses descriptors in ring order, so a chain freed (oldest first)
            // goes to the end of the free list, not its front.
            if (_hot.NumFree == 0)
            {
                _hot.FreeHead = head;
            }
            else
            {
                _next[_hot.FreeTail] = head;
            }

            _hot.FreeTail = state.Tail;
        }
        else
        {
            _next[state.Tail] = _hot.FreeHead;
            _hot.FreeHead = head;
        }

        _hot.NumFree += state.DescriptorCount;
        if (state.IndirectTable >= 0)
        {
            _pool!.Return(state.IndirectTable);
        }

        TToken token = state.Token;
        state = default;
        _hot.InFlight--;
        return token;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool AddSlow(int total)
    {
        ThrowIfDisposed();
        if (total == 0)
        {
            ThrowHelper.ThrowArgument(nameof(total), "A chain needs at least one buffer.");
        }

        if (total > _size)
        {
            ThrowHelper.ThrowArgument(nameof(total), $"A chain of {total} buffers is longer than the queue ({_size}); 2.7.5.3.1 forbids it.");
        }

        return false; // broken
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool RefreshUsedIndex()
    {
        if (!ReadUsedIndex(out ushort idx))
        {
            return false;
        }

        if (idx != _hot.LastUsed)
        {
            return true;
        }

        if (!_hot.CallbacksEnabled || !_eventIdx || _hot.UsedEventWritten == _hot.LastUsed)
        {
            return false;
        }

        WriteUsedEvent(_hot.LastUsed);
        Interlocked.MemoryBarrier(); // store used_event before re-loading used->idx (store-load: full barrier)
        return ReadUsedIndex(out idx) && idx != _hot.LastUsed;
    }

    private bool ReadUsedIndex(out ushort idx)
    {
        if (_hot.Halted)
        {
            ThrowIfDisposed();
            idx = _hot.LastUsed;
            return false;
        }

        // Acquire: the used elements this idx covers are read after it (pairs with the device's release store).
        idx = LittleEndian.VolatileRead16(_used + SplitQueueLayout.RingIdxOffset);

        // The device can only have used chains it could see: those in flight minus the added-but-unpublished.
        int published = _hot.InFlight - (ushort)(_hot.AvailShadow - _hot.AvailPublished);
        if ((ushort)(idx - _hot.LastUsed) > published)
        {
            return Fail(QueueError.UsedIndexJump, idx);
        }

        _hot.UsedIdxShadow = idx;
        return true;
    }

    private static NotificationRecheck Recheck(bool pending) =>
        pending ? NotificationRecheck.BuffersPending : NotificationRecheck.NothingPending;

    private bool EnableUsedNotificationsAt(ushort ahead)
    {
        ThrowIfDisposed();
        if (_hot.Halted)
        {
            return false;
        }

        _hot.CallbacksEnabled = true;
        if (_eventIdx)
        {
            WriteUsedEvent((ushort)(_hot.LastUsed + ahead));
        }
        else
        {
            WriteAvailFlags((ushort)(_hot.AvailFlagsShadow & ~SplitQueueLayout.AvailFlagNoInterrupt));
        }

        // Our request must be visible before we re-check used->idx (store-load order: full barrier), or a device
        // that used a buffer in between and read the old state would not interrupt while we would not look.
        Interlocked.MemoryBarrier();
        return ReadUsedIndex(out ushort idx) && (ushort)(idx - _hot.LastUsed) > ahead;
    }

    private void WriteUsedEvent(ushort value)
    {
        LittleEndian.Write16(_usedEvent, value);
        _hot.UsedEventWritten = value;
    }

    private void WriteAvailFlags(ushort value)
    {
        if (value != _hot.AvailFlagsShadow)
        {
            _hot.AvailFlagsShadow = value;
            LittleEndian.Write16(_avail + SplitQueueLayout.RingFlagsOffset, value);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool Fail(QueueError error, ulong detail)
    {
        if (_hot.Error == QueueError.None)
        {
            _hot.Error = error;
            _hot.ErrorDetail = detail;
        }

        _hot.Halted = true;
        _hot.UsedIdxShadow = _hot.LastUsed;
        return false;
    }

    private void ThrowIfDisposed()
    {
        if (_hot.Disposed)
        {
            ThrowHelper.ThrowObjectDisposed(nameof(SplitDriverVirtqueue<TToken>));
        }
    }

    private struct HeadState
    {
        public TToken Token;
        public int IndirectTable;
        public ushort DescriptorCount;
        public ushort Tail;
        public uint WritableBytes; // IN_ORDER: reported for chains a batch covers without naming them
    }
}

using System;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Virtio.Balloon.GuestAllocator;
using Virtio.Balloon.Hints;
using Virtio.Ring;

namespace Virtio.Balloon.Driver;

/// <summary>
/// Free page hinting, guest side: both protocols (<see cref="FreePageHintProtocol"/>), modelled on Linux's
/// <c>report_free_page_func</c> and the original patch, with the patch's bookkeeping errors fixed.
/// <para>
/// <b>What the patch got wrong, and what this does instead.</b> It sized the last array from the number of blocks
/// that might be free, not from those loaded (a last array exactly full, or no free block at all, gave a wrong
/// count or an underflow); it stopped at a full ring with an error, dropping the rest and never sending the stop
/// command; its used-buffer callback stopped reclaiming at the first command buffer, so arrays used after one were
/// leaked; and it freed the wrong array on an allocation failure. Here the arrays come from a fixed pool in guest
/// memory and are filled one at a time straight from the free lists (so every count is the number actually
/// written, and a report never needs more arrays than the pool has); a full ring or an empty pool waits for used
/// buffers; every used buffer is identified by its token whatever order it comes back in; and the stop command is
/// always sent, even after an early stop (the device ignores a stale one, as Linux relies on).
/// </para>
/// </summary>
public sealed partial class BalloonDriver
{
    private const int HintStartToken = -1;
    private const int HintStopToken = -2;
    private const int HintBlockToken = -3;
    private const int HintCheckInterval = 32; // blocks between two looks at the command id (standard protocol)

    private readonly ulong[] _hintScratch = new ulong[256];
    private ulong[] _hintArrays = [];
    private int[] _freeHintArrays = [];
    private int _freeHintArrayCount;
    private ulong _hintCommandPage;
    private bool _hintStartInFlight;
    private bool _hintStopInFlight;
    private uint _hintActiveId;
    private (ulong Pfn, int Order)[] _hinted = new (ulong, int)[64];
    private int _hintedCount;
    private HintCursor _cursor;
    private uint _hintCommandCache;
    private uint _hintCommandGeneration;
    private bool _hintCommandCached;

    /// <summary>Reports started (a command id the driver answered).</summary>
    public long FreePageHintReports { get; private set; }

    /// <summary>Free blocks hinted in all (entries of arrays, or block buffers).</summary>
    public long HintBlocksSent { get; private set; }

    /// <summary>Blocks sent in the last report.</summary>
    public long LastReportBlocks { get; private set; }

    /// <summary>Hint arrays sent in the last report (hint-array protocol).</summary>
    public int LastReportArrays { get; private set; }

    /// <summary>The id of the last report the driver started.</summary>
    public uint ActiveHintCommandId => _hintActiveId;

    /// <summary>Pages taken off the free lists for the standard protocol and not given back yet (until DONE).</summary>
    public long HintedPagesHeld
    {
        get
        {
            lock (_allocator.SyncRoot)
            {
                long pages = 0;
                for (int i = 0; i < _hintedCount; i++)
                {
                    pages += 1L << _hinted[i].Order;
                }

                return pages;
            }
        }
    }

    /// <summary>
    /// The blocks the standard protocol holds off the free lists until DONE (a snapshot). They are free memory to
    /// the guest, whatever they contain: a migration's integrity check leaves them out.
    /// </summary>
    public GuestPageRange[] HeldHintBlocks()
    {
        lock (_allocator.SyncRoot)
        {
            var blocks = new GuestPageRange[_hintedCount];
            for (int i = 0; i < _hintedCount; i++)
            {
                blocks[i] = new GuestPageRange(_hinted[i].Pfn, 1UL << _hinted[i].Order);
            }

            return blocks;
        }
    }

    /// <summary>Hint arrays in the pool (hint-array protocol).</summary>
    public int HintArrayCount => _hintArrays.Length;

    /// <summary>Hint arrays in the pool and not in flight now.</summary>
    public int FreeHintArrays => _freeHintArrayCount;

    /// <summary>
    /// Waits up to <paramref name="timeout"/> for the interrupt line (the guest's idle loop); true when it fired.
    /// Call <see cref="Poll"/> after it either way.
    /// </summary>
    public bool WaitForInterrupt(TimeSpan timeout) => _interrupt.Wait(timeout);

    /// <summary>
    /// Acts on <c>free_page_hint_cmd_id</c> (Linux's <c>report_free_page_func</c>): DONE gives the hinted blocks
    /// back; a report id the driver has not answered yet starts a report; STOP, or the id already answered, does
    /// nothing. Returns the blocks hinted. <see cref="Poll"/> calls it on a configuration change.
    /// </summary>
    public long HandleFreePageHintCommand()
    {
        if (!_running || Layout.FreePageHint < 0)
        {
            return 0;
        }

        uint id = ReadHintCommandId(fresh: true); // a configuration change: read it again, as Linux does
        DriverVirtqueue<int> queue = _queues[Layout.FreePageHint]!;
        ReclaimHintBuffers(queue);
        if (id == FreePageHintCommand.Done)
        {
            ReturnHintedBlocks();
            return 0;
        }

        if (!FreePageHintCommand.IsReportId(id) || id == _hintActiveId)
        {
            return 0;
        }

        return ReportFreePageHints(id);
    }

    private long ReportFreePageHints(uint id)
    {
        _hintActiveId = id;
        FreePageHintReports++;
        DriverVirtqueue<int> queue = _queues[Layout.FreePageHint]!;
        ReclaimHintBuffers(queue);
        bool arrays = _options.HintProtocol == FreePageHintProtocol.HintArrays;
        uint blockBytes = (uint)BuddyAllocator.PageSize << _options.HintOrder;
        if (!SendHintCommand(queue, HintStartToken, id, blockBytes))
        {
            return 0;
        }

        _cursor = new HintCursor(BuddyAllocator.MaxOrder, _allocator.FirstPfn);
        LastReportArrays = 0;
        long blocks = arrays ? SendHintArrays(queue, id) : SendHintBlocks(queue, id);
        HintBlocksSent += blocks;
        LastReportBlocks = blocks;

        // Always end with STOP, even after an early stop: a device that moved on ignores it.
        if (_running && SendHintCommand(queue, HintStopToken, FreePageHintCommand.Stop, 0))
        {
            ReclaimHintBuffers(queue);
        }

        return blocks;
    }

    /// <summary>The hint-array protocol: fill a pool array from the free lists, pack it in place, send it; repeat.</summary>
    private long SendHintArrays(DriverVirtqueue<int> queue, uint id)
    {
        long sent = 0;
        int capacity = _options.HintArrayBytes / 8;
        while (_running && ReadHintCommandId() == id)
        {
            if (!TakeHintArray(queue, id, out int index))
            {
                break;
            }

            ulong gpa = _hintArrays[index];
            _memory.TryGetSpan(gpa, _options.HintArrayBytes, out Span<byte> bytes);
            Span<ulong> entries = MemoryMarshal.Cast<byte, ulong>(bytes);
            int n = FillHintPfns(entries[..capacity]);
            if (n == 0)
            {
                _freeHintArrays[_freeHintArrayCount++] = index;
                break;
            }

            // PFNs to le64 (or be64) addresses, in place: each vector is loaded before it is stored over.
            HintPacking.PackAddresses(entries[..n], bytes, _options.LegacyBigEndianHints);
            _options.GuestWriteObserver?.Invoke(gpa, (ulong)n * 8);
            if (!AddHintBuffer(queue, id, [], [new GuestRange(gpa, (uint)(n * 8))], index))
            {
                break;
            }

            sent += n;
            LastReportArrays++;
            if (n < capacity)
            {
                break; // the free lists are exhausted: a partial last array, never an empty one
            }
        }

        return sent;
    }

    /// <summary>The standard protocol: take free blocks off the lists (until DONE) and send each as its own buffer.</summary>
    private long SendHintBlocks(DriverVirtqueue<int> queue, uint id)
    {
        long sent = 0;
        Span<GuestRange> one = stackalloc GuestRange[1];
        for (int order = BuddyAllocator.MaxOrder; order >= _options.HintOrder && _running; order--)
        {
            ulong from = _allocator.FirstPfn;
            while (_running)
            {
                if (ReadHintCommandId() != id)
                {
                    return sent;
                }

                int isolated = 0;
                int found;
                lock (_allocator.SyncRoot)
                {
                    found = _allocator.CopyFreeBlocks(order, from, _hintScratch.AsSpan(0, HintCheckInterval), out from);
                    for (int i = 0; i < found; i++)
                    {
                        if (_allocator.TryIsolate(_hintScratch[i], order))
                        {
                            _hintScratch[isolated++] = _hintScratch[i];
                            HoldHinted(_hintScratch[i], order);
                        }
                    }
                }

                if (found == 0)
                {
                    break;
                }

                for (int i = 0; i < isolated; i++)
                {
                    one[0] = new GuestRange(_hintScratch[i] << 12, (uint)BuddyAllocator.PageSize << order);
                    if (!AddHintBuffer(queue, id, [], one, HintBlockToken))
                    {
                        return sent; // stopped or reset: the blocks are held (or were given back by the reset)
                    }

                    sent++;
                }

                Kick(Layout.FreePageHint, queue);
            }
        }

        return sent;
    }

    /// <summary>
    /// Loads free block PFNs of the hint order into <paramref name="entries"/>, continuing from <see cref="_cursor"/>:
    /// blocks of the hint order as they are, larger blocks as their sub-blocks. The blocks stay on the free lists
    /// (a hint is only a hint). Returns how many were written.
    /// </summary>
    private int FillHintPfns(Span<ulong> entries)
    {
        int k = _options.HintOrder;
        int n = 0;
        lock (_allocator.SyncRoot)
        {
            while (n < entries.Length)
            {
                if (_cursor.SplitLeft > 0)
                {
                    int take = (int)Math.Min(_cursor.SplitLeft, (ulong)(entries.Length - n));
                    for (int i = 0; i < take; i++)
                    {
                        entries[n + i] = _cursor.SplitPfn + ((ulong)i << k);
                    }

                    n += take;
                    _cursor.SplitPfn += (ulong)take << k;
                    _cursor.SplitLeft -= (ulong)take;
                    continue;
                }

                if (_cursor.Order < k)
                {
                    break;
                }

                if (_cursor.Order == k)
                {
                    int copied = _allocator.CopyFreeBlocks(k, _cursor.NextPfn, entries[n..], out _cursor.NextPfn);
                    n += copied;
                    if (n < entries.Length)
                    {
                        _cursor = new HintCursor(k - 1, _allocator.FirstPfn); // this order is exhausted
                    }

                    continue;
                }

                // A larger order: one block at a time, each split into 2^(order - k) hints.
                int found = _allocator.CopyFreeBlocks(_cursor.Order, _cursor.NextPfn, _hintScratch.AsSpan(0, 1), out ulong next);
                if (found == 0)
                {
                    _cursor = new HintCursor(_cursor.Order - 1, _allocator.FirstPfn);
                    continue;
                }

                _cursor.NextPfn = next;
                _cursor.SplitPfn = _hintScratch[0];
                _cursor.SplitLeft = 1UL << (_cursor.Order - k);
            }
        }

        return n;
    }

    /// <summary>Adds a hint buffer, waiting for ring space when the ring is full; false when the report must end (new id, STOP, reset).</summary>
    private bool AddHintBuffer(DriverVirtqueue<int> queue, uint id, ReadOnlySpan<GuestRange> readable, ReadOnlySpan<GuestRange> writable, int token)
    {
        while (!queue.TryAdd(readable, writable, token))
        {
            if (!WaitForHintProgress(queue, id, needArray: false))
            {
                if (token >= 0)
                {
                    _freeHintArrays[_freeHintArrayCount++] = token; // unsent: back to the pool
                }

                return false;
            }
        }

        if (token >= 0)
        {
            Kick(Layout.FreePageHint, queue);
        }

        return true;
    }

    /// <summary>A free array from the pool, waiting for a used one when all are in flight; false when the report must end.</summary>
    private bool TakeHintArray(DriverVirtqueue<int> queue, uint id, out int index)
    {
        ReclaimHintBuffers(queue);
        while (_freeHintArrayCount == 0)
        {
            if (!WaitForHintProgress(queue, id, needArray: true))
            {
                index = -1;
                return false;
            }
        }

        index = _freeHintArrays[--_freeHintArrayCount];
        return true;
    }

    /// <summary>Sends a command buffer (start or stop), after its previous use came back.</summary>
    private bool SendHintCommand(DriverVirtqueue<int> queue, int token, uint id, uint blockBytes)
    {
        bool arrays = _options.HintProtocol == FreePageHintProtocol.HintArrays;
        int length = arrays ? FreePageHintCommand.ArrayCommandBytes : FreePageHintCommand.StandardCommandBytes;
        ulong gpa = _hintCommandPage + (token == HintStartToken ? 0UL : 64UL);
        DateTime deadline = DateTime.UtcNow + _options.Timeout;
        while (token == HintStartToken ? _hintStartInFlight : _hintStopInFlight)
        {
            ReclaimHintBuffers(queue);
            if (!(token == HintStartToken ? _hintStartInFlight : _hintStopInFlight))
            {
                break;
            }

            if (!WaitBounded(queue, deadline))
            {
                return false;
            }
        }

        _memory.TryGetSpan(gpa, length, out Span<byte> command);
        if (_options.LegacyBigEndianHints)
        {
            BinaryPrimitives.WriteUInt32BigEndian(command, id);
        }
        else
        {
            BinaryPrimitives.WriteUInt32LittleEndian(command, id);
        }

        if (arrays)
        {
            if (_options.LegacyBigEndianHints)
            {
                BinaryPrimitives.WriteUInt32BigEndian(command[4..], blockBytes);
            }
            else
            {
                BinaryPrimitives.WriteUInt32LittleEndian(command[4..], blockBytes);
            }
        }

        _options.GuestWriteObserver?.Invoke(gpa, (ulong)length);
        while (!queue.TryAdd([new GuestRange(gpa, (uint)length)], [], token))
        {
            ReclaimHintBuffers(queue);
            if (!WaitBounded(queue, deadline))
            {
                return false;
            }
        }

        if (token == HintStartToken)
        {
            _hintStartInFlight = true;
        }
        else
        {
            _hintStopInFlight = true;
        }

        Kick(Layout.FreePageHint, queue);
        return true;
    }

    /// <summary>
    /// Waits for used hint buffers (ring full, or pool empty) and reclaims them. False when the report must end: the
    /// command id moved on, the driver stopped, or the device did not answer within the timeout (then the driver
    /// resets, as for every request).
    /// </summary>
    private bool WaitForHintProgress(DriverVirtqueue<int> queue, uint id, bool needArray)
    {
        Kick(Layout.FreePageHint, queue);
        DateTime deadline = DateTime.UtcNow + _options.Timeout;
        while (_running)
        {
            if (ReclaimHintBuffers(queue) > 0 && (!needArray || _freeHintArrayCount > 0))
            {
                return ReadHintCommandId() == id;
            }

            if (ReadHintCommandId() != id)
            {
                return false;
            }

            if (!WaitBounded(queue, deadline))
            {
                return false;
            }
        }

        return false;
    }

    /// <summary>One bounded wait for the interrupt; resets the device when the deadline passed.</summary>
    private bool WaitBounded(DriverVirtqueue<int> queue, DateTime deadline)
    {
        if (queue.EnableUsedNotifications() == NotificationRecheck.BuffersPending)
        {
            return true;
        }

        TimeSpan left = deadline - DateTime.UtcNow;
        if (left <= TimeSpan.Zero)
        {
            Reset(); // the device stopped answering: take everything back
            return false;
        }

        _interrupt.Wait(left < TimeSpan.FromMilliseconds(20) ? left : TimeSpan.FromMilliseconds(20));
        return _running;
    }

    /// <summary>Takes every used hint buffer back, whatever order they come in (arrays to the pool, commands to idle). Returns how many.</summary>
    private int ReclaimHintBuffers(DriverVirtqueue<int> queue)
    {
        int reclaimed = 0;
        while (queue.TryGetUsed(out int token, out uint _))
        {
            reclaimed++;
            switch (token)
            {
                case >= 0:
                    _freeHintArrays[_freeHintArrayCount++] = token;
                    break;
                case HintStartToken:
                    _hintStartInFlight = false;
                    break;
                case HintStopToken:
                    _hintStopInFlight = false;
                    break;
                default:
                    break; // a block buffer: the block stays held until DONE
            }
        }

        return reclaimed;
    }

    /// <summary>
    /// The command id, read again only when the configuration changed since the last read (ConfigGeneration moved),
    /// or when <paramref name="fresh"/>: Linux caches it the same way, refreshed on configuration interrupts. It
    /// matters with QEMU, whose config reads 0 (STOP) while a report runs (its START state leaves the field unset)
    /// until it really stops, with a notification; a driver that polled the field would stop every report at once.
    /// </summary>
    private uint ReadHintCommandId(bool fresh = false)
    {
        uint generation = _mmio.ConfigGeneration;
        if (fresh || !_hintCommandCached || generation != _hintCommandGeneration || _mmio.Version == 1)
        {
            Span<byte> field = stackalloc byte[4];
            _mmio.ReadConfig(BalloonConfigLayout.FreePageHintCommandIdOffset, field);
            _hintCommandCache = BinaryPrimitives.ReadUInt32LittleEndian(field); // config fields are little-endian even for legacy (5.5.4)
            _hintCommandGeneration = generation;
            _hintCommandCached = true;
        }

        return _hintCommandCache;
    }

    /// <summary>Remembers a block taken off the free lists (under the allocator's lock).</summary>
    private void HoldHinted(ulong pfn, int order)
    {
        if (_hintedCount == _hinted.Length)
        {
            Array.Resize(ref _hinted, _hinted.Length * 2); // grows to the largest report, then never again
        }

        _hinted[_hintedCount++] = (pfn, order);
    }

    /// <summary>DONE (or a reset, or memory pressure): every held block goes back to the free lists. Returns the pages.</summary>
    private long ReturnHintedBlocks()
    {
        long pages = 0;
        lock (_allocator.SyncRoot)
        {
            for (int i = 0; i < _hintedCount; i++)
            {
                _allocator.PutBack(_hinted[i].Pfn, _hinted[i].Order);
                pages += 1L << _hinted[i].Order;
            }

            _hintedCount = 0;
        }

        return pages;
    }

    /// <summary>Allocates the hint pool and command page in guest memory (at initialisation).</summary>
    private void SetUpHinting()
    {
        int bytes = _options.HintArrayBytes;
        if (bytes < BuddyAllocator.PageSize || bytes > BuddyAllocator.PageSize << BuddyAllocator.MaxOrder || (bytes & (bytes - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(BalloonDriverOptions.HintArrayBytes), "A power of two from 4 KiB to 4 MiB.");
        }

        _hintCommandPage = AllocateOwn(0);
        _hintStartInFlight = false;
        _hintStopInFlight = false;
        _hintActiveId = 0;
        _hintCommandCached = false;
        if (_options.HintProtocol != FreePageHintProtocol.HintArrays)
        {
            _hintArrays = [];
            _freeHintArrays = [];
            _freeHintArrayCount = 0;
            return;
        }

        int order = System.Numerics.BitOperations.Log2((uint)(bytes / BuddyAllocator.PageSize));
        if (_hintArrays.Length != _options.HintArrayCount)
        {
            _hintArrays = new ulong[_options.HintArrayCount];
            _freeHintArrays = new int[_options.HintArrayCount];
        }

        for (int i = 0; i < _hintArrays.Length; i++)
        {
            _hintArrays[i] = AllocateOwn(order);
            _freeHintArrays[i] = i;
        }

        _freeHintArrayCount = _hintArrays.Length;
    }

    /// <summary>Where a report is in the free lists: the order being walked, the next PFN, and the rest of a larger block being split.</summary>
    private struct HintCursor(int order, ulong nextPfn)
    {
        public int Order = order;
        public ulong NextPfn = nextPfn;
        public ulong SplitPfn;
        public ulong SplitLeft;
    }
}

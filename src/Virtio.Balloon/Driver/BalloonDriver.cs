using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Numerics;
using System.Threading;
using Virtio.Balloon.GuestAllocator;
using Virtio.Balloon.Hints;
using Virtio.Ring;
using Virtio.Ring.Split;
using Virtio.Ring.Packed;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;

namespace Virtio.Balloon.Driver;

/// <summary>
/// The balloon driver of a simulated guest (the guest side of VIRTIO 1.2, 5.5, modelled on Linux's
/// drivers/virtio/virtio_balloon.c): it takes pages from the guest's <see cref="BuddyAllocator"/> to inflate,
/// gives them back to deflate, answers statistics requests, deflates on out-of-memory and reports free pages, all
/// through the virtio-mmio registers (<see cref="IVirtioMmioBus"/>) and real virtqueues in guest memory, exactly
/// as a guest would. Tests, benchmarks and the live-migration simulation drive devices with it.
/// <para>
/// <b>Threads.</b> One guest thread drives it (the kernel's balloon worker): every public method but
/// <see cref="OnInterrupt"/> runs on that thread. <see cref="OnInterrupt"/> is what the interrupt line calls, from
/// any thread; it only wakes the driver. The allocator is locked (<see cref="BuddyAllocator.SyncRoot"/>) around
/// each use, so a workload thread may share it.
/// </para>
/// <para>
/// <b>Memory.</b> The rings and the PFN and statistics buffers live in guest memory the driver allocates from the
/// allocator (as the kernel's kmalloc would) and frees at <see cref="Reset"/>; the balloon's own pages are held in
/// a <see cref="PageStack"/>. Every page is always in exactly one place: the allocator's free lists, the
/// workload's hands, the balloon, a request in flight, or the driver's own buffers; <see cref="Reset"/> returns
/// the balloon and anything in flight, so the allocator's accounting balances after any sequence.
/// </para>
/// </summary>
public sealed partial class BalloonDriver : IDisposable
{
    private const int InflateToken = 0;
    private const int DeflateToken = 1;
    private const int StatsToken = 2;
    private const int ReportToken = 3;
    private const int StatsEntries = 8;

    private readonly VirtioMmioDriver _mmio;
    private readonly GuestMemory _memory;
    private readonly BuddyAllocator _allocator;
    private readonly BalloonDriverOptions _options;
    private readonly SemaphoreSlim _interrupt = new(0);
    private readonly PageStack _balloon = new();
    private readonly List<(ulong Pfn, int Order)> _ownMemory = [];
    private readonly DriverVirtqueue<int>?[] _queues = new DriverVirtqueue<int>?[5];
    private readonly ulong[] _request;
    private readonly (ulong Pfn, int Order)[] _reported;
    private readonly ulong[] _candidates;
    private readonly GuestRange[] _reportRanges;
    private int _requestCount;
    private int _requestKind = -1;
    private int _reportedCount;
    private ulong _pfnBuffer;
    private ulong _statsBuffer;
    private bool _inflating;
    private bool _running;

    /// <summary>A driver for the balloon behind <paramref name="bus"/>, in <paramref name="memory"/>, taking pages from <paramref name="allocator"/>.</summary>
    public BalloonDriver(IVirtioMmioBus bus, GuestMemory memory, BuddyAllocator allocator, BalloonDriverOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(bus);
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(allocator);
        _mmio = new VirtioMmioDriver(bus);
        _memory = memory;
        _allocator = allocator;
        _options = options ?? new BalloonDriverOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.PfnsPerRequest, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(_options.PfnsPerRequest, 1024); // one page of le32 PFNs
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.HintOrder, 0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(_options.HintOrder, BuddyAllocator.MaxOrder);
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.HintArrayCount, 1);
        _request = new ulong[_options.PfnsPerRequest];
        _reported = new (ulong, int)[_options.ReportingCapacity];
        _candidates = new ulong[_options.ReportingCapacity];
        _reportRanges = new GuestRange[_options.ReportingCapacity];
    }

    /// <summary>The MMIO driver underneath (registers, configuration space, interrupts).</summary>
    public VirtioMmioDriver Mmio => _mmio;

    /// <summary>All negotiated feature bits (transport and balloon).</summary>
    public ulong NegotiatedFeatures { get; private set; }

    /// <summary>Which queue index is which, for the negotiated features.</summary>
    public BalloonQueueLayout Layout { get; private set; }

    /// <summary>Pages in the balloon (what the driver reports as <c>actual</c>).</summary>
    public long BalloonPages => _balloon.Count;

    /// <summary>Pages the driver holds for its rings and buffers.</summary>
    public long OwnPages
    {
        get
        {
            long pages = 0;
            foreach ((ulong _, int order) in _ownMemory)
            {
                pages += 1L << order;
            }

            return pages;
        }
    }

    /// <summary>Statistics buffers sent.</summary>
    public int StatisticsSent { get; private set; }

    /// <summary>Pages deflated because the guest ran out of memory.</summary>
    public long OomDeflatedPages { get; private set; }

    /// <summary>Extra statistics entries sent after the standard ones (tags the device may not know, say).</summary>
    public IReadOnlyList<KeyValuePair<ushort, ulong>> ExtraStatistics { get; set; } = [];

    /// <summary>True when the negotiated features include balloon feature <paramref name="bit"/>.</summary>
    public bool Has(int bit) => BalloonFeatureBits.Has(NegotiatedFeatures, bit);

    /// <summary>
    /// Initialises the device as Linux does (3.1.1 with <c>init_vqs</c>): negotiates, sets up the queues the
    /// features call for, writes <c>poison_val</c>, primes the statistics queue with one buffer, sets DRIVER_OK,
    /// and hooks deflate-on-OOM into the allocator. False when the device refused the features or a queue.
    /// </summary>
    public bool Initialize()
    {
        ulong wanted = (1UL << VirtioFeatureBits.Version1) | (1UL << VirtioFeatureBits.EventIdx)
            | (_options.RingFormat == VirtqueueFormat.Packed ? 1UL << VirtioFeatureBits.RingPacked : 0)
            | (_options.WantedFeatures & BalloonFeatureBits.All);
        if (!_mmio.Initialize(wanted))
        {
            return false;
        }

        NegotiatedFeatures = _mmio.NegotiatedFeatures;
        Layout = BalloonQueueLayout.For(NegotiatedFeatures, _options.Numbering);
        _pfnBuffer = AllocateOwn(0);
        foreach (int index in new[] { Layout.Inflate, Layout.Deflate, Layout.Stats, Layout.FreePageHint, Layout.Reporting })
        {
            if (index >= 0 && !SetupQueue(index))
            {
                Reset();
                return false;
            }
        }

        if (Layout.FreePageHint >= 0)
        {
            SetUpHinting();
        }

        if (Has(BalloonFeatureBits.PagePoison))
        {
            Span<byte> poison = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(poison, _options.PoisonValue);
            _mmio.WriteConfig(BalloonConfigLayout.PoisonValueOffset, poison);
        }

        if (Layout.Stats >= 0)
        {
            _statsBuffer = AllocateOwn(0);
            SendStatistics(); // before DRIVER_OK, as Linux's init_vqs does
        }

        _mmio.SetDriverOk();
        _running = true;
        if (Has(BalloonFeatureBits.DeflateOnOom) || Layout.FreePageHint >= 0)
        {
            // Memory pressure first takes back blocks held for hinting (Linux's shrinker), then deflates.
            _allocator.OutOfMemory = _ =>
            {
                long freed = _hintedCount > 0 ? ReturnHintedBlocks() : 0;
                return freed > 0 ? freed : DeflateOnOutOfMemory();
            };
        }

        return true;
    }

    /// <summary>
    /// The interrupt line fired (any thread): wakes the driver. At most one wake is kept pending (a waiter always
    /// looks at the rings again when it wakes, so folding interrupts together loses nothing, and the count cannot
    /// grow without bound over a long run).
    /// </summary>
    public void OnInterrupt()
    {
        if (_interrupt.CurrentCount == 0)
        {
            _interrupt.Release();
        }
    }

    /// <summary>
    /// The guest's interrupt handling, on the driver's thread: acknowledges the interrupt, refills the statistics
    /// buffer the device returned, and on a configuration change moves the balloon toward the target. Returns
    /// the pages moved.
    /// </summary>
    public long Poll()
    {
        if (!_running)
        {
            return 0;
        }

        VirtioInterruptReason reasons = _mmio.TakeInterrupts();
        if (Layout.Stats >= 0)
        {
            while (_queues[Layout.Stats]!.TryGetUsed(out int _, out uint _))
            {
                SendStatistics(); // the device asked for fresh statistics (5.5.6.3)
            }
        }

        if ((reasons & VirtioInterruptReason.ConfigurationChange) == 0)
        {
            return 0;
        }

        long moved = UpdateBalloonSize();
        HandleFreePageHintCommand();
        return moved;
    }

    /// <summary>
    /// Inflates or deflates toward <c>num_pages</c>, at most <see cref="BalloonDriverOptions.PfnsPerRequest"/>
    /// pages per request, waiting for each request to be used, and writes <c>actual</c> as it goes. Stops early
    /// when the allocator has no page left to give. Returns the pages moved.
    /// </summary>
    public long UpdateBalloonSize()
    {
        long moved = 0;
        Span<byte> field = stackalloc byte[4];
        while (_running)
        {
            _mmio.ReadConfig(BalloonConfigLayout.NumPagesOffset, field);
            long diff = (long)BinaryPrimitives.ReadUInt32LittleEndian(field) - _balloon.Count;
            if (diff == 0)
            {
                break;
            }

            int step = diff > 0 ? Fill((int)Math.Min(diff, _request.Length)) : Leak((int)Math.Min(-diff, _request.Length));
            WriteActual();
            if (step == 0)
            {
                break;
            }

            moved += step;
        }

        return moved;
    }

    /// <summary>
    /// The out-of-memory hook (DEFLATE_ON_OOM): deflates <see cref="BalloonDriverOptions.OomDeflatePages"/> pages
    /// and returns how many went back to the allocator. Does nothing while the balloon itself is allocating (as
    /// Linux's balloon pages are allocated with __GFP_NORETRY and never reach the OOM notifier).
    /// </summary>
    public long DeflateOnOutOfMemory()
    {
        if (_inflating || !_running || !Has(BalloonFeatureBits.DeflateOnOom))
        {
            return 0;
        }

        long freed = 0;
        while (freed < _options.OomDeflatePages)
        {
            int step = Leak((int)Math.Min(_options.OomDeflatePages - freed, _request.Length));
            if (step == 0)
            {
                break;
            }

            freed += step;
        }

        WriteActual();
        OomDeflatedPages += freed;
        return freed;
    }

    /// <summary>
    /// Free page reporting (mm/page_reporting.c): takes free blocks of order <see cref="BalloonDriverOptions.ReportingOrder"/>
    /// and above off the allocator, poisons them first with PAGE_POISON, reports them
    /// <see cref="BalloonDriverOptions.ReportingCapacity"/> at a time as device-writable buffers, and gives them
    /// back once each report is used. Returns the pages reported.
    /// </summary>
    public long ReportFreePages()
    {
        if (!_running || Layout.Reporting < 0)
        {
            return 0;
        }

        long pages = 0;
        for (int order = BuddyAllocator.MaxOrder; order >= _options.ReportingOrder; order--)
        {
            ulong from = 0;
            while (_running)
            {
                int found;
                lock (_allocator.SyncRoot)
                {
                    found = _allocator.CopyFreeBlocks(order, from, _candidates, out from);
                    _reportedCount = 0;
                    for (int i = 0; i < found; i++)
                    {
                        if (_allocator.TryIsolate(_candidates[i], order))
                        {
                            _reported[_reportedCount++] = (_candidates[i], order);
                        }
                    }
                }

                if (found == 0)
                {
                    break;
                }

                if (_reportedCount == 0)
                {
                    continue;
                }

                pages += SendReport();
            }
        }

        return pages;
    }

    /// <summary>
    /// Resets the device and takes everything back (what Linux does when the driver goes away): requests in flight
    /// are dropped and their pages returned, the balloon's pages go back to the allocator (the device forgot them
    /// with its reset), reported blocks are put back, and the driver's own memory is freed.
    /// </summary>
    public void Reset()
    {
        _running = false;
        _mmio.Reset();
        foreach (DriverVirtqueue<int>? queue in _queues)
        {
            while (queue is not null && queue.TryDetachUnused(out int _))
            {
            }
        }

        ReturnRequest();
        ReturnReported();
        ReturnHintedBlocks();
        _freeHintArrayCount = 0; // the pool's memory goes back with the driver's own
        lock (_allocator.SyncRoot)
        {
            while (_balloon.TryPop(out ulong pfn))
            {
                _allocator.Free(pfn, 0);
            }

            foreach ((ulong pfn, int order) in _ownMemory)
            {
                _allocator.Free(pfn, order);
            }

            if (Has(BalloonFeatureBits.DeflateOnOom) || Layout.FreePageHint >= 0)
            {
                _allocator.OutOfMemory = null;
            }
        }

        _ownMemory.Clear();
        for (int i = 0; i < _queues.Length; i++)
        {
            _queues[i]?.Dispose();
            _queues[i] = null;
        }

        NegotiatedFeatures = 0;
    }

    /// <summary>Resets the device (see <see cref="Reset"/>) if it runs.</summary>
    public void Dispose()
    {
        if (_running || _ownMemory.Count > 0)
        {
            Reset();
        }

        _interrupt.Dispose();
    }

    private int Fill(int count)
    {
        _inflating = true;
        try
        {
            lock (_allocator.SyncRoot)
            {
                _requestCount = 0;
                while (_requestCount < count && _allocator.TryAllocate(0, out ulong pfn))
                {
                    _request[_requestCount++] = pfn;
                }
            }
        }
        finally
        {
            _inflating = false;
        }

        int filled = _requestCount;
        if (filled == 0 || !TellHost(Layout.Inflate, InflateToken))
        {
            return 0;
        }

        for (int i = 0; i < filled; i++)
        {
            _balloon.Push(_request[i]);
        }

        _requestCount = 0;
        _requestKind = -1;
        return filled;
    }

    private int Leak(int count)
    {
        _requestCount = 0;
        while (_requestCount < count && _balloon.TryPop(out ulong pfn))
        {
            _request[_requestCount++] = pfn;
        }

        int leaked = _requestCount;
        if (leaked == 0)
        {
            return 0;
        }

        // The host is told before the pages are reused (MUST_TELL_HOST; Linux always does it in this order).
        if (!TellHost(Layout.Deflate, DeflateToken))
        {
            return 0; // the reset inside TellHost returned the pages
        }

        lock (_allocator.SyncRoot)
        {
            for (int i = 0; i < leaked; i++)
            {
                _allocator.Free(_request[i], 0);
            }
        }

        _requestCount = 0;
        _requestKind = -1;
        return leaked;
    }

    /// <summary>
    /// Sends the request's PFNs (le32, 4 KiB units) as one device-readable buffer and waits until it is used.
    /// When the device does not answer in time the driver resets it (returning everything) and returns false.
    /// </summary>
    private bool TellHost(int queueIndex, int kind)
    {
        _requestKind = kind;
        _memory.TryGetSpan(_pfnBuffer, _requestCount * 4, out Span<byte> array);
        HintPacking.PackPfnsLe32(_request.AsSpan(0, _requestCount), array); // le32, 4 KiB units (5.5.6), vectorized
        _options.GuestWriteObserver?.Invoke(_pfnBuffer, (ulong)_requestCount * 4);

        DriverVirtqueue<int> queue = _queues[queueIndex]!;
        Span<GuestRange> readable = [new GuestRange(_pfnBuffer, (uint)(_requestCount * 4))];
        if (!queue.TryAdd(readable, [], kind))
        {
            Reset();
            return false;
        }

        Kick(queueIndex, queue);
        if (!WaitUsed(queue))
        {
            Reset();
            return false;
        }

        return true;
    }

    private long SendReport()
    {
        for (int i = 0; i < _reportedCount; i++)
        {
            (ulong pfn, int order) = _reported[i];
            _reportRanges[i] = new GuestRange(pfn << 12, (uint)(BuddyAllocator.PageSize << order));
            if (Has(BalloonFeatureBits.PagePoison))
            {
                Poison(pfn, order);
            }
        }

        DriverVirtqueue<int> queue = _queues[Layout.Reporting]!;
        if (!queue.TryAdd([], _reportRanges.AsSpan(0, _reportedCount), ReportToken))
        {
            Reset();
            return 0;
        }

        Kick(Layout.Reporting, queue);
        if (!WaitUsed(queue))
        {
            Reset(); // puts the isolated blocks back
            return 0;
        }

        long pages = 0;
        foreach ((ulong _, int order) in _reported.AsSpan(0, _reportedCount))
        {
            pages += 1L << order;
        }

        ReturnReported();
        return pages;
    }

    private void Poison(ulong pfn, int order)
    {
        uint pattern = _options.PoisonValue;
        ulong gpa = pfn << 12;
        ulong end = gpa + ((ulong)BuddyAllocator.PageSize << order);
        for (; gpa < end; gpa += BuddyAllocator.PageSize)
        {
            _memory.TryGetSpan(gpa, BuddyAllocator.PageSize, out Span<byte> page);
            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(page).Fill(BitConverter.IsLittleEndian ? pattern : BinaryPrimitives.ReverseEndianness(pattern));
        }

        _options.GuestWriteObserver?.Invoke(pfn << 12, (ulong)BuddyAllocator.PageSize << order);
    }

    private void SendStatistics()
    {
        lock (_allocator.SyncRoot)
        {
            _memory.TryGetSpan(_statsBuffer, BuddyAllocator.PageSize, out Span<byte> buffer);
            long free = _allocator.FreePages * BuddyAllocator.PageSize;
            long total = (long)_allocator.TotalPages * BuddyAllocator.PageSize;
            int at = 0;
            at = Stat(buffer, at, BalloonStatTag.SwapIn, 0);
            at = Stat(buffer, at, BalloonStatTag.SwapOut, 0);
            at = Stat(buffer, at, BalloonStatTag.MajorFaults, 0);
            at = Stat(buffer, at, BalloonStatTag.MinorFaults, 0);
            at = Stat(buffer, at, BalloonStatTag.FreeMemory, (ulong)free);
            at = Stat(buffer, at, BalloonStatTag.TotalMemory, (ulong)total);
            at = Stat(buffer, at, BalloonStatTag.AvailableMemory, (ulong)free);
            at = Stat(buffer, at, BalloonStatTag.DiskCaches, 0);
            foreach (KeyValuePair<ushort, ulong> extra in ExtraStatistics)
            {
                if (at + 10 <= buffer.Length)
                {
                    at = Stat(buffer, at, (BalloonStatTag)extra.Key, extra.Value);
                }
            }

            _options.GuestWriteObserver?.Invoke(_statsBuffer, (ulong)at);
            DriverVirtqueue<int> queue = _queues[Layout.Stats]!;
            if (queue.TryAdd([new GuestRange(_statsBuffer, (uint)at)], [], StatsToken))
            {
                Kick(Layout.Stats, queue);
                StatisticsSent++;
            }
        }

        static int Stat(Span<byte> buffer, int at, BalloonStatTag tag, ulong value)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(buffer[at..], (ushort)tag);
            BinaryPrimitives.WriteUInt64LittleEndian(buffer[(at + 2)..], value);
            return at + 10;
        }
    }

    private void Kick(int index, DriverVirtqueue<int> queue)
    {
        if (queue.PublishAvailable())
        {
            _mmio.Notify(index);
        }
    }

    /// <summary>Waits (bounded) until the queue's one request in flight is used.</summary>
    private bool WaitUsed(DriverVirtqueue<int> queue)
    {
        DateTime deadline = DateTime.UtcNow + _options.Timeout;
        while (true)
        {
            if (queue.TryGetUsed(out int _, out uint _))
            {
                return true;
            }

            if (queue.EnableUsedNotifications() == NotificationRecheck.BuffersPending)
            {
                continue;
            }

            TimeSpan left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero || !_interrupt.Wait(left))
            {
                return queue.TryGetUsed(out int _, out uint _);
            }
        }
    }

    private bool SetupQueue(int index)
    {
        int max = _mmio.QueueSizeMax(index);
        int size = Math.Min(_options.QueueSize, max);
        VirtqueueFormat format = (NegotiatedFeatures & (1UL << VirtioFeatureBits.RingPacked)) != 0 ? VirtqueueFormat.Packed : VirtqueueFormat.Split;
        if (format == VirtqueueFormat.Split && size > 0)
        {
            size = (int)BitOperations.RoundUpToPowerOf2((uint)size + 1) / 2; // split sizes are powers of two
        }

        if (size < 1)
        {
            return false;
        }

        ulong bytes = format == VirtqueueFormat.Packed ? PackedQueueLayout.CompactTotalBytes(size) : SplitQueueLayout.CompactTotalBytes(size);
        int order = BitOperations.Log2(BitOperations.RoundUpToPowerOf2((bytes + 4095) / 4096));
        ulong gpa = AllocateOwn(order);
        _memory.TryGetSpan(gpa, (int)bytes, out Span<byte> ring);
        ring.Clear();
        var addresses = VirtqueueAddresses.Compact(format, gpa, size);
        _queues[index] = new DriverVirtqueue<int>(_memory, addresses, NegotiatedFeatures);
        return _mmio.SetupQueue(index, addresses);
    }

    private ulong AllocateOwn(int order)
    {
        lock (_allocator.SyncRoot)
        {
            if (!_allocator.TryAllocate(order, out ulong pfn))
            {
                throw new InvalidOperationException("The guest has no memory left for the balloon driver's rings and buffers.");
            }

            _ownMemory.Add((pfn, order));
            return pfn << 12;
        }
    }

    private void WriteActual()
    {
        Span<byte> actual = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(actual, (uint)_balloon.Count);
        _mmio.WriteConfig(BalloonConfigLayout.ActualOffset, actual);
    }

    /// <summary>Pages of a request that never completed go back where they came from.</summary>
    private void ReturnRequest()
    {
        if (_requestKind is InflateToken or DeflateToken && _requestCount > 0)
        {
            lock (_allocator.SyncRoot)
            {
                for (int i = 0; i < _requestCount; i++)
                {
                    _allocator.Free(_request[i], 0);
                }
            }
        }

        _requestCount = 0;
        _requestKind = -1;
    }

    private void ReturnReported()
    {
        lock (_allocator.SyncRoot)
        {
            for (int i = 0; i < _reportedCount; i++)
            {
                _allocator.PutBack(_reported[i].Pfn, _reported[i].Order);
            }
        }

        _reportedCount = 0;
    }
}

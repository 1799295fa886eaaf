using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Threading;
using Virtio.Balloon;
using Virtio.Balloon.GuestAllocator;
using Virtio.Balloon.Hints;
using Virtio.Balloon.Migration;
using Virtio.Ring;

namespace Virtio.Migration;

/// <summary>
/// The source's migration thread, as QEMU runs it. Dirty logging is on before the first hint request. Each
/// precopy round: request hints (a new command id) right after the bitmap sync, send every page still marked
/// while the guest reports (hints clear bits of this round's bitmap only), stop the report (STOP) and only then
/// sync the dirty log into the next round's bitmap. Then the stop-and-copy with the guest paused, and DONE.
/// Finally the destination checks every page the guest had allocated.
/// </summary>
public sealed class MigrationSource
{
    private readonly SimulatedGuest _guest;
    private readonly MigrationOptions _options;
    private readonly bool _hints;
    private readonly Stream _stream;
    private readonly byte[] _batch = new byte[MigrationWire.HeaderBytes + (MigrationWire.MaxBatch * (8 + PageContents.PageSize))];
    private readonly ulong[] _pfns = new ulong[MigrationWire.MaxBatch];
    private readonly Stopwatch _sinceStart = new();
    private long _pagesSent;
    private long _bytesSent;
    private double _reportMilliseconds;
    private int _reportsTimed;
    private long _requestedAt;
    private volatile bool _hostStopping;

    /// <summary>A migration of <paramref name="guest"/> over <paramref name="stream"/>.</summary>
    public MigrationSource(SimulatedGuest guest, MigrationOptions options, bool hints, Stream stream)
    {
        _guest = guest;
        _options = options;
        _hints = hints;
        _stream = stream;
    }

    /// <summary>Pages sent so far (for a progress display; any thread).</summary>
    public long PagesSent => Interlocked.Read(ref _pagesSent);

    /// <summary>The current round (0 before the first; -1 in the stop-and-copy).</summary>
    public int CurrentRound { get; private set; }

    /// <summary>Runs the migration to the end and the integrity check.</summary>
    public MigrationResult Run()
    {
        ulong pages = _options.GuestPages;
        using var bitmap = new MigrationBitmap(0, pages);
        var late = _options.UnsafeApplyHintsAfterSync ? new DeferredHints() : null;
        if (_hints)
        {
            _guest.Device.FreePageHintSink = late is null ? bitmap : late;
            _guest.Device.FreePageHintStatusChanged += OnHintStatus;
        }

        WriteHello(pages);
        var total = Stopwatch.StartNew();
        _sinceStart.Start();

        // Dirty logging on, then the first round's bitmap: all of RAM.
        bitmap.MarkAll();
        _guest.DirtyLog.SyncInto(bitmap);
        var rounds = new List<RoundResult>();
        double bytesPerMs = 0;
        for (int round = 1; ; round++)
        {
            CurrentRound = round;
            var clock = Stopwatch.StartNew();
            long hintedBefore = _guest.Device.HintedPages;
            long sentBefore = _pagesSent;
            long bytesBefore = _bytesSent;
            if (_hints)
            {
                _requestedAt = Stopwatch.GetTimestamp();
                _guest.Device.RequestFreePageHints();   // after the sync: hints of this id clear this round's bits
            }

            SendMarked(bitmap);
            double sendMs = clock.Elapsed.TotalMilliseconds;
            if (_hints)
            {
                _hostStopping = true;
                _guest.Device.StopFreePageHints();      // before the sync: no hint of this id lands after it
                _hostStopping = false;
            }

            long dirtied = _guest.DirtyLog.SyncInto(bitmap);
            late?.ApplyTo(bitmap);                      // the deliberate bug: this round's hints after the sync
            long remaining = bitmap.CountMarked();
            long roundBytes = _bytesSent - bytesBefore;
            bytesPerMs = roundBytes > 0 && sendMs > 0 ? roundBytes / sendMs : bytesPerMs;
            rounds.Add(new RoundResult(round, _pagesSent - sentBefore, roundBytes, clock.Elapsed.TotalMilliseconds,
                _guest.Device.HintedPages - hintedBefore, dirtied, remaining));

            bool converged = _options.FixedRounds is int fixedRounds
                ? round >= fixedRounds
                : round >= _options.MaxRounds || (bytesPerMs > 0 && remaining * (8.0 + PageContents.PageSize) / bytesPerMs <= _options.DowntimeTarget.TotalMilliseconds);
            if (converged)
            {
                break;
            }
        }

        // Stop-and-copy: the guest and the device stop; the last sync; the device's own writes (its rings); send.
        CurrentRound = -1;
        var downtime = Stopwatch.StartNew();
        _guest.Pause();
        long sentBeforeFinal = _pagesSent;
        long bytesBeforeFinal = _bytesSent;
        _guest.DirtyLog.SyncInto(bitmap);
        late?.ApplyTo(bitmap);
        MarkDeviceWrittenMemory(bitmap);
        SendMarked(bitmap);
        _stream.Flush();
        double downtimeMs = downtime.Elapsed.TotalMilliseconds;
        double totalMs = total.Elapsed.TotalMilliseconds;
        long finalPages = _pagesSent - sentBeforeFinal;
        long finalBytes = _bytesSent - bytesBeforeFinal;

        // The check, with the guest and the device still stopped: the source's memory as it was sent.
        (long verified, long allocated) = SendVerification();

        // DONE: the source's guest gives its hinted blocks back (it would resume here if the migration failed).
        long heldAfterDone = 0;
        if (_hints)
        {
            _guest.Device.FinishFreePageHints();
            _guest.ResumeBalloonOnly();
            SpinWait.SpinUntil(() => _guest.Driver.HintedPagesHeld == 0, TimeSpan.FromSeconds(10));
            _guest.PauseBalloonOnly();
            heldAfterDone = _guest.Driver.HintedPagesHeld;
            _guest.Device.FreePageHintStatusChanged -= OnHintStatus;
        }

        WriteUInt32(MigrationWire.Done);
        _stream.Flush();
        Span<byte> reply = stackalloc byte[DestinationReport.Size];
        _stream.ReadExactly(reply);
        DestinationReport report = DestinationReport.ReadFrom(reply);
        if (verified != report.PagesChecked)
        {
            throw new InvalidDataException($"The destination checked {report.PagesChecked} pages; {verified} were sent.");
        }

        double reportSeconds = _reportMilliseconds / 1000;
        return new MigrationResult
        {
            Hints = _hints,
            Protocol = _options.Protocol == FreePageHintProtocol.HintArrays ? "hint arrays (v34)" : "standard (VIRTIO 1.2)",
            Ring = _options.Ring == VirtqueueFormat.Packed ? "packed" : "split",
            HintOrder = _options.HintOrder,
            GuestBytes = _options.GuestBytes,
            AllocatedPagesAtEnd = allocated,
            Rounds = rounds,
            PagesSent = _pagesSent,
            BytesSent = _bytesSent,
            BytesReceived = report.BytesReceived,
            StopAndCopyPages = finalPages,
            StopAndCopyBytes = finalBytes,
            DowntimeMilliseconds = downtimeMs,
            TotalMilliseconds = totalMs,
            HintReports = _hints ? _guest.Device.FreePageHintReports : 0,
            HintBlocks = _hints ? _guest.Device.HintBlocks : 0,
            HintedPages = _hints ? _guest.Device.HintedPages : 0,
            HintsPerSecond = reportSeconds > 0 ? _guest.Device.HintBlocks / reportSeconds : 0,
            ReportLatencyMilliseconds = _reportsTimed > 0 ? _reportMilliseconds / _reportsTimed : 0,
            WorkloadPagesWritten = _guest.WorkloadPagesWritten,
            PagesVerified = report.PagesChecked,
            Mismatches = report.Mismatches,
            FirstMismatch = report.Mismatches > 0 ? report.FirstMismatch : null,
            HintedPagesHeldAfterDone = heldAfterDone,
            DeviceFault = _guest.Device.LastFault?.ToString(),
        };
    }

    /// <summary>The device saw the driver's STOP: that report's latency (request to STOP).</summary>
    private void OnHintStatus(object? sender, FreePageHintStatusChangedEventArgs e)
    {
        if (e.Status == FreePageHintStatus.Stopped && e.Previous == FreePageHintStatus.Reporting && !_hostStopping)
        {
            _reportMilliseconds += Stopwatch.GetElapsedTime(_requestedAt).TotalMilliseconds;
            _reportsTimed++;
        }
    }

    /// <summary>Sends every marked page, taking the marks, in batches of up to 256 pages per write.</summary>
    private void SendMarked(MigrationBitmap bitmap)
    {
        ulong cursor = 0;
        ulong end = _options.GuestPages;
        while (cursor < end)
        {
            int n = bitmap.TakeMarked(ref cursor, _pfns);
            if (n > 0)
            {
                SendPages(_pfns.AsSpan(0, n));
            }
        }
    }

    private void SendPages(ReadOnlySpan<ulong> pfns)
    {
        Span<byte> batch = _batch;
        BinaryPrimitives.WriteUInt32LittleEndian(batch, MigrationWire.Pages);
        BinaryPrimitives.WriteUInt32LittleEndian(batch[4..], (uint)pfns.Length);
        int at = MigrationWire.HeaderBytes;
        foreach (ulong pfn in pfns)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(batch[at..], pfn);
            at += 8;
        }

        foreach (ulong pfn in pfns)
        {
            _guest.Memory.TryGetSpan(pfn * PageContents.PageSize, PageContents.PageSize, out Span<byte> page);
            page.CopyTo(batch[at..]); // the page as it is now: a later write is marked again and resent
            at += PageContents.PageSize;
        }

        _stream.Write(batch[..at]);
        Interlocked.Add(ref _pagesSent, pfns.Length);
        _bytesSent += at;
        if (_options.MaxBandwidth > 0)
        {
            // max-bandwidth: sleep off whatever the stream is ahead of its budget.
            double ahead = (_bytesSent * 1000.0 / _options.MaxBandwidth) - _sinceStart.Elapsed.TotalMilliseconds;
            if (ahead >= 1)
            {
                Thread.Sleep((int)ahead);
            }
        }
    }

    /// <summary>
    /// The device writes its queues' used rings (and, packed, descriptors) without the guest's dirty log seeing it;
    /// a VMM logs its own writes. Here the final round sends those areas, with the device stopped.
    /// </summary>
    private void MarkDeviceWrittenMemory(MigrationBitmap bitmap)
    {
        for (int q = 0; q < _guest.Device.QueueCount; q++)
        {
            if (!_guest.Device.IsQueueReady(q))
            {
                continue;
            }

            VirtqueueAddresses a = _guest.Device.QueueAddresses(q);
            ulong size = (ulong)a.QueueSize;
            MarkBytes(bitmap, a.DescriptorAreaAddress, 16 * size);
            MarkBytes(bitmap, a.DriverAreaAddress, 6 + (2 * size));
            MarkBytes(bitmap, a.DeviceAreaAddress, 6 + (8 * size));
        }

        static void MarkBytes(MigrationBitmap bitmap, ulong gpa, ulong length)
        {
            for (ulong pfn = gpa >> 12; pfn <= (gpa + length - 1) >> 12; pfn++)
            {
                bitmap.Mark(pfn);
            }
        }
    }

    /// <summary>
    /// Hashes every page the guest has allocated (on no free list, and not a block the balloon holds for hinting:
    /// both are free memory to the guest) and sends the hashes. Returns (sent, allocated).
    /// </summary>
    private (long Sent, long Allocated) SendVerification()
    {
        BuddyAllocator allocator = _guest.Allocator;
        ulong pages = _options.GuestPages;
        var free = new bool[pages];
        Span<ulong> blocks = stackalloc ulong[256];
        lock (allocator.SyncRoot)
        {
            for (int order = 0; order <= BuddyAllocator.MaxOrder; order++)
            {
                ulong from = 0;
                int n;
                while ((n = allocator.CopyFreeBlocks(order, from, blocks, out from)) > 0)
                {
                    foreach (ulong pfn in blocks[..n])
                    {
                        free.AsSpan((int)pfn, 1 << order).Fill(true);
                    }
                }
            }
        }

        foreach (GuestPageRange held in _guest.Driver.HeldHintBlocks())
        {
            free.AsSpan((int)held.FirstPfn, (int)held.PageCount).Fill(true);
        }

        long sent = 0;
        long allocated = 0;
        byte[] pairs = new byte[MigrationWire.HeaderBytes + (MigrationWire.MaxBatch * 16)];
        int count = 0;
        for (ulong pfn = 0; pfn < pages; pfn++)
        {
            if (free[pfn])
            {
                continue;
            }

            allocated++;
            _guest.Memory.TryGetSpan(pfn * PageContents.PageSize, PageContents.PageSize, out Span<byte> page);
            BinaryPrimitives.WriteUInt64LittleEndian(pairs.AsSpan(MigrationWire.HeaderBytes + (16 * count)), pfn);
            BinaryPrimitives.WriteUInt64LittleEndian(pairs.AsSpan(MigrationWire.HeaderBytes + (16 * count) + 8), PageContents.Hash(page));
            if (++count == MigrationWire.MaxBatch)
            {
                FlushPairs(pairs, count);
                sent += count;
                count = 0;
            }
        }

        if (count > 0)
        {
            FlushPairs(pairs, count);
            sent += count;
        }

        return (sent, allocated);
    }

    private void FlushPairs(byte[] pairs, int count)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(pairs, MigrationWire.Verify);
        BinaryPrimitives.WriteUInt32LittleEndian(pairs.AsSpan(4), (uint)count);
        _stream.Write(pairs, 0, MigrationWire.HeaderBytes + (16 * count));
    }

    private void WriteHello(ulong pages)
    {
        Span<byte> hello = stackalloc byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(hello, MigrationWire.Hello);
        BinaryPrimitives.WriteUInt32LittleEndian(hello[4..], MigrationWire.Version);
        BinaryPrimitives.WriteUInt64LittleEndian(hello[8..], pages);
        _stream.Write(hello);
        _bytesSent += 16;
    }

    private void WriteUInt32(uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        _stream.Write(b);
    }

    /// <summary>The deliberately wrong sink: keeps a round's hints and applies them after the next sync.</summary>
    private sealed class DeferredHints : IFreePageHintSink
    {
        private readonly List<GuestPageRange> _held = [];

        public void OnFreePageHints(uint commandId, ReadOnlySpan<GuestPageRange> ranges)
        {
            lock (_held)
            {
                _held.AddRange(ranges);
            }
        }

        public void ApplyTo(MigrationBitmap bitmap)
        {
            lock (_held)
            {
                foreach (GuestPageRange range in _held)
                {
                    bitmap.Clear(range);
                }

                _held.Clear();
            }
        }
    }
}

using System;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using Virtio.Balloon.Diagnostics;
using System.Threading;
using Virtio.Balloon.Hints;
using Virtio.Balloon.Migration;
using Virtio.Ring;
using Virtio.Ring.Transport;

namespace Virtio.Balloon.Device;

/// <summary>
/// Free page hinting, host side (VIRTIO 1.2, 5.5.6.5, and the original patch's hint arrays).
/// <para>
/// <b>State machine</b> (<see cref="FreePageHintStatus"/>, as QEMU's): the VMM requests a report
/// (<see cref="RequestFreePageHints"/>: a new id &gt;= 2 in <c>free_page_hint_cmd_id</c> and a configuration
/// notification); the driver's command buffer with that id starts it (Reporting); hint buffers are applied to the
/// <see cref="FreePageHintSink"/> only while Reporting; the driver's STOP, the VMM's <see cref="StopFreePageHints"/>,
/// a new request or <see cref="FinishFreePageHints"/> (DONE) end it. Buffers that arrive outside Reporting (a stale
/// id's blocks) are returned unused and counted (<see cref="IgnoredHintBlocks"/>). Every transition raises
/// <see cref="FreePageHintStatusChanged"/>.
/// </para>
/// <para>
/// <b>The ordering a migration relies on.</b> When <see cref="StopFreePageHints"/> (or a new request, or DONE)
/// returns, no hint of the old report is being applied and none will be: the serving thread announces that it is
/// applying (an atomic exchange, a full fence) before it checks the state, and the VMM changes the state (a full
/// fence) before it waits for the announcement to clear. One of the two always sees the other (a Dekker
/// handshake), so a dirty-log sync that follows the stop can never have its bits cleared by a late hint.
/// </para>
/// </summary>
public sealed partial class BalloonDevice
{
    private const int HintRunCapacity = 1024;

    /// <summary>Entries of a hint array cleared into a migration bitmap per handshake (128 KiB of the array, a few microseconds).</summary>
    private const int BitmapBatchEntries = 16384;

    /// <summary>The longest hint array taken (64 MiB, sixteen times the patch's 4 MiB): a longer one is refused, never cast to a negative length.</summary>
    private const uint MaxHintArrayBytes = 64u << 20;

    private readonly FreePageHintProtocol _hintProtocol;
    private readonly bool _hintBigEndian;
    private readonly HintArrayDecoder _decoder;
    private readonly GuestPageRange[] _blockRuns = new GuestPageRange[HintRunCapacity];
    private readonly object _hintLock = new();
    private long _hintState;          // (status << 32) | command id; written under _hintLock with a full fence
    private uint _lastIssuedId = Hints.FreePageHintCommand.Done;
    private int _hintBlockShift;      // the hint-array protocol's block size of the current report
    private int _applyingThread;      // the thread applying hints to the sink now, or 0
    private int _blockRunCount;
    private long _blockRunBlocks;     // blocks in _blockRuns
    private IFreePageHintSink? _hintSink;
    private long _hintReports;
    private long _hintBlocks;
    private long _hintedPages;
    private long _ignoredHintBlocks;
    private long _reportRequestedAt;  // Stopwatch timestamp of the last request
    private long _blocksAtRequest;
    private long _pagesAtRequest;

    /// <summary>Raised on every transition of the hint state machine (on the thread that made it; a handler's exception is swallowed).</summary>
    public event EventHandler<FreePageHintStatusChangedEventArgs>? FreePageHintStatusChanged;

    /// <summary>The hint protocol this device speaks.</summary>
    public FreePageHintProtocol HintProtocol => _hintProtocol;

    /// <summary>Where applied hints go (a migration's bitmap); null drops them (they are still counted). Any thread.</summary>
    public IFreePageHintSink? FreePageHintSink
    {
        get => Volatile.Read(ref _hintSink);
        set => Volatile.Write(ref _hintSink, value);
    }

    /// <summary>Where the hint state machine is.</summary>
    public FreePageHintStatus FreePageHintStatus => (FreePageHintStatus)(Volatile.Read(ref _hintState) >> 32);

    /// <summary>The id of the current (or last) report.</summary>
    public uint FreePageHintCommandId => (uint)Volatile.Read(ref _hintState);

    /// <summary>Reports the driver started (command buffers that matched a requested id).</summary>
    public long FreePageHintReports => Interlocked.Read(ref _hintReports);

    /// <summary>Free blocks applied to the sink (entries of hint arrays, or block buffers).</summary>
    public long HintBlocks => Interlocked.Read(ref _hintBlocks);

    /// <summary>Pages (4 KiB) applied to the sink.</summary>
    public long HintedPages => Interlocked.Read(ref _hintedPages);

    /// <summary>Blocks that arrived outside a running report (a stale id, after a stop) and were ignored.</summary>
    public long IgnoredHintBlocks => Interlocked.Read(ref _ignoredHintBlocks);

    /// <summary>
    /// Requests a free page hint report: writes a new command id (&gt;= 2, never the one before) to
    /// <c>free_page_hint_cmd_id</c> and notifies the driver. Ends the previous report first: when this returns, no
    /// hint of an older id is applied any more. Any thread. Returns the new id.
    /// </summary>
    /// <exception cref="InvalidOperationException">The device does not offer FREE_PAGE_HINT.</exception>
    public uint RequestFreePageHints()
    {
        ThrowIfNoHinting();
        uint id;
        lock (_hintLock)
        {
            id = _lastIssuedId == uint.MaxValue ? FreePageHintCommand.FirstReportId : _lastIssuedId + 1;
            _lastIssuedId = id;
            TransitionLocked(FreePageHintStatus.Requested, id, notify: true);
            _reportRequestedAt = Stopwatch.GetTimestamp();
            _blocksAtRequest = HintBlocks;
            _pagesAtRequest = HintedPages;
            if (BalloonEventSource.Log.IsEnabled())
            {
                BalloonEventSource.Log.HintReportRequested(id);
            }
        }

        WaitForHintApplication();
        return id;
    }

    /// <summary>
    /// Stops the running report (the config reads STOP; the driver stops sending): when this returns, no hint is
    /// applied any more until the next request. A no-op when no report was requested. Any thread but the sink's.
    /// </summary>
    public void StopFreePageHints()
    {
        ThrowIfNoHinting();
        lock (_hintLock)
        {
            FreePageHintStatus status = FreePageHintStatus;
            if (status is FreePageHintStatus.Requested or FreePageHintStatus.Reporting)
            {
                TransitionLocked(FreePageHintStatus.Stopped, FreePageHintCommand.Stop, notify: true);
            }
        }

        WaitForHintApplication();
    }

    /// <summary>
    /// DONE: the VMM no longer needs the hints (the migration finished or was cancelled); the driver gives the hinted
    /// blocks back to its allocator. Stops a running report first. Any thread but the sink's.
    /// </summary>
    public void FinishFreePageHints()
    {
        ThrowIfNoHinting();
        lock (_hintLock)
        {
            TransitionLocked(FreePageHintStatus.Done, FreePageHintCommand.Done, notify: true);
            if (BalloonEventSource.Log.IsEnabled())
            {
                BalloonEventSource.Log.HintsDone(FreePageHintCommandId);
            }
        }

        WaitForHintApplication();
    }

    private void ThrowIfNoHinting()
    {
        if (ConfigSize < 12 || !BalloonFeatureBits.Has(DeviceFeatures, BalloonFeatureBits.FreePageHint))
        {
            throw new InvalidOperationException("This balloon device does not offer FREE_PAGE_HINT.");
        }
    }

    /// <summary>
    /// Moves the state machine; <paramref name="configValue"/> is what <c>free_page_hint_cmd_id</c> reads from now
    /// on. Under <see cref="_hintLock"/>. The state is written with a full fence (the VMM's half of the handshake).
    /// </summary>
    private void TransitionLocked(FreePageHintStatus status, uint configValue, bool notify)
    {
        long old = Volatile.Read(ref _hintState);
        uint id = status == FreePageHintStatus.Requested ? configValue : (uint)old;
        Interlocked.Exchange(ref _hintState, ((long)status << 32) | id);
        if ((FreePageHintStatus)(old >> 32) is FreePageHintStatus.Requested or FreePageHintStatus.Reporting)
        {
            ReportEnded((uint)old);
        }
        if (ConfigSize >= 12)
        {
            using ConfigChange change = BeginConfigChange(notify);
            BinaryPrimitives.WriteUInt32LittleEndian(change.Config[BalloonConfigLayout.FreePageHintCommandIdOffset..], configValue);
        }

        RaiseHintStatusChanged((FreePageHintStatus)(old >> 32), status, id);
    }

    /// <summary>A report (requested or running) ended: its duration and what it brought, to the meter and the event.</summary>
    private void ReportEnded(uint id)
    {
        if (_reportRequestedAt == 0)
        {
            return;
        }

        double milliseconds = Stopwatch.GetElapsedTime(_reportRequestedAt).TotalMilliseconds;
        _metrics.ReportDuration.Record(milliseconds);
        if (BalloonEventSource.Log.IsEnabled())
        {
            BalloonEventSource.Log.HintReportStopped(id, HintBlocks - _blocksAtRequest, HintedPages - _pagesAtRequest, milliseconds);
        }

        _reportRequestedAt = 0;
    }

    /// <summary>The VMM's wait: after its state change, until the serving thread is not inside an application (unless it is that thread).</summary>
    private void WaitForHintApplication()
    {
        int self = Environment.CurrentManagedThreadId;
        var spin = default(SpinWait);
        while (true)
        {
            int applying = Volatile.Read(ref _applyingThread);
            if (applying == 0 || applying == self)
            {
                return;
            }

            spin.SpinOnce();
        }
    }

    [SuppressMessage("Design", "CA1031:Do not catch general exception types", Justification = "A VMM handler's exception must not break the guest's device.")]
    private void RaiseHintStatusChanged(FreePageHintStatus previous, FreePageHintStatus status, uint id)
    {
        EventHandler<FreePageHintStatusChangedEventArgs>? handler = FreePageHintStatusChanged;
        if (handler is null || previous == status && status != FreePageHintStatus.Requested)
        {
            return;
        }

        try
        {
            handler(this, new FreePageHintStatusChangedEventArgs(previous, status, id));
        }
        catch (Exception)
        {
            // Swallowed: the handler is the VMM's.
        }
    }

    /// <summary>Serves the hint queue: command buffers move the state machine, block buffers go to the sink while Reporting.</summary>
    private void ServeHints(int index, DeviceVirtqueue queue)
    {
        do
        {
            queue.DisableAvailableNotifications();
            while (queue.TryPop(out DescriptorChain chain))
            {
                BalloonMessageError error;
                if (chain.WritableCount == 0 && chain.ReadableCount > 0)
                {
                    ApplyBlockRuns(); // hints before a command belong to the state before it
                    error = HintCommand(chain);
                }
                else if (chain.ReadableCount == 0 && chain.WritableCount > 0)
                {
                    error = _hintProtocol == FreePageHintProtocol.HintArrays ? HintArrays(chain) : HintBlocksOf(chain);
                }
                else
                {
                    error = BalloonMessageError.WrongDirection;
                }

                if (error != BalloonMessageError.None)
                {
                    Refuse(error);
                }

                queue.PushUsed(chain.Id, 0);
            }

            ApplyBlockRuns();
            if (queue.PublishUsed())
            {
                SignalUsedBuffers(index);
            }
        }
        while (queue.EnableAvailableNotifications() == NotificationRecheck.BuffersPending);
    }

    /// <summary>A command buffer: the current id starts the report; anything else while Reporting ends it (QEMU's rule, so a stale STOP does not end a newer report).</summary>
    private BalloonMessageError HintCommand(in DescriptorChain chain)
    {
        int expected = _hintProtocol == FreePageHintProtocol.HintArrays ? FreePageHintCommand.ArrayCommandBytes : FreePageHintCommand.StandardCommandBytes;
        if (chain.ReadableLength != (uint)expected)
        {
            return BalloonMessageError.BadHintCommand;
        }

        Span<byte> command = stackalloc byte[8];
        chain.CopyReadableTo(command[..expected]); // read once
        uint id = _hintBigEndian ? BinaryPrimitives.ReadUInt32BigEndian(command) : BinaryPrimitives.ReadUInt32LittleEndian(command);
        uint size = _hintBigEndian ? BinaryPrimitives.ReadUInt32BigEndian(command[4..]) : BinaryPrimitives.ReadUInt32LittleEndian(command[4..]);
        lock (_hintLock)
        {
            long state = Volatile.Read(ref _hintState);
            var status = (FreePageHintStatus)(state >> 32);
            if (status == FreePageHintStatus.Requested && id == (uint)state)
            {
                if (_hintProtocol == FreePageHintProtocol.HintArrays)
                {
                    // {id, block size in bytes}: a power of two, 4 KiB .. 1 GiB.
                    if (size < 4096 || size > (1u << 30) || (size & (size - 1)) != 0)
                    {
                        return BalloonMessageError.BadHintCommand;
                    }

                    _hintBlockShift = System.Numerics.BitOperations.Log2(size);
                }

                Interlocked.Increment(ref _hintReports);
                Interlocked.Exchange(ref _hintState, ((long)FreePageHintStatus.Reporting << 32) | id);
                if (BalloonEventSource.Log.IsEnabled())
                {
                    BalloonEventSource.Log.HintReportStarted(id);
                }
                RaiseHintStatusChanged(status, FreePageHintStatus.Reporting, id);
            }
            else if (status == FreePageHintStatus.Reporting && id != (uint)state)
            {
                // The driver's STOP (or a stale command): the report is over. The config reads STOP again, silently.
                TransitionLocked(FreePageHintStatus.Stopped, FreePageHintCommand.Stop, notify: false);
            }
        }

        return BalloonMessageError.None;
    }

    /// <summary>Standard protocol: each device-writable descriptor is one free block (whole pages, inside RAM).</summary>
    private BalloonMessageError HintBlocksOf(in DescriptorChain chain)
    {
        int blocks = chain.WritableCount;
        if (FreePageHintStatus != FreePageHintStatus.Reporting)
        {
            Interlocked.Add(ref _ignoredHintBlocks, blocks);
            return BalloonMessageError.UnrequestedHint;
        }

        for (int i = 0; i < blocks; i++)
        {
            GuestRange range = chain.GetRange(chain.ReadableCount + i); // read once, by the queue layer
            if (range.Address % 4096 != 0 || range.Length % 4096 != 0 || range.Length == 0)
            {
                return BalloonMessageError.NotPageAligned;
            }

            var pages = new GuestPageRange(range.Address >> 12, range.Length >> 12);
            if (!_ram.Contains(pages))
            {
                return BalloonMessageError.OutsideGuestRam;
            }

            _blockRunBlocks++;
            if (_blockRunCount > 0 && _blockRuns[_blockRunCount - 1].EndPfn == pages.FirstPfn)
            {
                GuestPageRange last = _blockRuns[_blockRunCount - 1];
                _blockRuns[_blockRunCount - 1] = last with { PageCount = last.PageCount + pages.PageCount };
            }
            else
            {
                if (_blockRunCount == _blockRuns.Length)
                {
                    ApplyBlockRuns();
                }

                _blockRuns[_blockRunCount++] = pages;
            }
        }

        return BalloonMessageError.None;
    }

    /// <summary>Hint-array protocol: each device-writable descriptor is an array of block addresses, decoded vectorized.</summary>
    private BalloonMessageError HintArrays(in DescriptorChain chain)
    {
        if (FreePageHintStatus != FreePageHintStatus.Reporting)
        {
            long entries = 0;
            for (int i = 0; i < chain.WritableCount; i++)
            {
                entries += chain.GetRange(chain.ReadableCount + i).Length / 8;
            }

            Interlocked.Add(ref _ignoredHintBlocks, entries);
            return BalloonMessageError.UnrequestedHint;
        }

        for (int i = 0; i < chain.WritableCount; i++)
        {
            GuestRange range = chain.GetRange(chain.ReadableCount + i);
            if (range.Length % 8 != 0 || range.Length > MaxHintArrayBytes)
            {
                return BalloonMessageError.HintArrayLength;
            }

            if (_memory.TryGetSpan(range.Address, (int)range.Length, out Span<byte> array) != GuestMemoryError.None)
            {
                return BalloonMessageError.OutsideGuestRam;
            }

            BalloonMessageError error = DecodeArray(array);
            if (error != BalloonMessageError.None)
            {
                return error;
            }
        }

        return BalloonMessageError.None;
    }

    /// <summary>Decodes one array; each batch is applied under the handshake. Entries before an invalid one stand (each was valid).</summary>
    private BalloonMessageError DecodeArray(ReadOnlySpan<byte> array)
    {
        return FreePageHintSink is MigrationBitmap bitmap && HintArrayDecoder.CanDecodeIntoBitmap(_hintBlockShift, bitmap)
            ? DecodeArrayIntoBitmap(array, bitmap)
            : DecodeArrayIntoRuns(array);
    }

    /// <summary>The general way: runs, handed to the sink a batch at a time.</summary>
    private BalloonMessageError DecodeArrayIntoRuns(ReadOnlySpan<byte> array)
    {
        _decoder.Begin(_hintBlockShift, _hintBigEndian);
        int position = 0;
        while (true)
        {
            HintDecodeOutcome outcome = _decoder.Decode(array, ref position);
            if (outcome != HintDecodeOutcome.RunsFull)
            {
                _decoder.Finish();
            }

            long pages = 0;
            foreach (GuestPageRange run in _decoder.Runs)
            {
                pages += (long)run.PageCount;
            }

            Apply(_decoder.Runs, pages >> (_hintBlockShift - 12));
            _decoder.ClearRuns();
            if (outcome == HintDecodeOutcome.Done)
            {
                return BalloonMessageError.None;
            }

            if (outcome == HintDecodeOutcome.Invalid)
            {
                return BalloonMessageError.HintMisaligned;
            }
        }
    }

    /// <summary>
    /// 4 MiB blocks into a migration bitmap: decoded and cleared in one pass (<see cref="HintArrayDecoder.DecodeIntoBitmap"/>),
    /// in batches of <see cref="BitmapBatchEntries"/> entries, each batch inside the handshake so a stop waits at most
    /// one batch. A batch that finds the report over goes the general way (validated, then counted as ignored).
    /// </summary>
    private BalloonMessageError DecodeArrayIntoBitmap(ReadOnlySpan<byte> array, MigrationBitmap bitmap)
    {
        _decoder.BeginBitmap(_hintBigEndian, bitmap);
        int entries = array.Length / 8;
        int position = 0;
        while (position < entries)
        {
            int start = position;
            HintDecodeOutcome outcome;
            Interlocked.Exchange(ref _applyingThread, Environment.CurrentManagedThreadId);
            try
            {
                if ((FreePageHintStatus)(Volatile.Read(ref _hintState) >> 32) != FreePageHintStatus.Reporting)
                {
                    Volatile.Write(ref _applyingThread, 0);
                    return DecodeArrayIntoRuns(array[(position * 8)..]); // the sink is dropped now: validated and counted only
                }

                outcome = _decoder.DecodeIntoBitmap(array, ref position, Math.Min(entries, position + BitmapBatchEntries));
            }
            finally
            {
                Volatile.Write(ref _applyingThread, 0);
            }

            long blocks = position - start; // every entry before the position was valid and applied
            if (blocks > 0)
            {
                long pages = blocks << (_hintBlockShift - 12);
                Interlocked.Add(ref _hintedPages, pages);
                Interlocked.Add(ref _hintBlocks, blocks);
                _metrics.HintBlocks.Add(blocks);
                _metrics.HintPages.Add(pages);
            }

            if (outcome == HintDecodeOutcome.Invalid)
            {
                return BalloonMessageError.HintMisaligned;
            }
        }

        return BalloonMessageError.None;
    }

    private void ApplyBlockRuns()
    {
        if (_blockRunCount > 0)
        {
            Apply(_blockRuns.AsSpan(0, _blockRunCount), _blockRunBlocks);
            _blockRunCount = 0;
            _blockRunBlocks = 0;
        }
    }

    /// <summary>
    /// The serving thread's half of the handshake: announce (full fence), check that the report still runs, apply,
    /// withdraw. Hints that find the report over are dropped.
    /// </summary>
    private void Apply(ReadOnlySpan<GuestPageRange> runs, long blocks)
    {
        if (runs.IsEmpty)
        {
            return;
        }

        Interlocked.Exchange(ref _applyingThread, Environment.CurrentManagedThreadId);
        try
        {
            long state = Volatile.Read(ref _hintState);
            long pages = 0;
            foreach (GuestPageRange run in runs)
            {
                pages += (long)run.PageCount;
            }

            if ((FreePageHintStatus)(state >> 32) == FreePageHintStatus.Reporting)
            {
                FreePageHintSink?.OnFreePageHints((uint)state, runs);
                Interlocked.Add(ref _hintedPages, pages);
                Interlocked.Add(ref _hintBlocks, blocks);
                _metrics.HintBlocks.Add(blocks);
                _metrics.HintPages.Add(pages);
            }
            else
            {
                Interlocked.Add(ref _ignoredHintBlocks, blocks); // the report ended while these were decoded
            }
        }
        finally
        {
            Volatile.Write(ref _applyingThread, 0);
        }
    }

    /// <summary>Reset: the report is gone, the config reads STOP (ids keep counting up, so none is reused).</summary>
    private void ResetHints()
    {
        _blockRunCount = 0;
        _blockRunBlocks = 0;
        lock (_hintLock)
        {
            long old = Volatile.Read(ref _hintState);
            Interlocked.Exchange(ref _hintState, (long)(uint)old);
            if (ConfigSize >= 12)
            {
                Config[BalloonConfigLayout.FreePageHintCommandIdOffset..][..4].Clear();
            }

            RaiseHintStatusChanged((FreePageHintStatus)(old >> 32), FreePageHintStatus.Idle, (uint)old);
        }
    }
}

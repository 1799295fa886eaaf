using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Threading;
using Virtio.Balloon.Backends;
using Virtio.Balloon.Diagnostics;
using Virtio.Balloon.Hints;
using Virtio.Ring;
using Virtio.Ring.Transport;

namespace Virtio.Balloon.Device;

/// <summary>
/// The virtio-balloon device (VIRTIO 1.2, 5.5; device ID 5), host side: what a VMM embeds to take memory back from
/// a guest and give it again, to read the guest's memory statistics, and to learn which pages the guest does not
/// use (free page reporting). Free page hinting builds on it.
/// <para>
/// <b>Queues.</b> inflateq and deflateq carry arrays of le32 page frame numbers (4 KiB units); statsq holds the
/// one outstanding statistics buffer; reporting_vq carries free page ranges. Which index is which depends on the
/// negotiated features and on <see cref="BalloonQueueNumbering"/>, so the layout is fixed at FEATURES_OK
/// (<see cref="QueueCountFor"/>).
/// </para>
/// <para>
/// <b>Inflate and deflate, the hot path.</b> Each PFN array is copied out of guest memory once (read once),
/// converted from little-endian (a no-op on little-endian hosts), turned into sorted, de-duplicated runs
/// (<see cref="PfnRunBuilder"/>: a bitmap for clustered requests, <see cref="PfnSorter"/> for scattered ones),
/// checked against guest RAM, and only then handed to the <see cref="IBalloonBackend"/> in one call. All buffers are preallocated: nothing is allocated
/// per request.
/// </para>
/// <para>
/// <b>Untrusted guest.</b> A malformed message (a PFN outside RAM, a length that is not a multiple of 4, more PFNs
/// than the cap, a buffer in the wrong direction, a stats buffer too long, a report that is not whole pages) is
/// refused whole and counted per reason (<see cref="Rejected"/>); its buffer is returned used so the guest does
/// not hang, and nothing of it reaches the back end.
/// </para>
/// </summary>
public sealed partial class BalloonDevice : VirtioDevice
{
    /// <summary>The balloon's device ID.</summary>
    public const uint BalloonDeviceId = 5;

    private const int StatsSlots = 16;
    private const int MaxUnknownStats = 16;

    private readonly GuestMemory _memory;
    private readonly IBalloonBackend _backend;
    private readonly GuestRamMap _ram;
    private static readonly BalloonDeviceOptions Defaults = new();

    private readonly BalloonQueueNumbering _numbering;
    private readonly uint[] _pfns;
    private readonly uint[] _pfnScratch;
    private readonly ulong[] _pfnBitmap;
    private readonly GuestPageRange[] _ranges;
    private readonly GuestPageRange[] _reportRanges;
    private readonly byte[] _statsBytes;
    private readonly long[] _rejected = new long[Enum.GetValues<BalloonMessageError>().Length];
    private readonly object _statsLock = new();
    private readonly ulong[] _statsValues = new ulong[StatsSlots];
    private readonly List<KeyValuePair<ushort, ulong>> _unknownStats = new(MaxUnknownStats);
    private readonly Timer? _statsTimer;
    private uint _statsPresent;
    private DateTimeOffset _statsUpdatedAt;
    private bool _statsArrived;
    private bool _statsHeld;
    private CompletionTicket _statsTicket;
    private readonly BalloonMetrics _metrics;
    private long _inflatedPages;
    private long _deflatedPages;
    private long _reportedPages;

    /// <summary>Creates the device over <paramref name="memory"/> (guest RAM), releasing pages through <paramref name="backend"/>.</summary>
    public BalloonDevice(GuestMemory memory, IBalloonBackend backend, BalloonDeviceOptions? options = null)
        : base(BalloonDeviceId, CheckedFeatures((options ?? Defaults).OfferedFeatures), queueCount: 5, (options ?? Defaults).MaxQueueSize,
            BalloonConfigLayout.SizeFor((options ?? Defaults).OfferedFeatures), (options ?? Defaults).Device)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(backend);
        options ??= Defaults;
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxPfnsPerRequest, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxStatsEntries, 1);
        _memory = memory;
        _backend = backend;
        _ram = new GuestRamMap(memory);
        _numbering = options.Numbering;
        _pfns = new uint[options.MaxPfnsPerRequest];
        _pfnScratch = new uint[options.MaxPfnsPerRequest];
        _pfnBitmap = new ulong[PfnRunBuilder.BitmapWords(options.MaxPfnsPerRequest)];
        _ranges = new GuestPageRange[options.MaxPfnsPerRequest];
        _reportRanges = new GuestPageRange[options.MaxQueueSize];
        _statsBytes = new byte[options.MaxStatsEntries * 10];
        _hintProtocol = options.HintProtocol;
        _hintBigEndian = options.LegacyBigEndianHints;
        _hintSink = options.FreePageHintSink;
        _decoder = new HintArrayDecoder(_ram, HintRunCapacity);
        _metrics = BalloonMetrics.For(options.MeterFactory);
        if (options.StatisticsInterval > TimeSpan.Zero)
        {
            _statsTimer = new Timer(static d => ((BalloonDevice)d!).RequestStatistics(), this, options.StatisticsInterval, options.StatisticsInterval);
        }
    }

    /// <summary>The target the VMM set (<c>num_pages</c>), in 4 KiB pages.</summary>
    public uint TargetPages => ReadConfigField(BalloonConfigLayout.NumPagesOffset);

    /// <summary>The pages the guest says are in the balloon (<c>actual</c>, driver-written).</summary>
    public uint ActualPages => ReadConfigField(BalloonConfigLayout.ActualOffset);

    /// <summary>The poison pattern the guest wrote (<c>poison_val</c>), or 0.</summary>
    public uint PoisonValue => ConfigSize >= 16 ? ReadConfigField(BalloonConfigLayout.PoisonValueOffset) : 0;

    /// <summary>The queue layout for the negotiated features (meaningful once FEATURES_OK is set).</summary>
    public BalloonQueueLayout Layout => BalloonQueueLayout.For(NegotiatedFeatures, _numbering);

    /// <summary>Pages the back end was told were inflated (net of nothing: a running total).</summary>
    public long InflatedPages => Interlocked.Read(ref _inflatedPages);

    /// <summary>Pages the back end was told were deflated (a running total).</summary>
    public long DeflatedPages => Interlocked.Read(ref _deflatedPages);

    /// <summary>Pages free page reporting handed to the back end (a running total).</summary>
    public long ReportedPages => Interlocked.Read(ref _reportedPages);

    /// <summary>
    /// Raised when the driver wrote <c>actual</c> (on the thread of the config write; a handler's exception is
    /// swallowed): what QEMU reports as its BALLOON_CHANGE event.
    /// </summary>
    public event EventHandler? ActualPagesChanged;

    /// <summary>Raised on the serving thread whenever a statistics buffer arrived and was taken (a handler's exception is swallowed).</summary>
    public event EventHandler? StatisticsUpdated;

    /// <summary>The last statistics the guest sent, or null when none arrived since the last reset.</summary>
    public BalloonStatistics? LastStatistics
    {
        get
        {
            lock (_statsLock)
            {
                return _statsArrived
                    ? new BalloonStatistics(_statsUpdatedAt, (ulong[])_statsValues.Clone(), _statsPresent, [.. _unknownStats])
                    : null;
            }
        }
    }

    /// <summary>Messages refused for <paramref name="reason"/> since the device was created.</summary>
    public long Rejected(BalloonMessageError reason) => Interlocked.Read(ref _rejected[(int)reason]);

    /// <summary>
    /// Sets the target balloon size (<c>num_pages</c>) in 4 KiB pages and, once the driver is running, sends a
    /// configuration change notification: the guest inflates or deflates toward it.
    /// </summary>
    public void SetTargetPages(uint pages)
    {
        if (BalloonEventSource.Log.IsEnabled())
        {
            BalloonEventSource.Log.TargetChanged(pages);
        }

        using ConfigChange change = BeginConfigChange();
        BinaryPrimitives.WriteUInt32LittleEndian(change.Config[BalloonConfigLayout.NumPagesOffset..], pages);
    }

    /// <summary>
    /// Asks the guest for fresh statistics: returns the outstanding stats buffer, and the guest refills it
    /// (VIRTIO 1.2, 5.5.6.3). False when the guest holds no buffer with the device now. Any thread.
    /// </summary>
    public bool RequestStatistics()
    {
        CompletionTicket ticket;
        lock (_statsLock)
        {
            if (!_statsHeld)
            {
                return false;
            }

            _statsHeld = false;
            ticket = _statsTicket;
        }

        return Complete(ticket, 0);
    }

    /// <inheritdoc/>
    protected override GuestMemory Memory => _memory;

    /// <inheritdoc/>
    protected override int QueueCountFor(ulong negotiatedFeatures) => BalloonQueueLayout.For(negotiatedFeatures, _numbering).Count;

    /// <inheritdoc/>
    protected override bool IsConfigWritable(int offset, int length) =>
        BalloonConfigLayout.IsDriverWritable(offset, length) && (offset < BalloonConfigLayout.PoisonValueOffset || ConfigSize >= 16);

    /// <inheritdoc/>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1031:Do not catch general exception types", Justification = "A VMM handler's exception must not break the guest's device.")]
    protected override void OnConfigWritten(int offset, int length)
    {
        if (offset < BalloonConfigLayout.ActualOffset + 4 && offset + length > BalloonConfigLayout.ActualOffset)
        {
            try
            {
                ActualPagesChanged?.Invoke(this, EventArgs.Empty);
            }
            catch (Exception)
            {
                // Swallowed: the handler is the VMM's.
            }
        }
    }

    /// <inheritdoc/>
    protected override void OnReset()
    {
        // The host's target (num_pages) survives a guest reset; what the guest owns goes back to zero.
        Span<byte> config = Config;
        config[BalloonConfigLayout.ActualOffset..].Clear();
        lock (_statsLock)
        {
            _statsHeld = false;
            _statsArrived = false;
            _statsPresent = 0;
            _unknownStats.Clear();
        }

        ResetHints();
        _backend.Reset();
    }

    /// <inheritdoc/>
    protected override void OnQueueNotify(int index, DeviceVirtqueue queue, uint notificationData)
    {
        BalloonQueueLayout layout = Layout;
        if (index == layout.FreePageHint)
        {
            ServeHints(index, queue);
            return;
        }

        do
        {
            queue.DisableAvailableNotifications();
            while (queue.TryPop(out DescriptorChain chain))
            {
                if (index == layout.Stats)
                {
                    TakeStatistics(index, queue, chain);
                    continue;
                }

                BalloonMessageError error = index == layout.Inflate ? Balloon(chain, inflate: true)
                    : index == layout.Deflate ? Balloon(chain, inflate: false)
                    : Report(chain);
                if (error != BalloonMessageError.None)
                {
                    Refuse(error);
                }

                queue.PushUsed(chain.Id, 0);
            }

            if (queue.PublishUsed())
            {
                SignalUsedBuffers(index);
            }
        }
        while (queue.EnableAvailableNotifications() == NotificationRecheck.BuffersPending);
    }

    /// <inheritdoc/>
    protected override void SaveModelState(DeviceStateWriter writer)
    {
        lock (_statsLock)
        {
            writer.WriteBoolean(_statsHeld);
            writer.WriteUInt16(_statsHeld ? _statsTicket.ChainId : (ushort)0);
        }

        lock (_hintLock)
        {
            long state = Volatile.Read(ref _hintState);
            writer.WriteByte((byte)(state >> 32));
            writer.WriteUInt32((uint)state);
            writer.WriteUInt32(_lastIssuedId);
            writer.WriteByte((byte)_hintBlockShift);
        }
    }

    /// <inheritdoc/>
    protected override bool TryRestoreModelState(ref DeviceStateReader reader)
    {
        bool held = reader.ReadBoolean();
        ushort id = reader.ReadUInt16();
        byte hintStatus = reader.ReadByte();
        uint hintId = reader.ReadUInt32();
        uint lastIssued = reader.ReadUInt32();
        byte blockShift = reader.ReadByte();
        if (!reader.IsValid || reader.Remaining != 0 || hintStatus > (byte)FreePageHintStatus.Done
            || (blockShift != 0 && blockShift is < 12 or > 30))
        {
            return false;
        }

        int stats = Layout.Stats;
        if (held && (stats < 0 || id >= MaxQueueSize))
        {
            return false;
        }

        lock (_statsLock)
        {
            _statsHeld = held;
            _statsTicket = held ? DeferCompletion(stats, id) : default;
        }

        lock (_hintLock)
        {
            Interlocked.Exchange(ref _hintState, ((long)hintStatus << 32) | hintId);
            _lastIssuedId = lastIssued;
            _hintBlockShift = blockShift;
        }

        return true;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _statsTimer?.Dispose();
        }

        base.Dispose(disposing);
    }

    private static ulong CheckedFeatures(ulong offered)
    {
        if ((offered & ~BalloonFeatureBits.All) != 0)
        {
            throw new ArgumentException($"Balloon features 0x{offered & ~BalloonFeatureBits.All:x} are not implemented.", nameof(offered));
        }

        return offered;
    }

    /// <summary>Counts a refused message: the device's counter, the meter, the event.</summary>
    private void Refuse(BalloonMessageError reason)
    {
        Interlocked.Increment(ref _rejected[(int)reason]);
        _metrics.Refused(reason);
        if (BalloonEventSource.Log.IsEnabled())
        {
            BalloonEventSource.Log.MessageRefused(reason.ToString());
        }
    }

    private uint ReadConfigField(int offset)
    {
        Span<byte> value = stackalloc byte[4];
        return ReadConfig(offset, value) == 4 ? BinaryPrimitives.ReadUInt32LittleEndian(value) : 0;
    }

    /// <summary>One inflate or deflate request: decode, sort, merge, check, then one back-end call.</summary>
    private BalloonMessageError Balloon(in DescriptorChain chain, bool inflate)
    {
        if (chain.WritableCount != 0)
        {
            return BalloonMessageError.WrongDirection;
        }

        if (chain.ReadableLength % 4 != 0)
        {
            return BalloonMessageError.LengthNotMultipleOfFour;
        }

        int count = (int)(chain.ReadableLength / 4);
        if (count > _pfns.Length)
        {
            return BalloonMessageError.TooManyPfns;
        }

        Span<uint> pfns = _pfns.AsSpan(0, count);
        chain.CopyReadableTo(MemoryMarshal.AsBytes(pfns)); // read once: the guest may rewrite the array meanwhile
        if (!BitConverter.IsLittleEndian)
        {
            BinaryPrimitives.ReverseEndianness(pfns, pfns); // le32 on the wire (5.5.6)
        }

        int runs = PfnRunBuilder.Build(pfns, _pfnScratch, _pfnBitmap, _ranges, out uint min, out uint max);
        ReadOnlySpan<GuestPageRange> ranges = _ranges.AsSpan(0, runs);
        if (!_ram.Contains(new GuestPageRange(min, (ulong)max - min + 1)) && !_ram.ContainsAll(ranges))
        {
            return BalloonMessageError.OutsideGuestRam; // nothing was applied
        }

        long pages = 0;
        foreach (GuestPageRange range in ranges)
        {
            pages += (long)range.PageCount;
        }

        if (inflate)
        {
            _backend.Inflate(ranges);
            Interlocked.Add(ref _inflatedPages, pages);
            _metrics.PagesInflated.Add(pages);
            if (BalloonEventSource.Log.IsEnabled())
            {
                BalloonEventSource.Log.InflateBatch(pages, runs);
            }
        }
        else
        {
            _backend.Deflate(ranges);
            Interlocked.Add(ref _deflatedPages, pages);
            _metrics.PagesDeflated.Add(pages);
            if (BalloonEventSource.Log.IsEnabled())
            {
                BalloonEventSource.Log.DeflateBatch(pages, runs);
            }
        }

        return BalloonMessageError.None;
    }

    /// <summary>A free page report: whole pages inside RAM, device-writable only; the back end gets them all or none.</summary>
    private BalloonMessageError Report(in DescriptorChain chain)
    {
        if (chain.ReadableCount != 0)
        {
            return BalloonMessageError.WrongDirection;
        }

        int count = Math.Min(chain.WritableCount, _reportRanges.Length);
        long pages = 0;
        for (int i = 0; i < count; i++)
        {
            GuestRange range = chain.GetRange(chain.ReadableCount + i);
            if (range.Address % 4096 != 0 || range.Length % 4096 != 0 || range.Length == 0)
            {
                return BalloonMessageError.NotPageAligned;
            }

            var pagesOfRange = new GuestPageRange(range.Address >> 12, range.Length >> 12);
            if (!_ram.Contains(pagesOfRange))
            {
                return BalloonMessageError.OutsideGuestRam;
            }

            _reportRanges[i] = pagesOfRange;
            pages += (long)pagesOfRange.PageCount;
        }

        bool preserve = HasFeature(BalloonFeatureBits.PagePoison) && PoisonValue != 0;
        _backend.Report(_reportRanges.AsSpan(0, count), preserve);
        Interlocked.Add(ref _reportedPages, pages);
        return BalloonMessageError.None;
    }

    /// <summary>The stats buffer: parse it, keep it as the one outstanding buffer (returning an older one, as QEMU does).</summary>
    private void TakeStatistics(int index, DeviceVirtqueue queue, in DescriptorChain chain)
    {
        if (chain.WritableCount != 0)
        {
            Refuse(BalloonMessageError.WrongDirection);
            queue.PushUsed(chain.Id, 0);
            return;
        }

        bool raise = false;
        lock (_statsLock)
        {
            if (_statsHeld)
            {
                Refuse(BalloonMessageError.SecondStatsBuffer);
                _statsHeld = false;
                Complete(_statsTicket, 0);
            }

            uint length = chain.ReadableLength;
            if (length > (uint)_statsBytes.Length)
            {
                Refuse(BalloonMessageError.StatsTooLong);
            }
            else
            {
                if (length % 10 != 0)
                {
                    Refuse(BalloonMessageError.StatsTruncated);
                }

                Span<byte> bytes = _statsBytes.AsSpan(0, (int)length);
                chain.CopyReadableTo(bytes); // read once
                ParseStatistics(bytes[..((int)length / 10 * 10)]);
                raise = true;
            }

            _statsTicket = DeferCompletion(index, chain.Id);
            _statsHeld = true;
        }

        if (raise)
        {
            RaiseStatisticsUpdated();
        }
    }

    [System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1031:Do not catch general exception types", Justification = "A VMM handler's exception must not break the guest's device.")]
    private void RaiseStatisticsUpdated()
    {
        try
        {
            StatisticsUpdated?.Invoke(this, EventArgs.Empty);
        }
        catch (Exception)
        {
            // Swallowed: the handler is the VMM's; the device and the guest carry on.
        }
    }

    private void ParseStatistics(ReadOnlySpan<byte> entries)
    {
        _statsPresent = 0;
        _unknownStats.Clear();
        for (int at = 0; at < entries.Length; at += 10)
        {
            ushort tag = BinaryPrimitives.ReadUInt16LittleEndian(entries[at..]);
            ulong value = BinaryPrimitives.ReadUInt64LittleEndian(entries[(at + 2)..]);
            if (tag < StatsSlots)
            {
                _statsValues[tag] = value;
                _statsPresent |= 1u << tag;
            }
            else
            {
                int known = -1;
                for (int i = 0; i < _unknownStats.Count && known < 0; i++)
                {
                    known = _unknownStats[i].Key == tag ? i : -1;
                }

                if (known >= 0)
                {
                    _unknownStats[known] = new KeyValuePair<ushort, ulong>(tag, value);
                }
                else if (_unknownStats.Count < MaxUnknownStats)
                {
                    _unknownStats.Add(new KeyValuePair<ushort, ulong>(tag, value));
                }
            }
        }

        _statsUpdatedAt = DateTimeOffset.UtcNow;
        _statsArrived = true;
    }
}

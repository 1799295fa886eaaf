using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Threading;
using Virtio.Balloon.Hints;
using Virtio.Balloon.Migration;
using Virtio.Balloon.Tests.Device;
using Virtio.Ring;
using Virtio.Ring.Transport;
using static Virtio.Balloon.BalloonFeatureBits;

namespace Virtio.Balloon.Tests.Hints;

/// <summary>
/// The device side of free page hinting against the spec (VIRTIO 1.2, 5.5.6.5), the original patch's arrays, and a
/// guest that sends stale, early or malformed hint buffers. Run once per ring format.
/// </summary>
public abstract class FreePageHintDeviceTests
{
    protected abstract VirtqueueFormat Format { get; }

    [Fact]
    public void A_request_writes_a_new_id_of_at_least_two_to_config_and_notifies()
    {
        using RawBalloonGuest guest = Guest(FreePageHintProtocol.Standard, out _);
        Assert.Equal(FreePageHintStatus.Idle, guest.Device.FreePageHintStatus);
        Assert.Equal(FreePageHintCommand.Stop, CommandId(guest));
        guest.Driver.TakeInterrupts();

        var ids = new HashSet<uint>();
        for (int i = 0; i < 100; i++)
        {
            uint id = guest.Device.RequestFreePageHints();
            Assert.True(id >= FreePageHintCommand.FirstReportId);
            Assert.True(ids.Add(id), "an id is never reused");
            Assert.Equal(id, CommandId(guest));
            Assert.Equal(FreePageHintStatus.Requested, guest.Device.FreePageHintStatus);
            Assert.Equal(VirtioInterruptReason.ConfigurationChange, guest.Driver.TakeInterrupts());
        }
    }

    [Fact]
    public void Standard_blocks_count_only_between_the_matching_id_and_stop()
    {
        using RawBalloonGuest guest = Guest(FreePageHintProtocol.Standard, out RecordingHintSink sink);
        int q = guest.Layout.FreePageHint;

        guest.SendWritable(q, Block(100, 1));                   // nothing requested: ignored
        uint id = guest.Device.RequestFreePageHints();
        guest.SendWritable(q, Block(101, 1));                   // requested, not started: ignored
        SendId(guest, id + 1000);                               // a wrong id does not start the report
        Assert.Equal(FreePageHintStatus.Requested, guest.Device.FreePageHintStatus);
        Assert.Equal(2, guest.Device.IgnoredHintBlocks);

        SendId(guest, id);
        Assert.Equal(FreePageHintStatus.Reporting, guest.Device.FreePageHintStatus);
        guest.SendWritable(q, Block(1024, 1024), Block(2048, 1024)); // two adjacent blocks in one chain: one run
        guest.SendWritable(q, Block(8, 2));
        Assert.Equal([new GuestPageRange(1024, 2048), new GuestPageRange(8, 2)], sink.RunsOf(id));
        Assert.Equal(3, guest.Device.HintBlocks);
        Assert.Equal(2050, guest.Device.HintedPages);

        SendId(guest, FreePageHintCommand.Stop);
        Assert.Equal(FreePageHintStatus.Stopped, guest.Device.FreePageHintStatus);
        Assert.Equal(FreePageHintCommand.Stop, CommandId(guest));
        guest.SendWritable(q, Block(4096, 1));                  // after STOP: ignored
        Assert.Equal(3, guest.Device.IgnoredHintBlocks);
        Assert.Equal(2, sink.RunsOf(id).Count);
        Assert.Equal(3, guest.Device.Rejected(BalloonMessageError.UnrequestedHint));
    }

    [Fact]
    public void A_stale_stop_does_not_end_a_newer_report_and_old_blocks_are_ignored()
    {
        using RawBalloonGuest guest = Guest(FreePageHintProtocol.Standard, out RecordingHintSink sink);
        int q = guest.Layout.FreePageHint;
        uint a = guest.Device.RequestFreePageHints();
        SendId(guest, a);
        uint b = guest.Device.RequestFreePageHints();            // the host moved on mid-report
        guest.SendWritable(q, Block(16, 1));                    // a's block, arriving late: ignored
        SendId(guest, FreePageHintCommand.Stop);                 // a's STOP: stale, changes nothing
        Assert.Equal(FreePageHintStatus.Requested, guest.Device.FreePageHintStatus);
        Assert.Empty(sink.RunsOf(a));

        SendId(guest, b);
        guest.SendWritable(q, Block(32, 1));
        Assert.Equal([new GuestPageRange(32, 1)], sink.RunsOf(b));

        guest.Device.StopFreePageHints();                        // the host's stop
        Assert.Equal(FreePageHintCommand.Stop, CommandId(guest));
        guest.SendWritable(q, Block(48, 1));
        Assert.Single(sink.RunsOf(b));
        Assert.Equal(2, guest.Device.IgnoredHintBlocks);
    }

    [Fact]
    public void Done_is_written_to_config_and_every_transition_is_an_event()
    {
        using RawBalloonGuest guest = Guest(FreePageHintProtocol.Standard, out _);
        var seen = new List<(FreePageHintStatus, FreePageHintStatus, uint)>();
        guest.Device.FreePageHintStatusChanged += (_, e) => seen.Add((e.Previous, e.Status, e.CommandId));
        uint id = guest.Device.RequestFreePageHints();
        SendId(guest, id);
        SendId(guest, FreePageHintCommand.Stop);
        guest.Device.FinishFreePageHints();
        Assert.Equal(FreePageHintCommand.Done, CommandId(guest));
        guest.Driver.Reset();
        Assert.Equal(FreePageHintCommand.Stop, CommandId(guest));
        Assert.Equal(
            [
                (FreePageHintStatus.Idle, FreePageHintStatus.Requested, id),
                (FreePageHintStatus.Requested, FreePageHintStatus.Reporting, id),
                (FreePageHintStatus.Reporting, FreePageHintStatus.Stopped, id),
                (FreePageHintStatus.Stopped, FreePageHintStatus.Done, id),
                (FreePageHintStatus.Done, FreePageHintStatus.Idle, id),
            ],
            seen);
    }

    [Fact]
    public void Ids_keep_counting_across_a_reset_so_none_is_reused()
    {
        using RawBalloonGuest guest = Guest(FreePageHintProtocol.Standard, out _);
        uint before = guest.Device.RequestFreePageHints();
        guest.Driver.Reset();
        Assert.Equal(FreePageHintStatus.Idle, guest.Device.FreePageHintStatus);
        Assert.True(guest.Device.RequestFreePageHints() > before);
    }

    [Fact]
    public void Malformed_hint_messages_are_refused_counted_and_never_break_the_device()
    {
        using RawBalloonGuest guest = Guest(FreePageHintProtocol.Standard, out RecordingHintSink sink);
        int q = guest.Layout.FreePageHint;
        uint id = guest.Device.RequestFreePageHints();
        guest.SendReadable(q, [1, 2, 3]);                                   // a 3-byte command
        Assert.Equal(1, guest.Device.Rejected(BalloonMessageError.BadHintCommand));
        SendId(guest, id);
        guest.SendWritable(q, new GuestRange(0x1000 + 12, 4096));           // not page aligned
        guest.SendWritable(q, new GuestRange(0x1000, 100));                 // not whole pages
        Assert.Equal(2, guest.Device.Rejected(BalloonMessageError.NotPageAligned));
        // (A block past the end of RAM is a descriptor outside guest memory: the queue layer refuses it first.)
        Assert.True(guest.Queue(q).TryAdd([new GuestRange(RawBalloonGuest.DataArea, 4)], [Block(8, 1)], 1)); // both directions
        guest.KickAndTakeUsed(q);
        Assert.Equal(1, guest.Device.Rejected(BalloonMessageError.WrongDirection));
        Assert.Empty(sink.RunsOf(id));
        Assert.Equal(FreePageHintStatus.Reporting, guest.Device.FreePageHintStatus);
        Assert.Null(guest.Device.LastFault);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Hint_arrays_start_with_id_and_size_and_carry_le64_or_be64_addresses(bool bigEndian)
    {
        using RawBalloonGuest guest = Guest(FreePageHintProtocol.HintArrays, out RecordingHintSink sink, bigEndian);
        int q = guest.Layout.FreePageHint;
        uint id = guest.Device.RequestFreePageHints();
        SendStart(guest, id, 4 << 20, bigEndian);
        Assert.Equal(FreePageHintStatus.Reporting, guest.Device.FreePageHintStatus);

        // Blocks 1, 2, 3 (contiguous), 5, then 7, 8: three runs.
        SendArray(guest, bigEndian, [1UL << 22, 2UL << 22, 3UL << 22, 5UL << 22, 7UL << 22, 8UL << 22]);
        Assert.Equal([new GuestPageRange(1024, 3072), new GuestPageRange(5120, 1024), new GuestPageRange(7168, 2048)], sink.RunsOf(id));
        Assert.Equal(6, guest.Device.HintBlocks);

        SendStart(guest, 0, 0, bigEndian); // the stop command {0, 0}
        Assert.Equal(FreePageHintStatus.Stopped, guest.Device.FreePageHintStatus);
    }

    [Fact]
    public void Hint_array_faults_are_refused_and_counted()
    {
        using RawBalloonGuest guest = Guest(FreePageHintProtocol.HintArrays, out RecordingHintSink sink);
        int q = guest.Layout.FreePageHint;
        uint id = guest.Device.RequestFreePageHints();
        SendStart(guest, id, 3000, bigEndian: false);                       // not a power of two
        SendStart(guest, id, 2048, bigEndian: false);                       // below a page
        Assert.Equal(2, guest.Device.Rejected(BalloonMessageError.BadHintCommand));
        Assert.Equal(FreePageHintStatus.Requested, guest.Device.FreePageHintStatus);
        guest.SendReadable(q, [1, 2, 3, 4]);                                // the standard protocol's 4 bytes
        Assert.Equal(3, guest.Device.Rejected(BalloonMessageError.BadHintCommand));

        SendStart(guest, id, 1 << 20, bigEndian: false);                    // 1 MiB blocks
        SendArray(guest, false, [1UL << 20, 2UL << 20, (3UL << 20) + 4096, 4UL << 20]); // the third is misaligned
        Assert.Equal(1, guest.Device.Rejected(BalloonMessageError.HintMisaligned));
        Assert.Equal([new GuestPageRange(256, 512)], sink.RunsOf(id));       // the entries before it stand
        SendArray(guest, false, [63UL << 20, 64UL << 20]);                   // the second is past RAM (64 MiB)
        Assert.Equal(2, guest.Device.Rejected(BalloonMessageError.HintMisaligned));
        Assert.Equal(new GuestPageRange(63 * 256, 256), sink.RunsOf(id)[^1]);
        guest.SendWritable(q, new GuestRange(RawBalloonGuest.DataArea, 12)); // not whole entries
        Assert.Equal(1, guest.Device.Rejected(BalloonMessageError.HintArrayLength));
        Assert.Null(guest.Device.LastFault);
    }

    [Fact]
    public void A_hint_array_longer_than_64_MiB_is_refused_whole()
    {
        var sink = new RecordingHintSink();
        using var guest = new RawBalloonGuest(offered: 1UL << FreePageHint, wanted: 1UL << FreePageHint, format: Format,
            guestBytes: 256UL << 20, hintProtocol: FreePageHintProtocol.HintArrays, hintSink: sink);
        uint id = guest.Device.RequestFreePageHints();
        SendStart(guest, id, 4 << 20, bigEndian: false);
        guest.SendWritable(guest.Layout.FreePageHint, new GuestRange(64UL << 20, (96u << 20) + 8)); // inside RAM, too long
        Assert.Equal(1, guest.Device.Rejected(BalloonMessageError.HintArrayLength));
        Assert.Empty(sink.RunsOf(id));
        Assert.Null(guest.Device.LastFault);
    }

    /// <summary>
    /// With a migration bitmap as the sink, 4 MiB hint arrays are cleared straight into it (the device's direct
    /// path): every valid entry's chunk, in any order, the bitmap's partial last chunk page by page, the entries
    /// before a bad one and none after it; blocks and pages counted as on the general path.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Hint_arrays_of_4_MiB_blocks_clear_a_migration_bitmap_chunk_by_chunk(bool bigEndian)
    {
        const ulong Pages = (64UL << 20) / 4096;
        using var bitmap = new MigrationBitmap(0, Pages - 100); // its last chunk is partial
        using var guest = new RawBalloonGuest(offered: 1UL << FreePageHint, wanted: 1UL << FreePageHint, format: Format,
            hintProtocol: FreePageHintProtocol.HintArrays, hintSink: bitmap, bigEndianHints: bigEndian);
        bitmap.MarkAll();
        uint id = guest.Device.RequestFreePageHints();
        SendStart(guest, id, 4 << 20, bigEndian);

        ulong[] chunks = [2, 3, 4, 9, 15, 7, 0, 1, 11, 12, 13, 14];
        SendArray(guest, bigEndian, Array.ConvertAll(chunks, c => c << 22));
        Assert.Equal(chunks.Length, guest.Device.HintBlocks);
        Assert.Equal(chunks.Length * 1024, guest.Device.HintedPages);
        var expected = new HashSet<ulong>(chunks);
        for (ulong c = 0; c < 16; c++)
        {
            Assert.Equal(!expected.Contains(c), bitmap.IsMarked(c * 1024));
            Assert.Equal(!expected.Contains(c), bitmap.IsMarked(Math.Min((c * 1024) + 1023, Pages - 101)));
        }

        // A misaligned third entry: the two before it are applied, the one after is not.
        bitmap.MarkAll();
        SendArray(guest, bigEndian, [5UL << 22, 6UL << 22, (8UL << 22) + 4096, 10UL << 22]);
        Assert.Equal(1, guest.Device.Rejected(BalloonMessageError.HintMisaligned));
        Assert.Equal(Pages - 100 - 2048, (ulong)bitmap.CountMarked());
        Assert.True(bitmap.IsMarked(10 * 1024));

        // Past RAM: refused the same way.
        SendArray(guest, bigEndian, [10UL << 22, 16UL << 22]);
        Assert.Equal(2, guest.Device.Rejected(BalloonMessageError.HintMisaligned));
        Assert.False(bitmap.IsMarked(10 * 1024));
        Assert.Null(guest.Device.LastFault);

        // After STOP, arrays are counted as ignored and clear nothing.
        SendStart(guest, 0, 0, bigEndian);
        bitmap.MarkAll();
        long ignored = guest.Device.IgnoredHintBlocks;
        SendArray(guest, bigEndian, [1UL << 22, 2UL << 22]);
        Assert.Equal(ignored + 2, guest.Device.IgnoredHintBlocks);
        Assert.Equal(Pages - 100, (ulong)bitmap.CountMarked());
    }

    /// <summary>
    /// The stop guarantee on the direct path: once <c>StopFreePageHints</c> returned and the migration re-marked its
    /// bitmap (the dirty-log sync), no hint of the stopped report clears a bit of it.
    /// </summary>
    [Fact]
    public void No_hint_clears_a_migration_bitmap_after_stop_returns()
    {
        const ulong Pages = (64UL << 20) / 4096;
        using var bitmap = new MigrationBitmap(0, Pages);
        using var guest = new RawBalloonGuest(offered: 1UL << FreePageHint, wanted: 1UL << FreePageHint, format: Format,
            hintProtocol: FreePageHintProtocol.HintArrays, hintSink: bitmap);
        using var done = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        int rounds = 0;
        int violations = 0;
        ulong[] entries = new ulong[16 * 64];
        for (int i = 0; i < entries.Length; i++)
        {
            entries[i] = (ulong)(i % 16) << 22; // every chunk, many times over: long enough to straddle a stop
        }

        Thread guestThread = StartReportingGuest(guest, entries, () => !done.IsCancellationRequested && Volatile.Read(ref rounds) < 300);
        while (Volatile.Read(ref rounds) < 300 && !done.IsCancellationRequested)
        {
            guest.Device.RequestFreePageHints();
            SpinWait.SpinUntil(() => guest.Device.FreePageHintStatus == FreePageHintStatus.Reporting, TimeSpan.FromSeconds(5));
            Thread.SpinWait(200);
            guest.Device.StopFreePageHints();
            bitmap.MarkAll(); // the sync: from here on, a cleared bit would be a late hint
            Thread.SpinWait(2000);
            if ((ulong)bitmap.CountMarked() != Pages)
            {
                violations++;
            }

            Interlocked.Increment(ref rounds);
        }

        Assert.True(guestThread.Join(TimeSpan.FromSeconds(20)));
        Assert.False(done.IsCancellationRequested, "300 rounds within the time limit");
        Assert.Equal(0, violations);
        Assert.True(guest.Device.HintBlocks > 0 && guest.Device.IgnoredHintBlocks > 0, "both sides of the race were exercised");
    }

    /// <summary>
    /// The guarantee a migration relies on: once <c>StopFreePageHints</c> returned, the sink never again sees that
    /// report's hints, however the serving thread is interleaved with it.
    /// </summary>
    [Fact]
    public void No_hint_is_applied_after_stop_returns()
    {
        using RawBalloonGuest guest = Guest(FreePageHintProtocol.HintArrays, out RecordingHintSink sink);
        int q = guest.Layout.FreePageHint;
        long stoppedId = 0;
        int violations = 0;
        sink.OnBatch = _ =>
        {
            long stopped = Volatile.Read(ref stoppedId);
            List<(uint Id, GuestPageRange Range)> all = sink.All();
            if (stopped != 0 && all[^1].Id == (uint)stopped)
            {
                Interlocked.Increment(ref violations);
            }
        };

        using var done = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        int rounds = 0;
        ulong[] entries = new ulong[64];
        for (int i = 0; i < entries.Length; i++)
        {
            entries[i] = (ulong)(2 * i) << 22; // every other 4 MiB block: 64 runs per array
        }

        Thread guestThread = StartReportingGuest(guest, entries, () => !done.IsCancellationRequested && Volatile.Read(ref rounds) < 300);
        while (Volatile.Read(ref rounds) < 300 && !done.IsCancellationRequested)
        {
            uint id = guest.Device.RequestFreePageHints();
            Volatile.Write(ref stoppedId, 0);
            SpinWait.SpinUntil(() => guest.Device.FreePageHintStatus == FreePageHintStatus.Reporting, TimeSpan.FromSeconds(5));
            Thread.SpinWait(200);
            guest.Device.StopFreePageHints();
            Volatile.Write(ref stoppedId, id); // from here on, a hint of `id` would be a violation
            Thread.SpinWait(500);
            Interlocked.Increment(ref rounds);
        }

        Assert.True(guestThread.Join(TimeSpan.FromSeconds(20)));
        Assert.False(done.IsCancellationRequested, "300 rounds within the time limit");
        Assert.Equal(0, violations);
        Assert.True(guest.Device.HintBlocks > 0 && guest.Device.IgnoredHintBlocks > 0, "both sides of the race were exercised");
    }

    /// <summary>A guest thread that answers every new report id with a start command, then sends <paramref name="entries"/> as 4 MiB hint arrays over and over while <paramref name="running"/>.</summary>
    private static Thread StartReportingGuest(RawBalloonGuest guest, ulong[] entries, Func<bool> running)
    {
        var thread = new Thread(() =>
        {
            uint started = 0;
            while (running())
            {
                uint id = CommandId(guest);
                if (FreePageHintCommand.IsReportId(id) && id != started)
                {
                    SendStart(guest, id, 4 << 20, bigEndian: false);
                    started = id;
                }

                SendArray(guest, false, entries);
            }
        });
        thread.Start();
        return thread;
    }

    private RawBalloonGuest Guest(FreePageHintProtocol protocol, out RecordingHintSink sink, bool bigEndian = false)

    {
        sink = new RecordingHintSink();
        return new RawBalloonGuest(offered: 1UL << FreePageHint, wanted: 1UL << FreePageHint, format: Format,
            hintProtocol: protocol, hintSink: sink, bigEndianHints: bigEndian);
    }

    private static GuestRange Block(ulong pfn, uint pages) => new(pfn << 12, pages << 12);

    private static uint CommandId(RawBalloonGuest guest)
    {
        Span<byte> id = stackalloc byte[4];
        guest.Driver.ReadConfig(BalloonConfigLayout.FreePageHintCommandIdOffset, id);
        return BinaryPrimitives.ReadUInt32LittleEndian(id);
    }

    private static void SendId(RawBalloonGuest guest, uint id)
    {
        Span<byte> bytes = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, id);
        guest.SendReadable(guest.Layout.FreePageHint, bytes);
    }

    private static void SendStart(RawBalloonGuest guest, uint id, uint size, bool bigEndian)
    {
        Span<byte> bytes = stackalloc byte[8];
        if (bigEndian)
        {
            BinaryPrimitives.WriteUInt32BigEndian(bytes, id);
            BinaryPrimitives.WriteUInt32BigEndian(bytes[4..], size);
        }
        else
        {
            BinaryPrimitives.WriteUInt32LittleEndian(bytes, id);
            BinaryPrimitives.WriteUInt32LittleEndian(bytes[4..], size);
        }

        guest.SendReadable(guest.Layout.FreePageHint, bytes);
    }

    /// <summary>Writes the addresses at DataArea + 64 KiB and sends them as one device-writable array.</summary>
    private static void SendArray(RawBalloonGuest guest, bool bigEndian, ulong[] addresses)
    {
        ulong at = RawBalloonGuest.DataArea + 0x1_0000;
        byte[] bytes = new byte[addresses.Length * 8];
        for (int i = 0; i < addresses.Length; i++)
        {
            if (bigEndian)
            {
                BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(8 * i), addresses[i]);
            }
            else
            {
                BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(8 * i), addresses[i]);
            }
        }

        Assert.Equal(GuestMemoryError.None, guest.Memory.TryWrite(at, bytes));
        guest.SendWritable(guest.Layout.FreePageHint, new GuestRange(at, (uint)bytes.Length));
    }
}

public sealed class SplitRingFreePageHintDeviceTests : FreePageHintDeviceTests
{
    protected override VirtqueueFormat Format => VirtqueueFormat.Split;
}

public sealed class PackedRingFreePageHintDeviceTests : FreePageHintDeviceTests
{
    protected override VirtqueueFormat Format => VirtqueueFormat.Packed;
}

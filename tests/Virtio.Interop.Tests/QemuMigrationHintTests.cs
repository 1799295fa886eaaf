using System;
using System.Diagnostics;
using System.Text.Json.Nodes;
using System.Threading;
using Virtio.Balloon;
using Virtio.Balloon.Driver;
using Virtio.Balloon.Hints;
using Virtio.Interop.Qemu;
using Virtio.Ring;
using Xunit.Abstractions;

namespace Virtio.Interop.Tests;

/// <summary>
/// Free page hinting during a real QEMU migration: QEMU's balloon requests hints at each bitmap sync (a new command
/// id), our driver (the VIRTIO 1.2 protocol, as QEMU speaks it) reports its allocator's free blocks, QEMU skips
/// them, and DONE at the end gives the blocks back. The same migration without hinting sends them.
/// </summary>
public sealed class QemuMigrationHintTests(ITestOutputHelper output)
{
    private const ulong Ram = 256UL << 20;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void QEMU_skips_the_pages_our_driver_hints_during_a_migration(bool packed)
    {
        (long withHints, long heldAfter, long reports) = Migrate(packed, hints: true, output.WriteLine);
        (long without, _, _) = Migrate(packed, hints: false, output.WriteLine);
        output.WriteLine($"normal pages sent: {without} without hints, {withHints} with; {reports} reports");
        Assert.True(reports >= 1, "our driver answered QEMU's command id");
        Assert.True(without - withHints > (128L << 20) / 4096, $"hints kept QEMU from sending our free pages ({without} -> {withHints})");
        Assert.Equal(0, heldAfter); // DONE gave the blocks back
    }

    private static (long NormalPages, long HeldAfterDone, long Reports) Migrate(bool packed, bool hints, Action<string>? output = null)
    {
        using var rig = new QemuBalloonRig(new QemuBalloonOptions { MemoryBytes = Ram, Packed = packed }, new BalloonDriverOptions
        {
            RingFormat = packed ? VirtqueueFormat.Packed : VirtqueueFormat.Split,
            Numbering = BalloonQueueNumbering.Qemu,
            WantedFeatures = hints ? BalloonFeatureBits.All : BalloonFeatureBits.All & ~(1UL << BalloonFeatureBits.FreePageHint),
            HintProtocol = FreePageHintProtocol.Standard,
            Timeout = TimeSpan.FromSeconds(10),
        });

        // A guest whose free memory is not zero (QEMU sends zero pages almost for free): fill what our allocator owns.
        rig.Machine.Memory.TryGetSpan(QemuBalloonRig.AllocatorStartPfn << 12, (int)(Ram - (QemuBalloonRig.AllocatorStartPfn << 12)), out Span<byte> ram);
        ram.Fill(0x77);
        Assert.True(rig.Driver.Initialize(), rig.Machine.StandardError);

        using var stop = new CancellationTokenSource();
        var guest = new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                rig.Driver.WaitForInterrupt(TimeSpan.FromMilliseconds(10));
                rig.Driver.Poll();
            }
        })
        { IsBackground = true, Name = "guest balloon" };
        guest.Start();
        try
        {
            rig.Machine.Qmp.Execute("migrate-set-parameters", new JsonObject { ["max-bandwidth"] = 64L << 20 });
            rig.Machine.Qmp.Execute("migrate", new JsonObject { ["uri"] = "exec:cat > /dev/null" });
            JsonNode? info = null;
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed < TimeSpan.FromSeconds(60))
            {
                info = rig.Machine.Qmp.Execute("query-migrate");
                string? status = info?["status"]?.GetValue<string>();
                Assert.NotEqual("failed", status);
                if (status == "completed")
                {
                    break;
                }

                Thread.Sleep(50);
            }

            Assert.Equal("completed", info?["status"]?.GetValue<string>());
            long normal = info!["ram"]!["normal"]!.GetValue<long>();
            if (hints)
            {
                SpinWait.SpinUntil(() => rig.Driver.HintedPagesHeld == 0, TimeSpan.FromSeconds(10));
            }

            output?.Invoke($"hints {hints}: migrated in {clock.ElapsedMilliseconds} ms, {normal} normal pages, {rig.Driver.FreePageHintReports} reports, {rig.Driver.LastReportBlocks} blocks in the last");
            return (normal, rig.Driver.HintedPagesHeld, rig.Driver.FreePageHintReports);
        }
        finally
        {
            stop.Cancel();
            guest.Join(TimeSpan.FromSeconds(10));
        }
    }
}

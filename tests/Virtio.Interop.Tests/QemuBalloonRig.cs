using System;
using System.Diagnostics;
using System.Globalization;
using Virtio.Balloon;
using Virtio.Balloon.Driver;
using Virtio.Balloon.GuestAllocator;
using Virtio.Interop.Qemu;
using Virtio.Interop.Qtest;
using Virtio.Ring;

namespace Virtio.Interop.Tests;

/// <summary>Whose balloon device our driver talks to.</summary>
public enum BalloonPeer
{
    /// <summary>QEMU 7.2's virtio-balloon.</summary>
    Qemu,

    /// <summary>Our BalloonDevice, served by samples/Virtio.BalloonServer in its own process.</summary>
    Ours,
}

/// <summary>
/// QEMU's virtio-balloon device, driven by our balloon driver through qtest: QEMU as a child process, guest RAM in
/// a shared file our allocator hands out (from 16 MiB up: the firmware owns the low memory), the balloon's
/// interrupt line (GSI 5 + transport) delivered to the driver. Disposing kills QEMU and removes its files.
/// </summary>
internal sealed class QemuBalloonRig : IDisposable
{
    public const ulong AllocatorStartPfn = 4096; // 16 MiB

    public QemuBalloonRig(QemuBalloonOptions options, BalloonDriverOptions? driverOptions = null)
        : this(BalloonPeer.Qemu, options, driverOptions)
    {
    }

    public QemuBalloonRig(BalloonPeer peer, QemuBalloonOptions options, BalloonDriverOptions? driverOptions = null)
    {
        if (peer == BalloonPeer.Qemu)
        {
            // In CI a missing QEMU is a failure, not a skip: .ci/run installs it.
            Assert.True(QtestMachine.IsAvailable, "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
            Machine = QtestMachine.StartWithBalloon(options);
        }
        else
        {
            Machine = StartOurs(options);
        }

        try
        {
            (int index, ulong baseAddress) = Machine.FindDevice(5);
            Assert.True(index >= 0, "QEMU's balloon answers on a virtio-mmio transport");
            TransportIndex = index;
            Bus = new QtestMmioBus(Machine.Qtest, baseAddress);
            Allocator = new BuddyAllocator(AllocatorStartPfn, (options.MemoryBytes / 4096) - AllocatorStartPfn);
            Driver = new BalloonDriver(Bus, Machine.Memory, Allocator, driverOptions ?? new BalloonDriverOptions
            {
                RingFormat = options.Packed ? VirtqueueFormat.Packed : VirtqueueFormat.Split,
                Numbering = BalloonQueueNumbering.Qemu,
                Timeout = TimeSpan.FromSeconds(10),
            });
            Machine.Qtest.IrqRaised += gsi =>
            {
                if (gsi == QtestMachine.FirstGsi + TransportIndex)
                {
                    Driver.OnInterrupt();
                }
            };
        }
        catch
        {
            Machine.Dispose();
            throw;
        }
    }

    public QtestMachine Machine { get; }

    public int TransportIndex { get; }

    public QtestMmioBus Bus { get; }

    public BuddyAllocator Allocator { get; }

    public BalloonDriver Driver { get; }

    /// <summary>Our balloon over qtest, as its own process, with the same device options QEMU's gets.</summary>
    private static QtestMachine StartOurs(QemuBalloonOptions options)
    {
        string server = System.IO.Path.Combine(AppContext.BaseDirectory, "Virtio.BalloonServer.dll");
        var arguments = new System.Collections.Generic.List<string> { server };
        if (options.Packed)
        {
            arguments.Add("--packed");
        }

        if (!options.FreePageHint)
        {
            arguments.Add("--no-free-page-hint");
        }

        if (!options.FreePageReporting)
        {
            arguments.Add("--no-free-page-reporting");
        }

        if (!options.DeflateOnOom)
        {
            arguments.Add("--no-deflate-on-oom");
        }

        return QtestMachine.StartServer("dotnet", arguments, options.MemoryBytes);
    }

    /// <summary>Runs the guest's interrupt handling until <paramref name="done"/> holds (bounded).</summary>
    public void PollUntil(Func<bool> done, TimeSpan? timeout = null)
    {
        var clock = Stopwatch.StartNew();
        TimeSpan limit = timeout ?? TimeSpan.FromSeconds(20);
        while (!done())
        {
            Assert.True(clock.Elapsed < limit,
                $"timed out with {Driver.BalloonPages} pages in the balloon, status {Driver.Mmio.Status}; QEMU said:\n{Machine.StandardError}");
            Driver.WaitForInterrupt(TimeSpan.FromMilliseconds(20));
            Driver.Poll();
        }
    }

    /// <summary>Blocks (512-byte units) the shared RAM file occupies on disk (QEMU punches holes for inflated pages).</summary>
    public static long FileBlocks(string path)
    {
        var start = new ProcessStartInfo("stat", ["--format=%b", path]) { RedirectStandardOutput = true };
        using Process stat = Process.Start(start)!;
        string output = stat.StandardOutput.ReadToEnd();
        stat.WaitForExit(5000);
        return long.Parse(output.Trim(), CultureInfo.InvariantCulture);
    }

    public void Dispose()
    {
        try
        {
            Driver.Dispose();
        }
        finally
        {
            Allocator.Dispose();
            Machine.Dispose();
        }
    }
}

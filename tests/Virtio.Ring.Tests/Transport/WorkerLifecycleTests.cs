using System;
using System.Collections.Generic;
using System.Threading;
using Virtio.Ring.Transport;

namespace Virtio.Ring.Tests.Transport;

/// <summary>
/// Queue workers survive what a guest does to the device: resets, queue resets and the VMM disposing it, at any
/// point of traffic, on both ring formats. Every buffer comes back exactly once (echoed) or is reclaimed by the
/// driver exactly once, no worker thread ever sees an exception (one would end the test process), and no fault
/// is reported for a well-behaved guest.
/// </summary>
public class WorkerLifecycleTests
{
    private const ulong Version1 = 1UL << VirtioFeatureBits.Version1;
    private const ulong EventIdx = 1UL << VirtioFeatureBits.EventIdx;
    private const ulong Packed = 1UL << VirtioFeatureBits.RingPacked;
    private const ulong RingReset = 1UL << VirtioFeatureBits.RingReset;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    public static TheoryData<QueueThreading, ulong> WorkerModes()
    {
        var data = new TheoryData<QueueThreading, ulong>();
        foreach (QueueThreading t in new[] { QueueThreading.WorkerPerQueue, QueueThreading.WorkerPerDevice })
        {
            foreach (ulong f in new[] { Version1 | EventIdx | RingReset, Version1 | Packed | RingReset, Version1 | Packed | EventIdx | RingReset })
            {
                data.Add(t, f);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(WorkerModes))]
    public void Resets_and_queue_resets_at_random_points_lose_no_buffer_and_raise_nothing(QueueThreading threading, ulong wanted)
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = threading, Name = "reset-test" });
        int faults = 0;
        rig.Device.Faulted += (_, _) => Interlocked.Increment(ref faults);
        var rng = new Random(1234 + (int)threading + (int)(wanted >> 29));
        var outstanding = new HashSet<int>();
        int next = 0;
        int echoed = 0;
        int reclaimed = 0;
        const int Rounds = 1500;
        Initialize(rig, wanted);
        for (int round = 0; round < Rounds; round++)
        {
            int sent = rig.Send(next, rng.Next(1, 17));
            for (int i = 0; i < sent; i++)
            {
                outstanding.Add(next + i);
            }

            next += sent;
            int want = rng.Next(0, sent + 1);
            List<int> back = want == 0 ? [.. rig.Receive()] : rig.ReceiveAtLeast(want, Bound);
            Assert.True(back.Count >= want, $"round {round}: {back.Count} of {want} came back");
            foreach (int token in back)
            {
                Assert.True(outstanding.Remove(token), $"token {token} came back twice");
                echoed++;
            }

            switch (rng.Next(4))
            {
                case 0: // device reset while the worker may be serving
                    rig.Driver.Reset();
                    Assert.Equal(DeviceStatus.Reset, rig.Driver.Status);
                    reclaimed += Reclaim(rig, outstanding);
                    Initialize(rig, wanted);
                    break;
                case 1: // queue reset (VIRTIO_F_RING_RESET), the device stays live
                    Assert.True(rig.Driver.ResetQueue(0));
                    reclaimed += Reclaim(rig, outstanding);
                    Assert.True(rig.SetupQueue0(16));
                    break;
                default:
                    break;
            }
        }

        rig.Driver.Reset();
        reclaimed += Reclaim(rig, outstanding);
        Assert.Empty(outstanding);
        Assert.Equal(next, echoed + reclaimed);
        Assert.True(echoed > next / 4, $"only {echoed} of {next} were served");
        Assert.Equal(0, Volatile.Read(ref faults));
    }

    [Theory]
    [MemberData(nameof(WorkerModes))]
    public void Dispose_while_workers_serve_ends_them_without_an_exception(QueueThreading threading, ulong wanted)
    {
        var rng = new Random(77);
        for (int round = 0; round < 150; round++)
        {
            using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = threading });
            Initialize(rig, wanted);
            var outstanding = new HashSet<int>();
            int sent = rig.Send(0, rng.Next(1, 17));
            for (int i = 0; i < sent; i++)
            {
                outstanding.Add(i);
            }

            if (rng.Next(2) == 0)
            {
                foreach (int token in rig.ReceiveAtLeast(1, Bound))
                {
                    Assert.True(outstanding.Remove(token));
                }
            }

            rig.Device.Dispose(); // the VMM tears the device down mid-traffic
            rig.Driver.Notify(0); // a late kick from a vCPU is ignored, not an exception
            rig.Transport.Write(Virtio.Ring.Transport.Mmio.VirtioMmioRegisters.Status, 4, 0);
            foreach (int token in rig.Receive())
            {
                Assert.True(outstanding.Remove(token));
            }

            Reclaim(rig, outstanding);
            Assert.Empty(outstanding);
        }
    }

    [Fact]
    public void Workers_survive_reset_and_serve_the_next_driver()
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = QueueThreading.WorkerPerQueue });
        int[] before = rig.Device.WorkerThreadIds();
        for (int i = 0; i < 3; i++)
        {
            Initialize(rig, Version1 | EventIdx);
            Assert.Equal(5, rig.Send(i * 10, 5));
            Assert.Equal(5, rig.ReceiveAtLeast(5, Bound).Count);
            rig.Driver.Reset();
            Reclaim(rig, new HashSet<int>());
        }

        Assert.Equal(before.Length, rig.Device.WorkerThreadIds().Length);
        Assert.Equal(2, before.Length); // one per queue
    }

    [Fact]
    public void Inline_mode_serves_on_the_notifying_thread()
    {
        using var rig = new MmioRig();
        Assert.Equal(QueueThreading.Inline, rig.Device.Threading);
        Assert.Empty(rig.Device.WorkerThreadIds());
        Initialize(rig, Version1);
        Assert.Equal(3, rig.Send(0, 3));
        Assert.Equal(3, rig.Receive().Length); // no waiting: the kick ran the device on this thread
    }

    [Fact]
    public void A_kick_before_DRIVER_OK_is_served_at_DRIVER_OK()
    {
        // Linux's virtio-balloon adds and kicks its stats buffer before it sets DRIVER_OK.
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = QueueThreading.WorkerPerDevice });
        Assert.True(rig.Driver.Initialize(Version1 | EventIdx));
        Assert.True(rig.SetupQueue0(16));
        Assert.Equal(2, rig.Send(0, 2));
        Assert.Empty(rig.Receive());
        rig.Driver.SetDriverOk();
        Assert.Equal(2, rig.ReceiveAtLeast(2, Bound).Count);
    }

    [Theory]
    [InlineData(QueueThreading.Inline)]
    [InlineData(QueueThreading.WorkerPerQueue)]
    [InlineData(QueueThreading.WorkerPerDevice)]
    public void A_paused_device_serves_nothing_until_it_resumes_and_then_serves_what_came_meanwhile(QueueThreading threading)
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = threading });
        Initialize(rig, Version1 | EventIdx);
        rig.Device.Pause();
        Assert.True(rig.Device.IsPaused);
        Assert.Equal(4, rig.Send(0, 4));           // kicked while paused
        int echoedWhilePaused = rig.Device.Echoed;
        byte[] snapshot = rig.Device.SaveState();  // stays paused after the save
        Assert.True(rig.Device.IsPaused);
        Assert.Equal(echoedWhilePaused, rig.Device.Echoed);
        Assert.Equal(0, echoedWhilePaused);
        rig.Device.Resume();
        Assert.Equal(4, rig.ReceiveAtLeast(4, Bound).Count);
        Assert.NotEmpty(snapshot);
    }

    internal static void Initialize(MmioRig rig, ulong wanted)
    {
        Assert.True(rig.Driver.Initialize(wanted));
        Assert.True(rig.SetupQueue0(16));
        rig.Driver.SetDriverOk();
    }

    internal static int Reclaim(MmioRig rig, HashSet<int> outstanding)
    {
        int n = 0;
        while (rig.Queue!.TryDetachUnused(out int token))
        {
            Assert.True(outstanding.Remove(token), $"token {token} reclaimed but not outstanding");
            n++;
        }

        return n;
    }
}

using System;
using System.Globalization;
using System.IO;
using System.Runtime.Versioning;
using System.Threading;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Linux;
using R = Virtio.Ring.Transport.Mmio.VirtioMmioRegisters;

namespace Virtio.Ring.Tests.Transport;

/// <summary>
/// eventfd kicks and calls as KVM wires them (ioeventfd into the device's worker, irqfd or per-queue call fds
/// out of it), the interrupt line's level following InterruptStatus, and workers that sleep when idle.
/// </summary>
[SupportedOSPlatform("linux")]
public class EventFdTests
{
    private const ulong Version1 = 1UL << VirtioFeatureBits.Version1;
    private const ulong EventIdx = 1UL << VirtioFeatureBits.EventIdx;
    private const ulong Packed = 1UL << VirtioFeatureBits.RingPacked;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    [Fact]
    public void An_eventfd_counts_signals_and_reads_them_back_without_blocking()
    {
        using EventFd fd = EventFd.Create();
        Assert.False(fd.TryConsume(out _));
        Assert.False(fd.Wait(TimeSpan.Zero));
        fd.Signal();
        fd.Signal(2);
        Assert.True(fd.Wait(TimeSpan.Zero));
        Assert.True(fd.TryConsume(out ulong value));
        Assert.Equal(3UL, value);
        Assert.False(fd.TryConsume(out _));
    }

    [Fact]
    public void A_semaphore_eventfd_hands_out_one_signal_per_read()
    {
        using EventFd fd = EventFd.Create(semaphore: true);
        fd.Signal(2);
        Assert.True(fd.TryConsume(out ulong a));
        Assert.True(fd.TryConsume(out ulong b));
        Assert.False(fd.TryConsume(out _));
        Assert.Equal(1UL, a);
        Assert.Equal(1UL, b);
    }

    [Fact]
    public void Signalling_a_disposed_eventfd_is_ignored()
    {
        EventFd fd = EventFd.Create();
        fd.Dispose();
        Assert.False(fd.Signal());
    }

    [Fact]
    public void Kick_and_call_eventfds_ping_pong_between_two_threads()
    {
        using EventFd kick = EventFd.Create();
        using EventFd call = EventFd.Create();
        const int Rounds = 20_000;
        var peer = new Thread(() =>
        {
            for (int i = 0; i < Rounds; i++)
            {
                Assert.True(kick.Wait(Bound));
                Assert.True(kick.TryConsume(out ulong n));
                Assert.Equal(1UL, n);
                call.Signal();
            }
        });
        peer.Start();
        for (int i = 0; i < Rounds; i++)
        {
            kick.Signal();
            Assert.True(call.Wait(Bound));
            Assert.True(call.TryConsume(out _));
        }

        Assert.True(peer.Join(Bound));
    }

    [Theory]
    [InlineData(QueueThreading.WorkerPerQueue, Version1 | EventIdx)]
    [InlineData(QueueThreading.WorkerPerDevice, Version1 | Packed | EventIdx)]
    public void A_guest_kick_through_the_ioeventfd_and_a_call_through_an_eventfd_round_trip(QueueThreading threading, ulong wanted)
    {
        // As KVM wires it: the guest's QueueNotify signals the kick eventfd in the kernel (no MMIO exit reaches
        // the transport), and the device's used-buffer notification signals the queue's call eventfd.
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = threading });
        using EventFd call = EventFd.Create();
        using EventFd config = EventFd.Create();
        WorkerLifecycleTests.Initialize(rig, wanted);
        rig.Device.Interrupt = new EventFdInterrupt([call, null], config);
        EventFd kick = rig.Device.KickEventFd(0)!;
        Assert.NotNull(kick);
        Span<GuestRange> readable = stackalloc GuestRange[1];
        Span<GuestRange> writable = stackalloc GuestRange[1];
        for (int token = 0; token < 5000; token++)
        {
            ulong slot = MmioRig.SlotOf(token);
            BitConverter.TryWriteBytes(rig.Span(slot, 4), token);
            readable[0] = new GuestRange(slot, 4);
            writable[0] = new GuestRange(slot + 8, 4);
            Assert.True(rig.Queue!.TryAdd(readable, writable, token));
            if (rig.Queue.PublishAvailable())
            {
                kick.Signal(); // what KVM does for the guest's QueueNotify write
            }

            int got;
            uint length;
            while (!rig.Queue.TryGetUsed(out got, out length))
            {
                if (rig.Queue.EnableUsedNotifications() == NotificationRecheck.NothingPending)
                {
                    Assert.True(call.Wait(Bound), $"no call for token {token}");
                    call.TryConsume(out _);
                }
            }

            Assert.Equal(token, got);
            rig.CheckEcho(got, length);
        }

        rig.Device.SetValue(3);
        Assert.True(config.Wait(Bound)); // configuration changes go to the config eventfd
    }

    [Fact]
    public void An_idle_worker_sleeps_in_poll_and_burns_no_cpu()
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = QueueThreading.WorkerPerQueue });
        WorkerLifecycleTests.Initialize(rig, Version1);
        Assert.Equal(3, rig.Send(0, 3));
        Assert.Equal(3, rig.ReceiveAtLeast(3, Bound).Count);
        int tid = rig.Device.WorkerThreadIds()[0];
        Assert.True(tid > 0);

        // A spinning worker would stay runnable and gain about 50 ticks of CPU in half a second.
        Assert.True(SpinWait.SpinUntil(() => ThreadState(tid) == 'S', Bound));
        long before = CpuTicks(tid);
        using (var idle = new ManualResetEventSlim())
        {
            Assert.False(idle.Wait(TimeSpan.FromMilliseconds(500))); // an idle half second, by design
        }

        long used = CpuTicks(tid) - before;
        Assert.Equal('S', ThreadState(tid));
        Assert.True(used <= 2, $"the idle worker used {used} ticks");

        Assert.Equal(2, rig.Send(10, 2)); // and it still wakes for a kick
        Assert.Equal(2, rig.ReceiveAtLeast(2, Bound).Count);
    }

    [Fact]
    public void The_line_is_raised_with_the_status_and_lowered_when_the_guest_acknowledges_every_bit()
    {
        using var rig = new MmioRig();
        WorkerLifecycleTests.Initialize(rig, Version1);
        Assert.False(rig.LineLevel);
        rig.Send(0, 1);
        Assert.True(rig.LineLevel);
        rig.Device.SetValue(9);
        Assert.Equal(VirtioInterruptReason.UsedBuffer | VirtioInterruptReason.ConfigurationChange, rig.Transport.InterruptStatus);
        rig.Transport.Write(R.InterruptAck, 4, (uint)VirtioInterruptReason.UsedBuffer);
        Assert.True(rig.LineLevel); // a bit is still pending
        rig.Transport.Write(R.InterruptAck, 4, (uint)VirtioInterruptReason.ConfigurationChange);
        Assert.False(rig.LineLevel);
        rig.Transport.ResampleInterruptLine(); // nothing pending: no raise
        Assert.False(rig.LineLevel);
    }

    [Fact]
    public void A_resample_raises_the_line_again_while_a_bit_is_pending()
    {
        using var rig = new MmioRig();
        WorkerLifecycleTests.Initialize(rig, Version1);
        rig.Device.SetValue(1);
        int raised = rig.Interrupts;
        rig.Line.Lower(); // KVM lowered the level at the guest's EOI; the status bit was not acknowledged
        rig.Transport.ResampleInterruptLine();
        Assert.True(rig.LineLevel);
        Assert.Equal(raised + 1, rig.Interrupts);
    }

    [Fact]
    public void A_reset_lowers_the_line()
    {
        using var rig = new MmioRig();
        WorkerLifecycleTests.Initialize(rig, Version1);
        rig.Device.SetValue(1);
        Assert.True(rig.LineLevel);
        rig.Driver.Reset();
        Assert.False(rig.LineLevel);
    }

    [Fact]
    public void An_irqfd_interrupt_line_signals_its_eventfd()
    {
        using EventFd irqfd = EventFd.Create();
        var line = new EventFdInterruptLine(irqfd);
        line.Raise();
        line.Lower();
        Assert.True(irqfd.TryConsume(out ulong n));
        Assert.Equal(1UL, n);
    }

    private static string[] Stat(int tid)
    {
        string text = File.ReadAllText($"/proc/self/task/{tid}/stat");
        return text[(text.LastIndexOf(')') + 2)..].Split(' '); // fields from the state on (field 3)
    }

    private static char ThreadState(int tid) => Stat(tid)[0][0];

    private static long CpuTicks(int tid)
    {
        string[] f = Stat(tid);
        return long.Parse(f[11], CultureInfo.InvariantCulture) + long.Parse(f[12], CultureInfo.InvariantCulture); // utime + stime
    }
}

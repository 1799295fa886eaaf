using System;
using System.Diagnostics;
using System.Threading;
using Virtio.Ring;
using Virtio.Ring.Transport.Linux;

namespace Virtio.PingPong;

/// <summary>
/// ringtest's run_guest and run_host (tools/virtio/ringtest/main.c) over our queues: the guest adds one empty
/// device-writable buffer at a time (publishing it at once, as ringtest's add_inbuf does), kicks every
/// <c>batch</c> buffers when sleeping, and takes used buffers back; the host pops with full validation, pushes,
/// publishes used buffers every <c>usedBatch</c> buffers (1, ringtest's way, by default) and whenever it runs out of
/// work, and calls when sleeping. Without <c>--sleep</c> both sides poll; <c>--host-relax</c> makes the device back
/// off when it finds nothing.
/// </summary>
internal sealed class PingPongRun(DriverVirtqueue<int> driver, DeviceVirtqueue device, bool sleep, int batch, int maxOutstanding, int relax, int usedBatch, int hostRelax)
{
    private static readonly GuestRange[] Buffer = [new GuestRange(0x80_0000, 0)]; // add_inbuf(0, ...): empty
    private readonly EventFd? _kick = sleep ? EventFd.Create() : null; // the library's eventfd, as a VMM would use it
    private readonly EventFd? _call = sleep ? EventFd.Create() : null;

    public string? Failure { get; private set; }

    /// <summary>Runs one exchange of <paramref name="cycles"/> buffers and returns its wall time.</summary>
    public TimeSpan Exchange(int cycles, int guestCpu, int hostCpu)
    {
        using var start = new Barrier(3);
        var guest = new Thread(() =>
        {
            Pin(guestCpu);
            start.SignalAndWait();
            Failure ??= RunGuest(cycles);
        }) { Name = "guest" };
        var host = new Thread(() =>
        {
            Pin(hostCpu);
            start.SignalAndWait();
            Failure ??= RunHost(cycles);
        }) { Name = "host" };
        guest.Start();
        host.Start();
        start.SignalAndWait();
        var clock = Stopwatch.StartNew();
        guest.Join();
        host.Join();
        return clock.Elapsed;
    }

    private static void Pin(int cpu)
    {
        if (cpu >= 0)
        {
            LinuxThreads.PinCurrentThread(cpu);
        }
    }

    private string? RunGuest(int cycles)
    {
        if (!sleep)
        {
            driver.DisableUsedNotifications(); // polling: leave the device's view of our events alone
        }

        int started = 0;
        int completed = 0;
        int toKick = batch;
        while (true)
        {
            if (sleep)
            {
                driver.DisableUsedNotifications();
            }

            bool progress;
            do
            {
                progress = false;
                if (started < cycles && started - completed < maxOutstanding && driver.TryAdd([], Buffer, started))
                {
                    driver.FlushAvailable();
                    started++;
                    progress = true;
                    if (--toKick == 0)
                    {
                        toKick = batch;
                        if (sleep && driver.PublishAvailable())
                        {
                            _kick!.Signal();
                        }
                    }
                }

                if (driver.TryGetUsed(out _, out _))
                {
                    if (++completed == cycles)
                    {
                        return null;
                    }

                    progress = true;
                }
            }
            while (progress);

            if (driver.Error != QueueError.None)
            {
                return $"driver: {driver.Error}";
            }

            if (!sleep)
            {
                if (relax > 0)
                {
                    Thread.SpinWait(relax);
                }

                continue;
            }

            if (driver.PublishAvailable())
            {
                _kick!.Signal(); // a partial batch must not wait forever
            }

            if (driver.EnableUsedNotifications() == NotificationRecheck.NothingPending)
            {
                _call!.WaitAndConsume(Timeout.InfiniteTimeSpan, out _);
            }
        }
    }

    private string? RunHost(int cycles)
    {
        if (!sleep)
        {
            device.DisableAvailableNotifications();
        }

        int completed = 0;
        while (true)
        {
            if (sleep)
            {
                if (device.EnableAvailableNotifications() == NotificationRecheck.NothingPending)
                {
                    _kick!.WaitAndConsume(Timeout.InfiniteTimeSpan, out _);
                }

                device.DisableAvailableNotifications();
            }

            int unpublished = 0;
            while (device.TryPop(out DescriptorChain chain))
            {
                device.PushUsed(chain.Id, 0);
                completed++;
                if (++unpublished == usedBatch || completed == cycles)
                {
                    // ringtest publishes every buffer (--used-batch 1); a batch of 4 is one 64-byte line of
                    // packed descriptors, which then crosses to the driver's core once instead of four times.
                    unpublished = 0;
                    device.FlushUsed();
                    if (sleep && device.PublishUsed())
                    {
                        _call!.Signal();
                    }
                }

                if (completed == cycles)
                {
                    return null;
                }
            }

            // Out of work: publish what is pending before polling again (the driver may be waiting for it).
            device.FlushUsed();
            if (sleep && device.PublishUsed())
            {
                _call!.Signal();
            }

            if (device.IsBroken)
            {
                return $"device: {device.Error}";
            }

            if (relax + hostRelax > 0)
            {
                // --host-relax: a device that finds the ring empty backs off before looking again. Polling the
                // slot the driver is writing pulls its cache line away on every look; backing off lets the
                // driver finish the line first.
                Thread.SpinWait(relax + hostRelax);
            }
        }
    }
}

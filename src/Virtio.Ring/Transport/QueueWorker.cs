using System;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using System.Threading;
using Virtio.Ring.Internal;
using Virtio.Ring.Transport.Linux;

namespace Virtio.Ring.Transport;

/// <summary>
/// A thread that serves one or more of a device's queues (<see cref="QueueThreading"/>): it sleeps in poll(2) on
/// the queues' kick eventfds and its own wake eventfd, and on each wake serves the kicked queues and drains
/// completions handed over from other threads. It lives as long as the device; resets only park it.
/// <para>
/// <b>Parking.</b> A reset, queue reset, snapshot or restore must not tear a ring down under the worker, and
/// must not leave it holding one. The worker serves only while holding <c>_serve</c>, and only when not parked;
/// <see cref="Park"/> sets the parked flag under the same lock, so when Park returns the worker is outside every
/// queue and stays out until <see cref="Resume"/>. The lock is taken once per wake (a poll(2) and a read(2)
/// cost far more), never per buffer, and is contended only while a control operation runs. Parked, the worker
/// polls only its wake eventfd, so kicks that arrive meanwhile do not make it spin; <see cref="Resume"/> has it
/// serve every queue once, which catches them.
/// </para>
/// <para>
/// <b>Deadlock freedom.</b> The control thread holds the device's control lock while it parks workers; a worker
/// never takes that lock (everything it calls on the device is lock-free or takes only the configuration lock,
/// which no thread holds while it waits for a worker).
/// </para>
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed unsafe class QueueWorker : IDisposable
{
    private readonly VirtioDevice _device;
    private readonly int[] _queues;
    private readonly EventFd[] _kicks;
    private readonly EventFd _wake;
    private readonly LinuxSyscalls.PollFd[] _pollFds; // [0] the wake eventfd, then one per queue
    private readonly object _serve = new();
    private readonly Thread _thread;
    private bool _parked;       // guarded by _serve
    private bool _resumePass;   // guarded by _serve: serve every queue once
    private bool _exit;         // guarded by _serve
    private int _parkedHint;    // _parked, readable without the lock: which eventfds to poll
    private int _osThreadId;

    public QueueWorker(VirtioDevice device, int[] queues, EventFd[] kicks, string name)
    {
        _device = device;
        _queues = queues;
        _kicks = kicks;
        _wake = EventFd.Create();
        _pollFds = GC.AllocateArray<LinuxSyscalls.PollFd>(1 + queues.Length, pinned: true);
        _pollFds[0].Fd = _wake.FileDescriptor;
        for (int i = 0; i < kicks.Length; i++)
        {
            _pollFds[1 + i].Fd = kicks[i].FileDescriptor;
        }

        _thread = new Thread(Run) { IsBackground = true, Name = name };
        _thread.Start();
    }

    /// <summary>The worker's Linux thread ID (for /proc/self/task/TID), once it has started; 0 before.</summary>
    public int OsThreadId => Volatile.Read(ref _osThreadId);

    /// <summary>Wakes the worker (completions were handed over, or it must look at its flags).</summary>
    public void Wake() => _wake.Signal();

    /// <summary>Returns once the worker is outside every queue; it stays out until <see cref="Resume"/>.</summary>
    public void Park()
    {
        lock (_serve)
        {
            _parked = true;
            Volatile.Write(ref _parkedHint, 1);
        }
    }

    /// <summary>Lets the worker serve again, starting with one pass over every queue.</summary>
    public void Resume()
    {
        lock (_serve)
        {
            _parked = false;
            _resumePass = true;
            Volatile.Write(ref _parkedHint, 0);
        }

        _wake.Signal();
    }

    /// <summary>Stops the thread and waits for it (unless called on it, from a device callback).</summary>
    public void Dispose()
    {
        lock (_serve)
        {
            _exit = true;
        }

        _wake.Signal();
        if (Thread.CurrentThread != _thread)
        {
            _thread.Join();
            _wake.Dispose();
        }
    }

    private void Run()
    {
        Volatile.Write(ref _osThreadId, LinuxSyscalls.GetTid());
        fixed (LinuxSyscalls.PollFd* fds = _pollFds)
        {
            while (true)
            {
                int count = Volatile.Read(ref _parkedHint) != 0 ? 1 : _pollFds.Length;
                for (int i = 0; i < _pollFds.Length; i++)
                {
                    fds[i].Events = LinuxSyscalls.PollIn;
                    fds[i].ReturnedEvents = 0;
                }

                // Sleep until a kick or a wake: no spinning while idle.
                if (LinuxSyscalls.Poll(fds, (nuint)count, -1) < 0 && Marshal.GetLastPInvokeError() != LinuxSyscalls.Eintr)
                {
                    return; // only EBADF/EFAULT/EINVAL/ENOMEM: the device is being torn down
                }

                if ((fds[0].ReturnedEvents & LinuxSyscalls.PollIn) != 0)
                {
                    _wake.TryConsume(out _);
                }

                lock (_serve)
                {
                    if (_exit)
                    {
                        return;
                    }

                    if (_parked)
                    {
                        continue;
                    }

                    bool all = _resumePass;
                    _resumePass = false;
                    for (int i = 0; i < _queues.Length; i++)
                    {
                        ulong signals = 0;
                        bool kicked = (fds[1 + i].ReturnedEvents & LinuxSyscalls.PollIn) != 0 && _kicks[i].TryConsume(out signals);
                        _device.ServeQueue(_queues[i], kicked || all, kicked ? _device.DriverKicks(_queues[i], signals) : 0);
                    }
                }
            }
        }
    }
}

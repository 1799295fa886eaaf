using System;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Transport.Linux;

/// <summary>
/// A Linux eventfd (eventfd(2)): a 64-bit counter behind a file descriptor, which is how KVM and vhost move
/// notifications without a VM exit to user space. A VMM registers a queue's kick eventfd with KVM as an
/// ioeventfd (the guest's QueueNotify write signals it inside the kernel) and an interrupt eventfd as an irqfd
/// (a signal injects the interrupt). The library's queue workers wait on kick eventfds
/// (<see cref="VirtioDevice.KickEventFd"/>) and <see cref="EventFdInterrupt"/> and
/// <see cref="EventFdInterruptLine"/> signal call and irq eventfds.
/// <para>
/// Always non-blocking and close-on-exec: <see cref="Signal"/> never blocks, <see cref="TryConsume"/> returns
/// false instead of blocking, and <see cref="Wait"/> blocks in poll(2) with a timeout. The descriptor is owned
/// by this <see cref="SafeHandle"/> (closed once, after the last concurrent use) unless it was adopted with
/// <c>ownsHandle: false</c>.
/// </para>
/// </summary>
[SupportedOSPlatform("linux")]
public sealed unsafe class EventFd : SafeHandle
{
    private EventFd(int fd, bool ownsHandle)
        : base(new IntPtr(-1), ownsHandle)
    {
        SetHandle(new IntPtr(fd));
    }

    /// <inheritdoc/>
    public override bool IsInvalid => handle.ToInt64() < 0;

    /// <summary>The file descriptor, to hand to KVM (KVM_IOEVENTFD, KVM_IRQFD) or another process.</summary>
    public int FileDescriptor => (int)handle.ToInt64();

    /// <summary>
    /// Creates a non-blocking, close-on-exec eventfd with counter 0. In <paramref name="semaphore"/> mode each read
    /// takes 1 from the counter instead of all of it.
    /// </summary>
    /// <exception cref="PlatformNotSupportedException">Not on Linux.</exception>
    /// <exception cref="InvalidOperationException">eventfd(2) failed (errno in the message).</exception>
    public static EventFd Create(bool semaphore = false)
    {
        if (!OperatingSystem.IsLinux())
        {
            ThrowHelper.ThrowPlatformNotSupported("eventfd is a Linux facility.");
        }

        int flags = LinuxSyscalls.EfdNonblock | LinuxSyscalls.EfdCloexec | (semaphore ? LinuxSyscalls.EfdSemaphore : 0);
        int fd = LinuxSyscalls.EventFd(0, flags);
        if (fd < 0)
        {
            ThrowHelper.ThrowInvalidOperation($"eventfd failed: errno {Marshal.GetLastPInvokeError()}.");
        }

        return new EventFd(fd, ownsHandle: true);
    }

    /// <summary>
    /// Wraps an eventfd the VMM already has (one a vhost-user front end sent with SET_VRING_KICK, say). It must be
    /// non-blocking (EFD_NONBLOCK): <see cref="Wait"/> and <see cref="TryConsume"/> rely on it.
    /// </summary>
    /// <param name="fileDescriptor">The descriptor.</param>
    /// <param name="ownsHandle">Whether disposing this object closes it.</param>
    public static EventFd FromFileDescriptor(int fileDescriptor, bool ownsHandle)
    {
        if (fileDescriptor < 0)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(fileDescriptor), "A file descriptor is not negative.");
        }

        return new EventFd(fileDescriptor, ownsHandle);
    }

    /// <summary>
    /// Adds <paramref name="value"/> to the counter, waking every waiter. A counter that would overflow (only
    /// after 2^64 - 2 unconsumed signals) leaves the signal pending, which is all a waiter needs. Signalling an
    /// eventfd that was disposed meanwhile does nothing and returns false: a notification racing a teardown is
    /// moot, and must not become an exception on the notifying (vCPU) thread.
    /// </summary>
    public bool Signal(ulong value = 1)
    {
        bool added = false;
        try
        {
            DangerousAddRef(ref added);
            _ = LinuxSyscalls.Write(FileDescriptor, &value, sizeof(ulong)); // EAGAIN: already signalled, nothing lost
            return true;
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
        finally
        {
            if (added)
            {
                DangerousRelease();
            }
        }
    }

    /// <summary>Reads and resets the counter (or takes 1 in semaphore mode). False when it was 0.</summary>
    public bool TryConsume(out ulong value)
    {
        bool added = false;
        ulong read = 0;
        try
        {
            DangerousAddRef(ref added);
            nint n = LinuxSyscalls.Read(FileDescriptor, &read, sizeof(ulong));
            value = n == sizeof(ulong) ? read : 0;
            return n == sizeof(ulong);
        }
        finally
        {
            if (added)
            {
                DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Waits until the counter is non-zero (without consuming it), at most <paramref name="timeout"/>
    /// (<see cref="System.Threading.Timeout.InfiniteTimeSpan"/> waits for ever). True when it is.
    /// </summary>
    public bool Wait(TimeSpan timeout)
    {
        long ms = (long)timeout.TotalMilliseconds;
        int timeoutMs = timeout == System.Threading.Timeout.InfiniteTimeSpan ? -1 : (int)Math.Clamp(ms, 0, int.MaxValue);
        bool added = false;
        try
        {
            DangerousAddRef(ref added);
            LinuxSyscalls.PollFd pollFd = new() { Fd = FileDescriptor, Events = LinuxSyscalls.PollIn };
            while (true)
            {
                int n = LinuxSyscalls.Poll(&pollFd, 1, timeoutMs);
                if (n >= 0)
                {
                    return n == 1 && (pollFd.ReturnedEvents & LinuxSyscalls.PollIn) != 0;
                }

                if (Marshal.GetLastPInvokeError() != LinuxSyscalls.Eintr)
                {
                    ThrowHelper.ThrowInvalidOperation($"poll failed: errno {Marshal.GetLastPInvokeError()}.");
                }
            }
        }
        finally
        {
            if (added)
            {
                DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Waits, at most <paramref name="timeout"/>, until the counter is non-zero and reads it (what a blocking
    /// read(2) of a blocking eventfd does). False on timeout.
    /// </summary>
    public bool WaitAndConsume(TimeSpan timeout, out ulong value)
    {
        while (!TryConsume(out value))
        {
            if (!Wait(timeout))
            {
                return false;
            }
        }

        return true;
    }

    /// <inheritdoc/>
    protected override bool ReleaseHandle() => LinuxSyscalls.Close(FileDescriptor) == 0;
}

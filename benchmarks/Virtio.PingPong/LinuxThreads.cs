using System;
using System.Runtime.InteropServices;

namespace Virtio.PingPong;

/// <summary>
/// The two Linux primitives ringtest uses: eventfd for kicks and calls (<c>--sleep</c>), and per-thread CPU
/// affinity (<c>--host-affinity</c>, <c>--guest-affinity</c>).
/// </summary>
internal static unsafe partial class LinuxThreads
{
    /// <summary>Pins the calling thread to <paramref name="cpu"/> (sched_setaffinity on thread 0 = self).</summary>
    public static void PinCurrentThread(int cpu)
    {
        ulong* mask = stackalloc ulong[16]; // 1024 CPUs
        new Span<ulong>(mask, 16).Clear();
        mask[cpu / 64] = 1UL << (cpu % 64);
        if (SchedSetAffinity(0, 16 * sizeof(ulong), mask) != 0)
        {
            throw new InvalidOperationException($"sched_setaffinity({cpu}) failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>A blocking eventfd, like ringtest's kickfd and callfd.</summary>
    public static int CreateEventFd()
    {
        int fd = EventFd(0, 0);
        if (fd < 0)
        {
            throw new InvalidOperationException($"eventfd failed: errno {Marshal.GetLastPInvokeError()}");
        }

        return fd;
    }

    /// <summary>Adds 1 to the eventfd's counter (wakes a waiter).</summary>
    public static void Signal(int fd)
    {
        ulong one = 1;
        if (Write(fd, &one, sizeof(ulong)) != sizeof(ulong))
        {
            throw new InvalidOperationException("eventfd write failed");
        }
    }

    /// <summary>Blocks until the counter is non-zero and resets it.</summary>
    public static void Wait(int fd)
    {
        ulong value;
        if (Read(fd, &value, sizeof(ulong)) != sizeof(ulong))
        {
            throw new InvalidOperationException("eventfd read failed");
        }
    }

    [LibraryImport("libc", EntryPoint = "sched_setaffinity", SetLastError = true)]
    private static partial int SchedSetAffinity(int pid, nuint size, ulong* mask);

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    private static partial int EventFd(uint initialValue, int flags);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static partial nint Write(int fd, void* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint Read(int fd, void* buffer, nuint count);
}

using System;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;

// The harness is Linux's ringtest's counterpart: thread pinning, eventfds and the peer's shared file are Linux's.
[assembly: SupportedOSPlatform("linux")]

namespace Virtio.PingPong;

/// <summary>
/// Per-thread CPU affinity (<c>--host-affinity</c>, <c>--guest-affinity</c>), as ringtest pins its threads. Kicks
/// and calls (<c>--sleep</c>) use the library's <see cref="Virtio.Ring.Transport.Linux.EventFd"/>.
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

    [LibraryImport("libc", EntryPoint = "sched_setaffinity", SetLastError = true)]
    private static partial int SchedSetAffinity(int pid, nuint size, ulong* mask);
}

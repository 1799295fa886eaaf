using System;
using System.Runtime.InteropServices;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Memory;

/// <summary>
/// Page-aligned native memory for guest RAM that the library allocates. The pages are reserved, not committed:
/// on Linux and macOS an anonymous private <c>mmap</c> with <c>MAP_NORESERVE</c>, so a simulated multi-TiB guest
/// costs nothing until a page is touched, and untouched pages read as zero. On Windows <c>VirtualAlloc</c>
/// commits (charged against the commit limit, still zero-filled on first touch). Native memory never moves, so
/// host pointers into it stay valid until it is released.
/// </summary>
internal static unsafe partial class NativeRegion
{
    public const ulong PageSize = 4096;

    private const int ProtRead = 0x1;
    private const int ProtWrite = 0x2;
    private const int MapPrivate = 0x02;
    private const int MapAnonymousLinux = 0x20;
    private const int MapNoReserveLinux = 0x4000;
    private const int MapAnonymousBsd = 0x1000; // macOS and the BSDs
    private const uint MemCommit = 0x1000;
    private const uint MemReserve = 0x2000;
    private const uint MemRelease = 0x8000;
    private const uint PageReadWrite = 0x04;

    public static byte* Allocate(ulong length)
    {
        if (length == 0 || length % PageSize != 0)
        {
            ThrowHelper.ThrowArgument(nameof(length), "An allocated region's length must be a non-zero multiple of 4096.");
        }

        if (length > (ulong)nint.MaxValue)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(length), "The region does not fit this process's address space.");
        }

        void* p;
        if (OperatingSystem.IsWindows())
        {
            p = VirtualAlloc(null, (nuint)length, MemCommit | MemReserve, PageReadWrite);
        }
        else
        {
            int flags = OperatingSystem.IsLinux()
                ? MapPrivate | MapAnonymousLinux | MapNoReserveLinux
                : MapPrivate | MapAnonymousBsd;
            p = Mmap(null, (nuint)length, ProtRead | ProtWrite, flags, -1, 0);
            if (p == (void*)-1)
            {
                p = null;
            }
        }

        if (p == null)
        {
            ThrowHelper.ThrowInsufficientMemory($"Could not reserve {length} bytes of guest memory (OS error {Marshal.GetLastPInvokeError()}).");
        }

        return (byte*)p;
    }

    public static void Free(byte* p, ulong length)
    {
        if (OperatingSystem.IsWindows())
        {
            _ = VirtualFree(p, 0, MemRelease);
        }
        else
        {
            _ = Munmap(p, (nuint)length);
        }
    }

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial void* Mmap(void* addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int Munmap(void* addr, nuint length);

    [LibraryImport("kernel32", EntryPoint = "VirtualAlloc", SetLastError = true)]
    private static partial void* VirtualAlloc(void* address, nuint size, uint allocationType, uint protect);

    [LibraryImport("kernel32", EntryPoint = "VirtualFree", SetLastError = true)]
    [return: MarshalAs(UnmanagedType.Bool)]
    private static partial bool VirtualFree(void* address, nuint size, uint freeType);
}

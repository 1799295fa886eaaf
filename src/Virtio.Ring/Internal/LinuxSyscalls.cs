using System.Runtime.InteropServices;

namespace Virtio.Ring.Internal;

/// <summary>
/// The few Linux system calls behind <see cref="Transport.Linux.EventFd"/> and the queue workers: eventfd(2),
/// read(2), write(2), poll(2) and close(2). Raw file descriptors stay in here and in the types that own them.
/// </summary>
internal static unsafe partial class LinuxSyscalls
{
    public const int EfdSemaphore = 0x1;     // EFD_SEMAPHORE
    public const int EfdCloexec = 0x80000;   // EFD_CLOEXEC (= O_CLOEXEC)
    public const int EfdNonblock = 0x800;    // EFD_NONBLOCK (= O_NONBLOCK)
    public const short PollIn = 0x1;         // POLLIN
    public const int Eintr = 4;              // EINTR
    public const int Eagain = 11;            // EAGAIN (= EWOULDBLOCK)

    /// <summary><c>struct pollfd</c>: int fd; short events; short revents (8 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short ReturnedEvents;
    }

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    public static partial int EventFd(uint initialValue, int flags);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, void* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, void* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    public static partial int Poll(PollFd* fds, nuint count, int timeoutMilliseconds);

    [LibraryImport("libc", EntryPoint = "gettid")]
    public static partial int GetTid();

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);
}

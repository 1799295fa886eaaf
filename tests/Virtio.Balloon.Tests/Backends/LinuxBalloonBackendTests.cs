using System;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using Virtio.Balloon.Backends;
using Virtio.Balloon.Tests.Device;
using Virtio.Ring;

namespace Virtio.Balloon.Tests.Backends;

/// <summary>
/// The Linux back end against real memory: pages are mapped and touched, inflated through the device, and the
/// kernel is asked whether they are still there (mincore for residency, SEEK_HOLE for a memfd's backing).
/// </summary>
[SupportedOSPlatform("linux")]
public unsafe partial class LinuxBalloonBackendTests
{
    private const int PageSize = 4096;

    [Fact]
    public void Inflated_anonymous_pages_leave_the_resident_set_and_read_back_as_zero()
    {
        using var guest = new RawBalloonGuest(guestBytes: 16UL << 20, backend: m => new LinuxBalloonBackend(m, HostMemoryBacking.PrivateAnonymous));
        Touch(guest.Memory, 0x80_0000, 64);
        Assert.Equal(64, Resident(guest.Memory, 0x80_0000, 64));
        uint[] pfns = new uint[48];
        for (uint i = 0; i < 48; i++)
        {
            pfns[i] = 0x800 + i;
        }

        guest.SendPfns(0, pfns);
        Assert.Equal(16, Resident(guest.Memory, 0x80_0000, 64));   // the 16 not inflated stay
        Assert.Equal(GuestMemoryError.None, guest.Memory.TryGetSpan(0x80_0000, PageSize, out Span<byte> page));
        Assert.True(page.IndexOfAnyExcept((byte)0) < 0);            // a discarded private page reads as zero
    }

    [Fact]
    public void Deflate_with_prefault_brings_the_pages_back_in()
    {
        using var guest = new RawBalloonGuest(guestBytes: 16UL << 20, backend: m => new LinuxBalloonBackend(m, HostMemoryBacking.PrivateAnonymous, prefaultOnDeflate: true));
        Touch(guest.Memory, 0x40_0000, 32);
        uint[] pfns = new uint[32];
        for (uint i = 0; i < 32; i++)
        {
            pfns[i] = 0x400 + i;
        }

        guest.SendPfns(0, pfns);
        Assert.Equal(0, Resident(guest.Memory, 0x40_0000, 32));
        guest.SendPfns(1, pfns);
        Assert.Equal(32, Resident(guest.Memory, 0x40_0000, 32));  // pre-faulted: the guest takes no fault
    }

    [Fact]
    public void Inflated_memfd_pages_are_punched_out_of_the_shared_file()
    {
        const ulong Size = 16UL << 20;
        int fd = MemfdCreate("virtio-balloon-test", 0);
        Assert.True(fd >= 0, $"memfd_create: errno {Marshal.GetLastPInvokeError()}");
        try
        {
            Assert.Equal(0, Ftruncate(fd, (long)Size));
            byte* map = (byte*)Mmap(null, (nuint)Size, 3 /* PROT_READ|WRITE */, 1 /* MAP_SHARED */, fd, 0);
            Assert.True(map != (byte*)-1);
            using GuestMemory memory = new GuestMemoryBuilder().AttachRegion(0, (nint)map, Size, new Unmap(map, Size)).Build();
            using var guest = new RawBalloonGuest(guestBytes: Size, memory: memory, backend: m => new LinuxBalloonBackend(m, HostMemoryBacking.Shared));
            Touch(memory, 0xA0_0000, 16);
            Assert.Equal(16, Resident(memory, 0xA0_0000, 16));
            Assert.False(IsHole(fd, 0xA0_0000));
            guest.SendPfns(0, 0xA00, 0xA01, 0xA02, 0xA03);
            Assert.True(IsHole(fd, 0xA0_0000));                    // MADV_REMOVE punched the file
            Assert.True(IsHole(fd, 0xA0_3000));
            Assert.False(IsHole(fd, 0xA0_4000));
            Assert.Equal(12, Resident(memory, 0xA0_0000, 16));
        }
        finally
        {
            Close(fd);
        }
    }

    [Fact]
    public void Reported_pages_that_must_keep_their_poison_are_not_discarded()
    {
        using GuestMemory memory = GuestMemory.Allocate(4 << 20);
        var backend = new LinuxBalloonBackend(memory, HostMemoryBacking.PrivateAnonymous);
        backend.Report([new GuestPageRange(0, 16)], preserveContents: true);
        Assert.Equal(0, backend.ReleasedBytes);
        backend.Report([new GuestPageRange(0, 16)], preserveContents: false);
        Assert.Equal(16 * PageSize, backend.ReleasedBytes);
    }

    private static void Touch(GuestMemory memory, ulong gpa, int pages)
    {
        for (int i = 0; i < pages; i++)
        {
            Assert.Equal(GuestMemoryError.None, memory.TryGetSpan(gpa + (ulong)(i * PageSize), PageSize, out Span<byte> page));
            page.Fill(0x5C);
        }
    }

    private static int Resident(GuestMemory memory, ulong gpa, int pages)
    {
        Assert.Equal(GuestMemoryError.None, memory.TryGetSpan(gpa, pages * PageSize, out Span<byte> span));
        byte* vec = stackalloc byte[pages];
        fixed (byte* p = span)
        {
            Assert.Equal(0, Mincore(p, (nuint)(pages * PageSize), vec));
        }

        int resident = 0;
        for (int i = 0; i < pages; i++)
        {
            resident += vec[i] & 1;
        }

        return resident;
    }

    private static bool IsHole(int fd, long offset) => Lseek(fd, offset, 4 /* SEEK_HOLE */) == offset;

    private sealed class Unmap(byte* address, ulong length) : IDisposable
    {
        public void Dispose() => Munmap(address, (nuint)length);
    }

    [LibraryImport("libc", EntryPoint = "mincore", SetLastError = true)]
    private static partial int Mincore(void* address, nuint length, byte* vector);

    [LibraryImport("libc", EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MemfdCreate(string name, uint flags);

    [LibraryImport("libc", EntryPoint = "ftruncate", SetLastError = true)]
    private static partial int Ftruncate(int fd, long length);

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial void* Mmap(void* address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int Munmap(void* address, nuint length);

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long Lseek(int fd, long offset, int whence);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}

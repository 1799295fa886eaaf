using System;
using System.IO;
using System.Runtime.InteropServices;
using Virtio.Ring.Split;

namespace Virtio.Ring.Tests.Memory;

/// <summary>Guest physical address spaces: regions, checked translation, sparse allocation, attach, lifetime.</summary>
public class GuestMemoryTests
{
    [Fact]
    public void Translation_inside_a_region_returns_the_bytes_there()
    {
        using GuestMemory memory = GuestMemory.Allocate(1 << 20, guestPhysicalAddress: 0x4000_0000);
        Assert.Equal(GuestMemoryError.None, memory.TryWrite(0x4000_1000, [1, 2, 3]));
        byte[] back = new byte[3];
        Assert.Equal(GuestMemoryError.None, memory.TryRead(0x4000_1000, back));
        Assert.Equal(new byte[] { 1, 2, 3 }, back);
        Assert.Equal(GuestMemoryError.None, memory.TryGetSpan(0x4000_0000, 1 << 20, out Span<byte> whole));
        Assert.Equal(1 << 20, whole.Length);
    }

    [Theory]
    [InlineData(0x3FFF_FFFFUL, 1, GuestMemoryError.Unmapped)]            // one below the base
    [InlineData(0x4010_0000UL, 1, GuestMemoryError.Unmapped)]            // one past the end
    [InlineData(0x400F_FFFFUL, 2, GuestMemoryError.CrossesRegionEnd)]    // last byte plus one
    [InlineData(0xFFFF_FFFF_FFFF_FFFFUL, 2, GuestMemoryError.AddressOverflow)]
    public void Translation_failures_are_typed(ulong gpa, int length, GuestMemoryError expected)
    {
        using GuestMemory memory = GuestMemory.Allocate(1 << 20, guestPhysicalAddress: 0x4000_0000);
        Assert.Equal(expected, memory.TryGetSpan(gpa, length, out Span<byte> span));
        Assert.True(span.IsEmpty);
    }

    [Fact]
    public void A_range_never_spans_two_adjacent_regions()
    {
        using GuestMemory memory = new GuestMemoryBuilder()
            .AddAllocatedRegion(0, 0x1000)
            .AddAllocatedRegion(0x1000, 0x1000)
            .Build();
        Assert.Equal(GuestMemoryError.CrossesRegionEnd, memory.TryGetSpan(0xFF0, 0x20, out _));
        Assert.Equal(GuestMemoryError.None, memory.TryGetSpan(0x1000, 0x1000, out _));
    }

    [Fact]
    public void Many_regions_are_found_by_binary_search()
    {
        var builder = new GuestMemoryBuilder();
        for (int i = 19; i >= 0; i--) // added out of order: the builder sorts
        {
            builder.AddAllocatedRegion((ulong)i * 0x10_0000, 0x1000);
        }

        using GuestMemory memory = builder.Build();
        Assert.Equal(20, memory.RegionCount);
        for (int i = 0; i < 20; i++)
        {
            ulong gpa = (ulong)i * 0x10_0000;
            Assert.Equal(GuestMemoryError.None, memory.TryWrite(gpa + 0xFFF, [(byte)i]));
            Assert.Equal(GuestMemoryError.Unmapped, memory.TryGetSpan(gpa + 0x1000, 1, out _));
            Assert.Equal(GuestMemoryError.CrossesRegionEnd, memory.TryGetSpan(gpa + 0xFFF, 2, out _));
        }

        Assert.Equal(19UL * 0x10_0000, memory.Regions[19].GuestPhysicalAddress);
    }

    [Fact]
    public void Overlapping_regions_are_refused()
    {
        var builder = new GuestMemoryBuilder().AddAllocatedRegion(0x1000, 0x2000);
        Assert.Throws<ArgumentException>(() => builder.AddAllocatedRegion(0x2000, 0x1000));
        Assert.Throws<ArgumentException>(() => builder.AddAllocatedRegion(0, 0x2000));
        builder.AddAllocatedRegion(0x3000, 0x1000); // touching is fine
    }

    [Fact]
    public void Allocated_regions_must_be_page_granular_and_not_wrap()
    {
        var builder = new GuestMemoryBuilder();
        Assert.Throws<ArgumentException>(() => builder.AddAllocatedRegion(0x800, 0x1000));
        Assert.Throws<ArgumentException>(() => builder.AddAllocatedRegion(0, 0x1800));
        Assert.Throws<ArgumentException>(() => builder.AddAllocatedRegion(0, 0));
        Assert.Throws<ArgumentException>(() => builder.AddAllocatedRegion(0xFFFF_FFFF_FFFF_F000, 0x2000));
        Assert.Throws<InvalidOperationException>(() => builder.Build());
    }

    [Fact]
    public void A_multi_TiB_guest_costs_nothing_until_touched()
    {
        if (!OperatingSystem.IsLinux())
        {
            return; // RSS is read from /proc; the reservation itself is exercised on every OS by other tests
        }

        long before = ResidentBytes();
        using GuestMemory memory = GuestMemory.Allocate(4UL << 40); // 4 TiB
        long afterReserve = ResidentBytes();
        Assert.True(afterReserve - before < 64L << 20, $"reserving 4 TiB made {afterReserve - before} bytes resident");

        // Touch one byte in each of 64 places 64 GiB apart: a few hundred KiB at most become resident.
        for (ulong i = 0; i < 64; i++)
        {
            Assert.Equal(GuestMemoryError.None, memory.TryWrite(i << 36, [(byte)i]));
        }

        for (ulong i = 0; i < 64; i++)
        {
            byte[] one = new byte[1];
            Assert.Equal(GuestMemoryError.None, memory.TryRead(i << 36, one));
            Assert.Equal((byte)i, one[0]);
        }

        Assert.True(ResidentBytes() - before < 64L << 20);
    }

    [Fact]
    public unsafe void Attached_memory_is_used_in_place_and_its_owner_disposed_last()
    {
        var owner = new NativeOwner(0x3000);
        using (GuestMemory memory = new GuestMemoryBuilder().AttachRegion(0x10_0000, (nint)owner.Pointer, 0x3000, owner).Build())
        {
            Assert.Equal(GuestMemoryError.None, memory.TryWrite(0x10_0010, [0x5A]));
            Assert.Equal(0x5A, owner.Pointer[0x10]);
            Assert.False(memory.Regions[0].IsAllocatedByLibrary);
        }

        Assert.True(owner.Disposed);
    }

    [Fact]
    public void Attached_memory_can_be_a_mapped_file()
    {
        string path = Path.Combine(Path.GetTempPath(), $"virtio-guest-{Guid.NewGuid():N}.bin");
        try
        {
            using (var file = System.IO.MemoryMappedFiles.MemoryMappedFile.CreateFromFile(path, FileMode.CreateNew, null, 1 << 16))
            {
                var view = file.CreateViewAccessor();
                unsafe
                {
                    byte* p = null;
                    view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
                    var release = new Releaser(() =>
                    {
                        view.SafeMemoryMappedViewHandle.ReleasePointer();
                        view.Dispose();
                    });
                    using GuestMemory memory = new GuestMemoryBuilder().AttachRegion(0, (nint)(p + view.PointerOffset), 1 << 16, release).Build();
                    SplitQueueLayout layout = SplitQueueLayout.Compact(0, 16);
                    using var driver = new SplitDriverVirtqueue<int>(memory, layout, VirtqueueFeatures.None);
                    Assert.True(driver.TryAdd([new GuestRange(0x8000, 16)], [], 1));
                    driver.PublishAvailable();
                }
            }

            // The ring went to the file: avail idx is 1 at its offset.
            byte[] bytes = File.ReadAllBytes(path);
            Assert.Equal(1, bytes[(int)SplitQueueLayout.Compact(0, 16).DriverAreaAddress + 2]);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void After_dispose_no_span_is_handed_out()
    {
        GuestMemory memory = GuestMemory.Allocate(0x1000);
        memory.Dispose();
        Assert.True(memory.IsDisposed);
        Assert.Throws<ObjectDisposedException>(() => memory.TryGetSpan(0, 1, out _));
        Assert.Throws<ObjectDisposedException>(() => memory.AcquireLease());
        memory.Dispose(); // idempotent
    }

    [Fact]
    public unsafe void A_queue_keeps_guest_memory_mapped_until_it_is_disposed()
    {
        var owner = new NativeOwner(0x10000);
        GuestMemory memory = new GuestMemoryBuilder().AttachRegion(0, (nint)owner.Pointer, 0x10000, owner).Build();
        SplitQueueLayout layout = SplitQueueLayout.Compact(0, 8);
        var driver = new SplitDriverVirtqueue<int>(memory, layout, VirtqueueFeatures.None);
        Assert.True(SplitDeviceVirtqueue.TryAttach(memory, layout, VirtqueueFeatures.None, out SplitDeviceVirtqueue? device, out _));

        memory.Dispose(); // the VMM tears down memory first
        Assert.False(owner.Disposed);
        Assert.True(driver.TryAdd([new GuestRange(0x8000, 8)], [], 1));
        driver.PublishAvailable();
        Assert.True(device.TryPop(out _)); // still mapped: no use after free
        driver.Dispose();
        Assert.False(owner.Disposed);
        device.Dispose();
        Assert.True(owner.Disposed); // the last reference released it
    }

    [Fact]
    public unsafe void A_lease_keeps_memory_mapped()
    {
        var owner = new NativeOwner(0x1000);
        GuestMemory memory = new GuestMemoryBuilder().AttachRegion(0, (nint)owner.Pointer, 0x1000, owner).Build();
        GuestMemoryLease lease = memory.AcquireLease();
        Assert.Equal(GuestMemoryError.None, memory.TryGetSpan(0, 16, out Span<byte> span));
        memory.Dispose();
        span[0] = 1; // still mapped
        Assert.False(owner.Disposed);
        lease.Dispose();
        Assert.True(owner.Disposed);
        lease.Dispose(); // idempotent
    }

    private static long ResidentBytes()
    {
        foreach (string line in File.ReadAllLines("/proc/self/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), System.Globalization.CultureInfo.InvariantCulture) * 1024;
            }
        }

        return 0;
    }

    private sealed unsafe class NativeOwner : IDisposable
    {
        public NativeOwner(int bytes) => Pointer = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 4096);

        public byte* Pointer { get; }

        public bool Disposed { get; private set; }

        public void Dispose()
        {
            Assert.False(Disposed, "owners are disposed once");
            Disposed = true;
            NativeMemory.AlignedFree(Pointer);
        }
    }

    private sealed class Releaser(Action release) : IDisposable
    {
        public void Dispose() => release();
    }
}

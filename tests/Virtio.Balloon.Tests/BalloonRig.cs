using System;
using Virtio.Balloon.Backends;
using Virtio.Balloon.Device;
using Virtio.Balloon.Driver;
using Virtio.Balloon.GuestAllocator;
using Virtio.Balloon.Hints;
using Virtio.Ring;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;

namespace Virtio.Balloon.Tests;

/// <summary>
/// A simulated guest with a balloon: guest RAM, the guest's buddy allocator over all of it, our balloon device
/// behind virtio-mmio (interrupt line wired to the driver), an in-memory back end, and our balloon driver.
/// </summary>
internal sealed class BalloonRig : IDisposable
{
    public BalloonRig(
        VirtqueueFormat format = VirtqueueFormat.Split,
        ulong offered = BalloonFeatureBits.All,
        ulong wanted = BalloonFeatureBits.All,
        ulong guestBytes = 64UL << 20,
        QueueThreading threading = QueueThreading.Inline,
        ulong hostPageSize = 4096,
        BalloonQueueNumbering numbering = BalloonQueueNumbering.Linux,
        uint poison = 0,
        int maxPfns = 1024,
        TimeSpan? timeout = null,
        FreePageHintProtocol hintProtocol = FreePageHintProtocol.Standard,
        int hintOrder = 10,
        int hintArrayBytes = 4 << 20,
        int hintArrays = 2,
        int queueSize = 128,
        IFreePageHintSink? hintSink = null)
    {
        Memory = GuestMemory.Allocate(guestBytes);
        Allocator = new BuddyAllocator(0, guestBytes / 4096);
        Backend = new InMemoryBalloonBackend(guestBytes / 4096, hostPageSize);
        Device = new BalloonDevice(Memory, Backend, new BalloonDeviceOptions
        {
            OfferedFeatures = offered,
            Numbering = numbering,
            MaxPfnsPerRequest = maxPfns,
            HintProtocol = hintProtocol,
            FreePageHintSink = hintSink,
            Device = new VirtioDeviceOptions { Threading = threading },
        });
        Driver = null!;
        Transport = new VirtioMmioTransport(Device, new InterruptLine(() => Driver?.OnInterrupt()));
        Driver = new BalloonDriver(Transport, Memory, Allocator, new BalloonDriverOptions
        {
            WantedFeatures = wanted,
            RingFormat = format,
            Numbering = numbering,
            PoisonValue = poison,
            Timeout = timeout ?? TimeSpan.FromSeconds(10),
            HintProtocol = hintProtocol,
            HintOrder = hintOrder,
            HintArrayBytes = hintArrayBytes,
            HintArrayCount = hintArrays,
            QueueSize = queueSize,
        });
    }

    public GuestMemory Memory { get; }

    public BuddyAllocator Allocator { get; }

    public InMemoryBalloonBackend Backend { get; }

    public BalloonDevice Device { get; }

    public VirtioMmioTransport Transport { get; }

    public BalloonDriver Driver { get; }

    /// <summary>The host sets a target; the guest reacts as its interrupt handler would.</summary>
    public long SetTarget(uint pages)
    {
        Device.SetTargetPages(pages);
        return Driver.Poll();
    }

    /// <summary>Every page is accounted for: allocator books balance, the balloon matches the back end's view.</summary>
    public void CheckAccounting()
    {
        Allocator.CheckInvariants();
        Assert.Equal(Driver.BalloonPages, Backend.InflatedPages);
        Assert.Equal((long)Allocator.TotalPages, Allocator.FreePages + Allocator.AllocatedPages + Allocator.IsolatedPages);
    }

    public void Dispose()
    {
        Driver.Dispose();
        Device.Dispose();
        Allocator.Dispose();
        Memory.Dispose();
    }
}

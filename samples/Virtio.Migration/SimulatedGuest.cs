using System;
using System.Threading;
using System.Threading.Tasks;
using Virtio.Balloon;
using Virtio.Balloon.Backends;
using Virtio.Balloon.Device;
using Virtio.Balloon.Driver;
using Virtio.Balloon.GuestAllocator;
using Virtio.Balloon.Migration;
using Virtio.Ring;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;

namespace Virtio.Migration;

/// <summary>
/// The source guest: guest RAM, the guest's page allocator with seeded fragmentation, our balloon device behind
/// virtio-mmio (served on its own VMM thread), our balloon driver on a guest thread, and a workload thread that
/// keeps allocating, writing and freeing pages. Every guest write is followed by a mark in the
/// <see cref="DirtyLog"/>, as KVM's dirty logging would record it; the driver's own writes (hint arrays,
/// commands) are logged through its write observer.
/// </summary>
public sealed class SimulatedGuest : IDisposable
{
    private readonly MigrationOptions _options;
    private readonly PauseGate _workloadGate = new();
    private readonly PauseGate _balloonGate = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _balloonThread;
    private readonly Workload? _workload;
    private bool _started;

    /// <summary>Builds the guest (RAM filled with seeded contents, free pages included: a long-running guest's free memory is not zero).</summary>
    public SimulatedGuest(MigrationOptions options)
    {
        _options = options;
        ulong pages = options.GuestPages;
        Memory = GuestMemory.Allocate(options.GuestBytes);
        FillInitialContents(); // first: the driver's rings and buffers are set up over it
        Allocator = new BuddyAllocator(0, pages);
        DirtyLog = new DirtyLog(0, pages);
        Device = new BalloonDevice(Memory, new InMemoryBalloonBackend(pages), new BalloonDeviceOptions
        {
            OfferedFeatures = (1UL << BalloonFeatureBits.FreePageHint) | (1UL << BalloonFeatureBits.DeflateOnOom),
            HintProtocol = options.Protocol,
            MaxQueueSize = options.QueueSize,
            Device = new VirtioDeviceOptions { Threading = options.DeviceThreading, Name = "virtio-balloon" },
        });
        Transport = new VirtioMmioTransport(Device, new InterruptLine(() => Driver?.OnInterrupt()));
        Driver = new BalloonDriver(Transport, Memory, Allocator, new BalloonDriverOptions
        {
            WantedFeatures = BalloonFeatureBits.All,
            RingFormat = options.Ring,
            QueueSize = options.QueueSize,
            HintProtocol = options.Protocol,
            HintOrder = options.HintOrder,
            GuestWriteObserver = (gpa, length) => DirtyLog.MarkBytes(gpa, length),
        });
        if (!Driver.Initialize())
        {
            throw new InvalidOperationException("The balloon driver could not initialise the device.");
        }

        AllocatedAtStart = Allocator.Fragment(options.AllocatedFraction, options.Fragmentation, options.Seed, chunkOrder: 0);
        _balloonThread = new Thread(BalloonLoop) { IsBackground = true, Name = "guest balloon worker" };
        if (options.WorkloadPagesPerSecond > 0)
        {
            _workload = new Workload(this, options, _workloadGate, _stop.Token);
        }
    }

    /// <summary>Guest RAM.</summary>
    public GuestMemory Memory { get; }

    /// <summary>The guest's page allocator.</summary>
    public BuddyAllocator Allocator { get; }

    /// <summary>The dirty log every guest write marks.</summary>
    public DirtyLog DirtyLog { get; }

    /// <summary>The balloon device (host side).</summary>
    public BalloonDevice Device { get; }

    /// <summary>The virtio-mmio transport.</summary>
    public VirtioMmioTransport Transport { get; }

    /// <summary>The balloon driver (guest side).</summary>
    public BalloonDriver Driver { get; }

    /// <summary>Pages the seeded fragmentation allocated.</summary>
    public long AllocatedAtStart { get; }

    /// <summary>Pages the workload wrote so far.</summary>
    public long WorkloadPagesWritten => _workload?.PagesWritten ?? 0;

    /// <summary>Starts the guest's threads (the balloon worker, the workload).</summary>
    public void Start()
    {
        _started = true;
        _balloonThread.Start();
        _workload?.Start();
    }

    /// <summary>Stops the guest as a VMM stops its vCPUs (workload and balloon threads parked), then the device.</summary>
    public void Pause()
    {
        TimeSpan timeout = TimeSpan.FromSeconds(30);
        if (_workload is not null)
        {
            _workloadGate.Pause(timeout);
        }

        _balloonGate.Pause(timeout);
        Device.Pause();
    }

    /// <summary>Lets the balloon driver and device run again (not the workload): the source handling DONE after the stop-and-copy.</summary>
    public void ResumeBalloonOnly()
    {
        Device.Resume();
        _balloonGate.Resume();
    }

    /// <summary>Parks the balloon thread and the device again.</summary>
    public void PauseBalloonOnly()
    {
        _balloonGate.Pause(TimeSpan.FromSeconds(30));
        Device.Pause();
    }

    /// <summary>Writes a page as the guest does: contents first, then the dirty mark.</summary>
    public void WritePage(ulong pfn, ulong version)
    {
        Memory.TryGetSpan(pfn * PageContents.PageSize, PageContents.PageSize, out Span<byte> page);
        PageContents.Write(page, _options.Seed, pfn, version);
        DirtyLog.Mark(pfn);
    }

    /// <summary>Stops the threads and frees everything.</summary>
    public void Dispose()
    {
        _stop.Cancel();
        _workloadGate.Resume();
        _balloonGate.Resume();
        if (_started)
        {
            _workload?.Join();
            _balloonThread.Join(TimeSpan.FromSeconds(30));
        }

        Device.Resume();
        Driver.Dispose();
        Device.Dispose();
        DirtyLog.Dispose();
        Allocator.Dispose();
        Memory.Dispose();
        _stop.Dispose();
        _workloadGate.Dispose();
        _balloonGate.Dispose();
    }

    private void BalloonLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            _balloonGate.Checkpoint();
            Driver.WaitForInterrupt(TimeSpan.FromMilliseconds(10));
            if (!_stop.IsCancellationRequested)
            {
                Driver.Poll();
            }
        }
    }

    /// <summary>Every page gets version 0 of its seeded contents (in parallel: this is setup, not the migration).</summary>
    private void FillInitialContents()
    {
        ulong pages = _options.GuestPages;
        const ulong Chunk = 1 << 14;
        Parallel.For(0, (long)((pages + Chunk - 1) / Chunk), c =>
        {
            ulong end = Math.Min(pages, ((ulong)c + 1) * Chunk);
            for (ulong pfn = (ulong)c * Chunk; pfn < end; pfn++)
            {
                Memory.TryGetSpan(pfn * PageContents.PageSize, PageContents.PageSize, out Span<byte> page);
                PageContents.Write(page, _options.Seed, pfn, 0);
            }
        });
    }
}

using System;
using System.Buffers.Binary;
using Virtio.Balloon.Backends;
using Virtio.Balloon.Device;
using Virtio.Balloon.Hints;
using Virtio.Ring;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;

namespace Virtio.Balloon.Tests.Device;

/// <summary>
/// A hand-driven guest for device tests: negotiates through the registers, sets up every queue of the layout at
/// fixed addresses, and sends whatever buffers a test writes, well-formed or not.
/// </summary>
internal sealed class RawBalloonGuest : IDisposable
{
    public const ulong RingArea = 0x10_0000;   // 1 MiB: rings, 64 KiB apiece
    public const ulong DataArea = 0x20_0000;   // 2 MiB: buffers
    private readonly DriverVirtqueue<int>?[] _queues = new DriverVirtqueue<int>?[5];
    private int _statsBuffers;

    public RawBalloonGuest(
        ulong offered = BalloonFeatureBits.All,
        ulong wanted = BalloonFeatureBits.All,
        VirtqueueFormat format = VirtqueueFormat.Split,
        BalloonQueueNumbering numbering = BalloonQueueNumbering.Linux,
        int maxPfns = 1024,
        ulong hostPageSize = 4096,
        ulong guestBytes = 64UL << 20,
        GuestMemory? memory = null,
        Func<GuestMemory, IBalloonBackend>? backend = null,
        FreePageHintProtocol hintProtocol = FreePageHintProtocol.Standard,
        IFreePageHintSink? hintSink = null,
        bool bigEndianHints = false)
    {
        Memory = memory ?? GuestMemory.Allocate(guestBytes);
        Backend = new InMemoryBalloonBackend(guestBytes / 4096, hostPageSize);
        Device = new BalloonDevice(Memory, backend?.Invoke(Memory) ?? Backend, new BalloonDeviceOptions
        {
            OfferedFeatures = offered,
            Numbering = numbering,
            MaxPfnsPerRequest = maxPfns,
            HintProtocol = hintProtocol,
            FreePageHintSink = hintSink,
            LegacyBigEndianHints = bigEndianHints,
        });
        Transport = new VirtioMmioTransport(Device);
        Driver = new VirtioMmioDriver(Transport);
        ulong transport = (1UL << VirtioFeatureBits.Version1) | (format == VirtqueueFormat.Packed ? 1UL << VirtioFeatureBits.RingPacked : 0);
        Assert.True(Driver.Initialize(transport | wanted));
        Layout = BalloonQueueLayout.For(Driver.NegotiatedFeatures, numbering);
        foreach (int index in new[] { Layout.Inflate, Layout.Deflate, Layout.Stats, Layout.FreePageHint, Layout.Reporting })
        {
            if (index >= 0)
            {
                var addresses = VirtqueueAddresses.Compact(format, RingArea + ((ulong)index * 0x1_0000), 64);
                _queues[index] = new DriverVirtqueue<int>(Memory, addresses, Driver.NegotiatedFeatures);
                Assert.True(Driver.SetupQueue(index, addresses));
            }
        }

        Driver.SetDriverOk();
    }

    public GuestMemory Memory { get; }

    public InMemoryBalloonBackend Backend { get; }

    public BalloonDevice Device { get; }

    public VirtioMmioTransport Transport { get; }

    public VirtioMmioDriver Driver { get; }

    public BalloonQueueLayout Layout { get; }

    public DriverVirtqueue<int> Queue(int index) => _queues[index]!;

    /// <summary>Sends le32 PFNs as one device-readable buffer on <paramref name="queue"/> and returns when it is used.</summary>
    public void SendPfns(int queue, params uint[] pfns)
    {
        byte[] bytes = new byte[pfns.Length * 4];
        for (int i = 0; i < pfns.Length; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(4 * i), pfns[i]);
        }

        SendReadable(queue, bytes);
    }

    /// <summary>Sends raw bytes as one device-readable buffer and checks it came back used.</summary>
    public void SendReadable(int queue, ReadOnlySpan<byte> bytes)
    {
        Assert.Equal(GuestMemoryError.None, Memory.TryWrite(DataArea, bytes));
        Assert.True(Queue(queue).TryAdd([new GuestRange(DataArea, (uint)bytes.Length)], [], 1));
        KickAndTakeUsed(queue);
    }

    /// <summary>Sends device-writable ranges as one buffer and checks it came back used.</summary>
    public void SendWritable(int queue, params GuestRange[] ranges)
    {
        Assert.True(Queue(queue).TryAdd([], ranges, 1));
        KickAndTakeUsed(queue);
    }

    /// <summary>Sends a stats buffer, which the device keeps (nothing comes back unless it returns an older one).</summary>
    public void SendStats(int queue, ReadOnlySpan<byte> entries, bool expectFirstBack = false)
    {
        ulong at = DataArea + 0x1000 + (ulong)(_statsBuffers++ % 8 * 0x400);
        Assert.Equal(GuestMemoryError.None, Memory.TryWrite(at, entries));
        Assert.True(Queue(queue).TryAdd([new GuestRange(at, (uint)entries.Length)], [], 2));
        if (Queue(queue).PublishAvailable())
        {
            Driver.Notify(queue);
        }

        Assert.Equal(expectFirstBack, Queue(queue).TryGetUsed(out int _, out uint _));
    }

    public void KickAndTakeUsed(int queue)
    {
        if (Queue(queue).PublishAvailable())
        {
            Driver.Notify(queue);
        }

        Assert.True(Queue(queue).TryGetUsed(out int _, out uint _), "the device returns every buffer, refused or not");
        Assert.Equal((DeviceStatus)0, Driver.Status & DeviceStatus.DeviceNeedsReset);
    }

    public void Dispose()
    {
        Device.Dispose();
        Memory.Dispose();
    }
}

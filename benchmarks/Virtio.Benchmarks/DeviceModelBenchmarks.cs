using System;
using BenchmarkDotNet.Attributes;
using Virtio.Ring;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;

namespace Virtio.Benchmarks;

/// <summary>
/// The device model's own cost per request, one thread, inline: a batch of 32 one-descriptor requests is added,
/// kicked through the virtio-mmio QueueNotify register, served by a <see cref="VirtioDevice"/> subclass and taken
/// back. <see cref="PushInline"/> (the baseline) pushes each chain from <c>OnQueueNotify</c>;
/// <see cref="DeferThenComplete"/> hands each chain's <see cref="CompletionTicket"/> out and completes it
/// afterwards through <see cref="VirtioDevice.Complete"/> (the lock-free hand-off ring, then one drain, publish and
/// interrupt decision per batch). The ratio column is the asynchronous completion's overhead. Operations are
/// requests.
/// </summary>
[MemoryDiagnoser]
public class DeviceModelBenchmarks
{
    private const int Batch = 32;
    private const ulong DataBase = 0x20_0000;

    private GuestMemory _memory = null!;
    private BenchDevice _device = null!;
    private VirtioMmioDriver _guest = null!;
    private DriverVirtqueue<int> _queue = null!;
    private GuestRange[] _writable = null!;

    [Params(VirtqueueFormat.Split, VirtqueueFormat.Packed)]
    public VirtqueueFormat Format { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Allocate(16UL << 20);
        _device = new BenchDevice(_memory);
        var transport = new VirtioMmioTransport(_device, new InterruptLine(static () => { }));
        _guest = new VirtioMmioDriver(transport);
        ulong wanted = (1UL << VirtioFeatureBits.Version1) | (1UL << VirtioFeatureBits.EventIdx)
            | (Format == VirtqueueFormat.Packed ? 1UL << VirtioFeatureBits.RingPacked : 0);
        if (!_guest.Initialize(wanted))
        {
            throw new InvalidOperationException("features refused");
        }

        VirtqueueAddresses addresses = VirtqueueAddresses.Compact(Format, 0x1000, 256);
        _queue = new DriverVirtqueue<int>(_memory, addresses, _guest.NegotiatedFeatures);
        if (!_guest.SetupQueue(0, addresses))
        {
            throw new InvalidOperationException("queue refused");
        }

        _guest.SetDriverOk();
        _writable = [new GuestRange(DataBase, 64)];
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _queue.Dispose();
        _device.Dispose();
        _memory.Dispose();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Batch)]
    public int PushInline()
    {
        _device.Defer = false;
        return RoundTrip();
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public int DeferThenComplete()
    {
        _device.Defer = true;
        return RoundTrip();
    }

    private int RoundTrip()
    {
        for (int i = 0; i < Batch; i++)
        {
            _queue.TryAdd([], _writable, i);
        }

        if (_queue.PublishAvailable())
        {
            _guest.Notify(0);
        }

        _device.CompleteDeferred();
        int sum = 0;
        while (_queue.TryGetUsed(out int token, out uint length))
        {
            sum += token + (int)length;
        }

        if (sum == 0)
        {
            throw new InvalidOperationException("nothing came back");
        }

        return sum;
    }

    /// <summary>Writes one byte into each request and pushes it at once, or defers it.</summary>
    private sealed class BenchDevice(GuestMemory memory) : VirtioDevice(99, 0, 1, 256, 0)
    {
        private readonly CompletionTicket[] _deferred = new CompletionTicket[256];
        private int _count;

        public bool Defer { get; set; }

        protected override GuestMemory Memory => memory;

        public void CompleteDeferred()
        {
            for (int i = 0; i < _count; i++)
            {
                Complete(_deferred[i], 1);
            }

            _count = 0;
        }

        protected override void OnQueueNotify(int index, DeviceVirtqueue queue, uint notificationData)
        {
            do
            {
                queue.DisableAvailableNotifications();
                while (queue.TryPop(out DescriptorChain chain))
                {
                    chain.CopyToWritable([1]);
                    if (Defer)
                    {
                        _deferred[_count++] = DeferCompletion(index, chain.Id);
                    }
                    else
                    {
                        queue.PushUsed(chain.Id, 1);
                    }
                }

                if (queue.PublishUsed())
                {
                    SignalUsedBuffers(index);
                }
            }
            while (queue.EnableAvailableNotifications() == NotificationRecheck.BuffersPending);
        }
    }
}

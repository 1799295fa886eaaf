// Virtio.RngDevice: a complete small device as a VMM embeds it. A virtio-rng device model (RngDevice.cs) sits
// behind the virtio-mmio transport and is served on its own worker thread; a guest driver in the same process
// drives it through the MMIO registers only (VirtioMmioDriver), exactly as a guest kernel would, and draws
// entropy from it. Half-way through, the VMM live-updates the device: it saves it, disposes it, builds a new
// one and restores the state into it, while the guest carries on. The README's embedding snippets are the
// regions marked <vmm>, <guest> and <live-update> here and <device> in RngDevice.cs; a test checks that they
// match, so they cannot rot.
//
//   dotnet run -c Release --project samples/Virtio.RngDevice -- [--requests N] [--packed] [--inline]
using System;
using System.CommandLine;
using System.Diagnostics;
using System.Threading;
using Virtio.Ring;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;
using Virtio.RngDevice;

var requestsOption = new Option<int>("--requests") { Description = "Entropy requests the guest makes.", DefaultValueFactory = _ => 100_000 };
var packedOption = new Option<bool>("--packed") { Description = "Negotiate the packed ring instead of the split ring." };
var inlineOption = new Option<bool>("--inline") { Description = "Serve the queue on the notifying thread instead of a worker." };
var root = new RootCommand("A virtio-rng device behind virtio-mmio, served on a worker thread, driven by an in-process guest.")
{
    requestsOption,
    packedOption,
    inlineOption,
};
root.SetAction(parse => Run(parse.GetValue(requestsOption), parse.GetValue(packedOption), parse.GetValue(inlineOption)));
return root.Parse(args).Invoke();

static int Run(int requests, bool packed, bool inline)
{
    // <vmm>
    // Guest RAM (or attach memory the VMM mmapped: new GuestMemoryBuilder().AttachRegion(...).Build()).
    using GuestMemory memory = GuestMemory.Allocate(64UL << 20);

    // The device model, served on its own worker thread; resets park the worker, never kill it.
    var options = new VirtioDeviceOptions
    {
        Threading = inline ? QueueThreading.Inline : QueueThreading.WorkerPerDevice,
        Name = "virtio-rng",
    };
    var device = new RngDevice(memory, options);
    device.Faulted += (_, fault) => Console.Error.WriteLine($"virtio-rng needs reset: {fault}"); // contained

    // The transport. The line goes to the interrupt controller (new EventFdInterruptLine(irqfd) for a KVM
    // irqfd); with KVM, register device.KickEventFd(0) as the queue's ioeventfd and guest kicks reach the
    // worker without an exit. The VMM's MMIO exit handler calls transport.Read / transport.Write.
    using var irq = new SemaphoreSlim(0);
    var line = new InterruptLine(raise: () => irq.Release(), lower: () => { /* deassert a level-triggered pin */ });
    var transport = new VirtioMmioTransport(device, line);
    var exits = new MmioExitHandler(transport);
    // </vmm>

    // <guest>
    // The guest's side, through the registers only: 3.1.1's initialisation, one queue, DRIVER_OK.
    var guest = new VirtioMmioDriver(exits);
    ulong wanted = (1UL << VirtioFeatureBits.Version1) | (1UL << VirtioFeatureBits.EventIdx)
        | (packed ? 1UL << VirtioFeatureBits.RingPacked : 0);
    if (!guest.Initialize(wanted))
    {
        return Fail("the device refused the features");
    }

    var addresses = VirtqueueAddresses.Compact(packed ? VirtqueueFormat.Packed : VirtqueueFormat.Split, 0x1000, 256);
    using var requestq = new DriverVirtqueue<int>(memory, addresses, guest.NegotiatedFeatures);
    if (!guest.SetupQueue(0, addresses))
    {
        return Fail("queue 0 was not accepted");
    }

    guest.SetDriverOk();
    // </guest>

    // Draw entropy: up to 64 requests of 64 bytes in flight, each checked (length, and not all zero).
    const ulong Buffers = 0x10_0000;
    var stopwatch = Stopwatch.StartNew();
    int sent = 0;
    int received = 0;
    int inFlight = 0;
    long zeroBuffers = 0;
    Span<GuestRange> writable = stackalloc GuestRange[1];
    bool updated = false;
    while (received < requests)
    {
        if (!updated && received >= requests / 2)
        {
            // <live-update>
            // Live update: pause the device (as the VMM pauses its vCPUs), save all of it (rings with buffers
            // in flight, features, configuration, the model's own state), replace it, restore.
            device.Pause();
            byte[] snapshot = transport.SaveState();
            device.Dispose();
            device = new RngDevice(memory, options);
            transport = new VirtioMmioTransport(device, line);
            if (!transport.TryRestoreState(snapshot, out DeviceStateError error))
            {
                return Fail($"restore refused: {error}");
            }

            exits.Transport = transport;
            // </live-update>
            updated = true;
        }

        while (sent < requests && inFlight < 64)
        {
            int slot = sent % 64;
            writable[0] = new GuestRange(Buffers + ((ulong)slot * 64), 64);
            memory.TryGetSpan(writable[0].Address, 64, out Span<byte> buffer);
            buffer.Clear();
            if (!requestq.TryAdd([], writable, slot))
            {
                break;
            }

            sent++;
            inFlight++;
        }

        if (requestq.PublishAvailable())
        {
            guest.Notify(0);
        }

        bool progress = false;
        while (requestq.TryGetUsed(out int slot, out uint length))
        {
            if (length != 64)
            {
                return Fail($"request {received}: {length} bytes instead of 64");
            }

            memory.TryGetSpan(Buffers + ((ulong)slot * 64), 64, out Span<byte> bytes);
            zeroBuffers += bytes.IndexOfAnyExcept((byte)0) < 0 ? 1 : 0;
            received++;
            inFlight--;
            progress = true;
        }

        if (!progress && requestq.EnableUsedNotifications() == NotificationRecheck.NothingPending)
        {
            if (!irq.Wait(TimeSpan.FromSeconds(10)))
            {
                return Fail($"no interrupt after {received} of {requests} requests; device status {device.Status}");
            }

            guest.TakeInterrupts();
        }
    }

    stopwatch.Stop();
    guest.Reset(); // the guest resets the device: the worker parks, the queue is torn down, no exception
    device.Dispose();
    Console.WriteLine($"virtio-rng over a {(packed ? "packed" : "split")} ring, {(inline ? "inline" : "on a worker thread")}, "
        + $"live-updated half-way: {requests} requests of 64 bytes in {stopwatch.Elapsed.TotalMilliseconds:F0} ms "
        + $"({stopwatch.Elapsed.TotalNanoseconds / requests:F0} ns each), all-zero buffers: {zeroBuffers}");
    return zeroBuffers == 0 ? 0 : Fail("a buffer came back unfilled");
}

static int Fail(string message)
{
    Console.Error.WriteLine($"FAILED: {message}");
    return 1;
}

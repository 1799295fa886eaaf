// Virtio.PingPong: a two-thread ping-pong over our real queues, with the options and the per-buffer work of
// Linux's tools/virtio/ringtest, so the two can be compared run against run (benchmarks/ringtest-compare.sh).
//
// The guest thread plays ringtest's run_guest (driver side: add one empty device-writable buffer, publish it,
// optionally kick, take used buffers back); the host thread plays run_host (device side: pop with full validation,
// push used, publish, optionally call). --sleep uses eventfds for kicks and calls exactly like ringtest; without it
// both threads poll. Prints the wall time of the exchange and ns per buffer.
//
//   dotnet run -c Release --project benchmarks/Virtio.PingPong -- [--ring split|packed] [--ring-size 256]
//       [--run-cycles 10000000] [--batch 1] [--outstanding N] [--sleep] [--host-affinity H] [--guest-affinity G]
using System;
using System.Diagnostics;
using System.Globalization;
using System.Threading;
using Virtio.PingPong;
using Virtio.Ring;
using Virtio.Ring.Packed;
using Virtio.Ring.Split;

string ring = "split";
int ringSize = 256;
int runCycles = 10_000_000;
int batch = 1;
int maxOutstanding = int.MaxValue;
bool sleep = false;
int hostCpu = -1;
int guestCpu = -1;
for (int i = 0; i < args.Length; i++)
{
    string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
    int NextInt() => int.Parse(Next(), CultureInfo.InvariantCulture);
    switch (args[i])
    {
        case "--ring": ring = Next(); break;
        case "--ring-size": ringSize = NextInt(); break;
        case "--run-cycles": runCycles = NextInt(); break;
        case "--batch": batch = NextInt(); break;
        case "--outstanding": maxOutstanding = NextInt(); break;
        case "--sleep": sleep = true; break;
        case "--host-affinity": hostCpu = NextInt(); break;
        case "--guest-affinity": guestCpu = NextInt(); break;
        case "--help":
            Console.WriteLine("options: --ring split|packed --ring-size R --run-cycles C --batch B --outstanding O --sleep --host-affinity H --guest-affinity G");
            return 0;
        default:
            Console.Error.WriteLine($"unknown option {args[i]} (try --help)");
            return 2;
    }
}

bool packed = ring == "packed";
if (!packed && ring != "split")
{
    Console.Error.WriteLine("--ring is split or packed");
    return 2;
}

// EVENT_IDX, as ringtest's virtio_ring_0_9 and ring use their event indices for kick and call decisions.
ulong features = (1UL << VirtioFeatureBits.Version1) | (1UL << VirtioFeatureBits.EventIdx) | (packed ? 1UL << VirtioFeatureBits.RingPacked : 0);
using GuestMemory memory = GuestMemory.Allocate(16UL << 20);
VirtqueueAddresses addresses = packed
    ? FromPacked(PackedQueueLayout.Compact(0x1000, ringSize))
    : FromSplit(SplitQueueLayout.Compact(0x1000, ringSize));
using var driver = new VirtqueueDriver<int>(memory, addresses, features);
if (!VirtqueueDevice.TryAttach(memory, addresses, features, out VirtqueueDevice? device, out QueueError error))
{
    Console.Error.WriteLine($"attach failed: {error}");
    return 1;
}

int kickFd = sleep ? LinuxThreads.CreateEventFd() : -1;
int callFd = sleep ? LinuxThreads.CreateEventFd() : -1;
GuestRange[] buffer = [new GuestRange(0x80_0000, 0)]; // ringtest's add_inbuf(0, ...): an empty device-writable buffer
using var start = new Barrier(3);
string? failure = null;

var guest = new Thread(() =>
{
    if (guestCpu >= 0)
    {
        LinuxThreads.PinCurrentThread(guestCpu);
    }

    if (!sleep)
    {
        driver.DisableUsedNotifications(); // polling: leave the device's view of our events alone
    }

    start.SignalAndWait();
    int started = 0;
    int completed = 0;
    int toKick = batch;
    while (true)
    {
        if (sleep)
        {
            driver.DisableUsedNotifications();
        }

        bool progress;
        do
        {
            progress = false;
            if (started < runCycles && started - completed < maxOutstanding && driver.TryAdd([], buffer, started))
            {
                driver.PublishAvailable();
                started++;
                progress = true;
                if (--toKick == 0)
                {
                    toKick = batch;
                    if (sleep && driver.Publish())
                    {
                        LinuxThreads.Signal(kickFd);
                    }
                }
            }

            if (driver.TryGetUsed(out _, out _))
            {
                if (++completed == runCycles)
                {
                    return;
                }

                progress = true;
            }
        }
        while (progress);

        if (driver.Error != QueueError.None)
        {
            failure = $"driver: {driver.Error}";
            return;
        }

        if (sleep)
        {
            if (sleep && driver.Publish())
            {
                LinuxThreads.Signal(kickFd); // a partial batch must not wait forever
            }

            if (!driver.EnableUsedNotifications())
            {
                LinuxThreads.Wait(callFd);
            }
        }
    }
}) { Name = "guest" };

var host = new Thread(() =>
{
    if (hostCpu >= 0)
    {
        LinuxThreads.PinCurrentThread(hostCpu);
    }

    if (!sleep)
    {
        device.DisableNotifications();
    }

    start.SignalAndWait();
    int completed = 0;
    while (true)
    {
        if (sleep)
        {
            if (!device.EnableNotifications())
            {
                LinuxThreads.Wait(kickFd);
            }

            device.DisableNotifications();
        }

        while (device.TryPop(out DescriptorChain chain))
        {
            device.PushUsed(chain.Id, 0);
            device.FlushUsed();
            if (sleep && device.PublishUsed())
            {
                LinuxThreads.Signal(callFd);
            }

            if (++completed == runCycles)
            {
                return;
            }
        }

        if (device.IsBroken)
        {
            failure = $"device: {device.Error}";
            return;
        }
    }
}) { Name = "host" };

guest.Start();
host.Start();
start.SignalAndWait();
var clock = Stopwatch.StartNew();
guest.Join();
host.Join();
clock.Stop();
device.Dispose();

double ns = clock.Elapsed.TotalNanoseconds / runCycles;
Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
    $"ring={ring} ring-size={ringSize} run-cycles={runCycles} batch={batch} sleep={sleep} elapsed_ms={clock.Elapsed.TotalMilliseconds:F1} ns_per_buffer={ns:F2}{(failure is null ? "" : " error=" + failure)}"));
return failure is null ? 0 : 1;

static VirtqueueAddresses FromSplit(SplitQueueLayout l) => new(l.QueueSize, l.DescriptorTableAddress, l.DriverAreaAddress, l.DeviceAreaAddress);

static VirtqueueAddresses FromPacked(PackedQueueLayout l) => new(l.QueueSize, l.DescriptorRingAddress, l.DriverAreaAddress, l.DeviceAreaAddress);

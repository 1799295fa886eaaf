// Virtio.PingPong: a two-thread ping-pong over our real queues, with the options and the per-buffer work of
// Linux's tools/virtio/ringtest, so the two can be compared run against run (benchmarks/ringtest-compare.sh).
//
// The guest thread plays ringtest's run_guest (driver side: add one empty device-writable buffer, publish it,
// optionally kick, take used buffers back); the host thread plays run_host (device side: pop with full validation,
// push used, publish, optionally call). --sleep uses eventfds for kicks and calls exactly like ringtest; without it
// both threads poll. Prints the wall time of the exchange and ns per buffer.
//
// The same program runs one side of a queue in its own process over a shared-memory file (RingPeer.cs):
//   Virtio.PingPong peer driver --ring split|packed --qsize N --count C --out-bytes B --in-bytes B --segments S
//       --outstanding O --features EVENT_IDX,INDIRECT_DESC,IN_ORDER [--legacy] [--gpa-base 0x..] --timeout S
//   Virtio.PingPong peer device RING ... (the driver's first line)
//
//   dotnet run -c Release --project benchmarks/Virtio.PingPong -- [--ring split|packed] [--ring-size 256]
//       [--run-cycles 10000000] [--batch 1] [--outstanding N] [--sleep] [--host-affinity H] [--guest-affinity G]
//       [--relax N (spin N pause iterations when a poll finds nothing; ringtest's --relax analogue, default 0)]
//       [--used-batch U (the device publishes used buffers every U buffers and whenever it runs out of work;
//        default 1, ringtest's per-buffer publication)]
//       [--host-relax N (the device alone spins N iterations when it finds the ring empty; default 0)]
using System;
using System.Globalization;
using Virtio.PingPong;
using Virtio.Ring;

if (args.Length > 0 && args[0] == "peer")
{
    return RingPeer.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "micro")
{
    return MicroSuite.Run(args[1..]);
}

string ring = "split";
int ringSize = 256;
int runCycles = 10_000_000;
int batch = 1;
int maxOutstanding = int.MaxValue;
bool sleep = false;
int hostCpu = -1;
int guestCpu = -1;
int relax = 0;
int usedBatch = 1;
int hostRelax = 0;
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
        case "--relax": relax = NextInt(); break;
        case "--used-batch": usedBatch = NextInt(); break;
        case "--host-relax": hostRelax = NextInt(); break;
        case "--help":
            Console.WriteLine("options: --ring split|packed --ring-size R --run-cycles C --batch B --outstanding O --sleep --host-affinity H --guest-affinity G --relax N --used-batch U --host-relax N");
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
VirtqueueAddresses addresses = VirtqueueAddresses.Compact(packed ? VirtqueueFormat.Packed : VirtqueueFormat.Split, 0x1000, ringSize);
using var driver = new DriverVirtqueue<int>(memory, addresses, features);
if (!DeviceVirtqueue.TryAttach(memory, addresses, features, out DeviceVirtqueue? device, out QueueError error))
{
    Console.Error.WriteLine($"attach failed: {error}");
    return 1;
}

if (usedBatch < 1)
{
    Console.Error.WriteLine("--used-batch must be at least 1");
    return 2;
}

var run = new PingPongRun(driver, device, sleep, batch, maxOutstanding, relax, usedBatch, hostRelax);

// Warm up first (untimed) for a second of exchanges, so the timed run measures steady-state code, not the JIT's
// tiers: ringtest's C code is optimised from its first instruction; ours reaches its final tier only after the
// runtime's call-counting delay (100 ms with no new tier-0 code) and a background compile. A warm-up of a few
// million buffers ended inside that window and left part of the timed run on instrumented code.
var warmUp = System.Diagnostics.Stopwatch.StartNew();
while (warmUp.Elapsed < TimeSpan.FromSeconds(1) && run.Failure is null)
{
    run.Exchange(Math.Min(runCycles, 1_000_000), guestCpu, hostCpu);
}

TimeSpan elapsed = run.Exchange(runCycles, guestCpu, hostCpu);
string? failure = run.Failure;
device.Dispose();
double ns = elapsed.TotalNanoseconds / runCycles;
Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
    $"ring={ring} ring-size={ringSize} run-cycles={runCycles} batch={batch} used-batch={usedBatch} host-relax={hostRelax} sleep={sleep} elapsed_ms={elapsed.TotalMilliseconds:F1} ns_per_buffer={ns:F2}{(failure is null ? "" : " error=" + failure)}"));
return failure is null ? 0 : 1;

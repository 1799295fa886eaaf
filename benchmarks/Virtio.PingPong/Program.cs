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
using System.CommandLine;
using System.Globalization;
using Virtio.PingPong;
using Virtio.Ring;

var ringOption = new Option<string>("--ring") { Description = "split or packed.", DefaultValueFactory = _ => "split" };
var ringSizeOption = new Option<int>("--ring-size") { Description = "Queue size (ringtest's --ring-size).", DefaultValueFactory = _ => 256 };
var runCyclesOption = new Option<int>("--run-cycles") { Description = "Buffers exchanged in the timed run (ringtest's --run-cycles).", DefaultValueFactory = _ => 10_000_000 };
var batchOption = new Option<int>("--batch") { Description = "Buffers the guest adds before it publishes (ringtest's --batch).", DefaultValueFactory = _ => 1 };
var outstandingOption = new Option<int>("--outstanding") { Description = "Buffers in flight at most (default: no limit).", DefaultValueFactory = _ => int.MaxValue };
var sleepOption = new Option<bool>("--sleep") { Description = "Kicks and calls through eventfds, as ringtest's --sleep; otherwise both threads poll." };
var hostAffinityOption = new Option<int>("--host-affinity") { Description = "CPU of the host (device) thread; -1: none.", DefaultValueFactory = _ => -1 };
var guestAffinityOption = new Option<int>("--guest-affinity") { Description = "CPU of the guest (driver) thread; -1: none.", DefaultValueFactory = _ => -1 };
var relaxOption = new Option<int>("--relax") { Description = "Pause iterations when a poll finds nothing (ringtest's --relax analogue).", DefaultValueFactory = _ => 0 };
var usedBatchOption = new Option<int>("--used-batch") { Description = "The device publishes used buffers every U buffers and whenever it runs out of work.", DefaultValueFactory = _ => 1 };
var hostRelaxOption = new Option<int>("--host-relax") { Description = "Pause iterations of the device alone when it finds the ring empty.", DefaultValueFactory = _ => 0 };
var root = new RootCommand("A two-thread ping-pong over our queues with the options and per-buffer work of Linux's tools/virtio/ringtest. Subcommands 'peer' and 'micro' (first argument) run one side of a queue in its own process and the micro-benchmark suite.")
{
    ringOption, ringSizeOption, runCyclesOption, batchOption, outstandingOption, sleepOption, hostAffinityOption,
    guestAffinityOption, relaxOption, usedBatchOption, hostRelaxOption,
};
// peer driver [options]: sets up a queue in a shared file, prints its RING line, and drives it.
var peerRing = new Option<string>("--ring") { Description = "split or packed.", DefaultValueFactory = _ => "split" };
var peerQsize = new Option<int>("--qsize") { Description = "Queue size.", DefaultValueFactory = _ => 256 };
var peerCount = new Option<int>("--count") { Description = "Buffers to exchange.", DefaultValueFactory = _ => 100_000 };
var peerOut = new Option<int>("--out-bytes") { Description = "Device-readable bytes per buffer.", DefaultValueFactory = _ => 64 };
var peerIn = new Option<int>("--in-bytes") { Description = "Device-writable bytes per buffer.", DefaultValueFactory = _ => 64 };
var peerSegments = new Option<int>("--segments") { Description = "Descriptors per buffer.", DefaultValueFactory = _ => 1 };
var peerOutstanding = new Option<int?>("--outstanding") { Description = "Buffers in flight at most (default: the queue size)." };
var peerTimeout = new Option<int>("--timeout") { Description = "Seconds before giving up.", DefaultValueFactory = _ => 60 };
var peerGpaBase = new Option<string>("--gpa-base") { Description = "Guest physical address of the shared file (hex).", DefaultValueFactory = _ => "0" };
var peerLegacy = new Option<bool>("--legacy") { Description = "The legacy split layout (QueueAlign 4096)." };
var peerFeatures = new Option<string>("--features") { Description = "Ring features, comma-separated: EVENT_IDX, INDIRECT_DESC, IN_ORDER, or none.", DefaultValueFactory = _ => "EVENT_IDX" };
var peerFile = new Option<string?>("--file") { Description = "The shared file (default: one in the temporary directory)." };
var driverCommand = new Command("driver", "Set up a queue in a shared file, print its RING line, and drive it.")
{
    peerRing, peerQsize, peerCount, peerOut, peerIn, peerSegments, peerOutstanding, peerTimeout, peerGpaBase, peerLegacy, peerFeatures, peerFile,
};
driverCommand.SetAction(parse => RingPeer.Guarded(() => RingPeer.RunDriver(new PeerDriverOptions(
    parse.GetValue(peerRing)!, parse.GetValue(peerQsize), parse.GetValue(peerCount), parse.GetValue(peerOut), parse.GetValue(peerIn),
    parse.GetValue(peerSegments), parse.GetValue(peerOutstanding), parse.GetValue(peerTimeout), parse.GetValue(peerGpaBase)!,
    parse.GetValue(peerLegacy), parse.GetValue(peerFeatures)!, parse.GetValue(peerFile)))));

// peer device RING ...: serves the queue the driver's RING line describes.
var ringLine = new Argument<string[]>("RING") { Description = "The driver's RING line (default: the first line of standard input).", Arity = ArgumentArity.ZeroOrMore };
var deviceCount = new Option<int>("--count") { Description = "Buffers to serve before exiting.", DefaultValueFactory = _ => int.MaxValue };
var deviceTimeout = new Option<int>("--timeout") { Description = "Seconds before giving up.", DefaultValueFactory = _ => 60 };
var deviceCommand = new Command("device", "Serve the queue the driver's RING line describes.") { ringLine, deviceCount, deviceTimeout };
deviceCommand.SetAction(parse => RingPeer.Guarded(() => RingPeer.RunDevice(parse.GetValue(ringLine) ?? [], parse.GetValue(deviceCount), parse.GetValue(deviceTimeout))));
root.Subcommands.Add(new Command("peer", "One side of a queue in its own process, over a shared-memory file.") { driverCommand, deviceCommand });

// micro [rounds]: the single-threaded micro-benchmarks (cross-runtime.sh).
var rounds = new Argument<int>("rounds") { Description = "Rounds per case.", DefaultValueFactory = _ => 7 };
var microCommand = new Command("micro", "The single-threaded micro-benchmark suite, one line per case.") { rounds };
microCommand.SetAction(parse => MicroSuite.Run(parse.GetValue(rounds)));
root.Subcommands.Add(microCommand);

root.SetAction(parse => Run(parse.GetValue(ringOption)!, parse.GetValue(ringSizeOption), parse.GetValue(runCyclesOption),
    parse.GetValue(batchOption), parse.GetValue(outstandingOption), parse.GetValue(sleepOption), parse.GetValue(hostAffinityOption),
    parse.GetValue(guestAffinityOption), parse.GetValue(relaxOption), parse.GetValue(usedBatchOption), parse.GetValue(hostRelaxOption)));
return root.Parse(args).Invoke();

static int Run(string ring, int ringSize, int runCycles, int batch, int maxOutstanding, bool sleep, int hostCpu, int guestCpu, int relax, int usedBatch, int hostRelax)
{
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

    if (Environment.ProcessorCount == 1 && Environment.GetEnvironmentVariable("DOTNET_TC_DelaySingleProcMultiplier") is null)
    {
        // On one CPU the runtime waits ten times longer before tiering up (TC_DelaySingleProcMultiplier, default 10):
        // the one-second warm-up below may end before the final code is in place.
        Console.Error.WriteLine("warning: the process sees one CPU; set DOTNET_TC_DelaySingleProcMultiplier=1 (or warm up longer) so tiering finishes before the timed run");
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
}

// Virtio.Migration: the project's main job. A simulated guest with our balloon driver and device migrates to a
// destination over a real socket, once with free page hinting and once without, from the same seeded scenario;
// the destination checks every page the guest had allocated, and the program fails (exit code 1) if one differs.
//
//   dotnet run -c Release --project samples/Virtio.Migration                       # the default scenario
//   dotnet run -c Release --project samples/Virtio.Migration -- --guest-size 4g --workload 0   # idle 4 GiB, 25% allocated
//   dotnet run -c Release --project samples/Virtio.Migration -- --sparse --guest-size 1t      # the hint path of a 1 TiB guest
//   dotnet run -c Release --project samples/Virtio.Migration -- --listen 127.0.0.1:7000       # a destination process
//   dotnet run -c Release --project samples/Virtio.Migration -- --destination 127.0.0.1:7000  # ... and its source
using System;
using System.CommandLine;
using System.Globalization;
using System.IO;
using System.Net;
using System.Text.Json;
using System.Threading;
using Virtio.Balloon.Hints;
using Virtio.Migration;
using Virtio.Ring;
using Virtio.Ring.Transport;

var guestSize = new Option<string>("--guest-size") { Description = "Guest RAM: 64m, 2g, 1t, ... (a multiple of 4 MiB).", DefaultValueFactory = _ => "2g" };
var allocated = new Option<double>("--allocated") { Description = "Fraction of guest pages allocated before the migration.", DefaultValueFactory = _ => 0.25 };
var fragmentation = new Option<double>("--fragmentation") { Description = "How fragmented the allocations are, 0..1.", DefaultValueFactory = _ => 0.5 };
var workload = new Option<int>("--workload") { Description = "Pages the guest writes per second while migrating (0: idle).", DefaultValueFactory = _ => 20_000 };
var hintOrder = new Option<int>("--hint-order") { Description = "Order of the hinted free blocks: 10 = 4 MiB .. 0 = 4 KiB.", DefaultValueFactory = _ => 10 };
var protocol = new Option<string>("--protocol") { Description = "Hint protocol: arrays (the original patch's 4 MiB hint arrays) or standard (VIRTIO 1.2).", DefaultValueFactory = _ => "arrays" };
var ring = new Option<string>("--ring") { Description = "Ring format: split or packed.", DefaultValueFactory = _ => "split" };
var queueSize = new Option<int>("--queue-size") { Description = "Entries per balloon queue.", DefaultValueFactory = _ => 256 };
var seed = new Option<int>("--seed") { Description = "Seed of the fragmentation, the workload and the page contents.", DefaultValueFactory = _ => 42 };
var hints = new Option<string>("--hints") { Description = "Run with hints, without, or both (compared).", DefaultValueFactory = _ => "both" };
var maxRounds = new Option<int>("--max-rounds") { Description = "Precopy rounds at most.", DefaultValueFactory = _ => 10 };
var rounds = new Option<int?>("--rounds") { Description = "Exactly this many precopy rounds (instead of converging)." };
var downtime = new Option<double>("--downtime-ms") { Description = "Stop-and-copy budget the precopy converges to.", DefaultValueFactory = _ => 100 };
var bandwidth = new Option<string>("--max-bandwidth") { Description = "Migration bandwidth limit per second, like QEMU's max-bandwidth (256m, 1g; 0: none).", DefaultValueFactory = _ => "0" };
var inlineDevice = new Option<bool>("--inline-device") { Description = "Serve the balloon device on the guest's notifying thread instead of its own thread." };
var destination = new Option<string?>("--destination") { Description = "host:port of a destination started with --listen (default: one in this process)." };
var listen = new Option<string?>("--listen") { Description = "Run as a destination on host:port and serve migrations until stopped." };
var sparse = new Option<bool>("--sparse") { Description = "Only the hint path, on a sparse guest (no workload, no page copy): TiB-scale guests." };
var reports = new Option<int>("--reports") { Description = "Reports timed in --sparse mode.", DefaultValueFactory = _ => 5 };
var json = new Option<string?>("--json") { Description = "Also write the results as JSON to this file (- for standard output)." };
var plain = new Option<bool>("--plain") { Description = "No live progress display (logs, CI)." };
var unsafeLate = new Option<bool>("--unsafe-apply-hints-after-sync")
{
    Description = "TEST ONLY, deliberately wrong: apply each round's hints after the next dirty-log sync. The integrity check must fail.",
    Hidden = true,
};

var root = new RootCommand("Live-migrates a simulated guest with virtio-balloon free page hinting, with and without hints, and checks every page arrived.")
{
    guestSize, allocated, fragmentation, workload, hintOrder, protocol, ring, queueSize, seed, hints, maxRounds, rounds,
    downtime, bandwidth, inlineDevice, destination, listen, sparse, reports, json, plain, unsafeLate,
};
root.SetAction(parse =>
{
    string? listenAt = parse.GetValue(listen);
    if (listenAt is not null)
    {
        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };
        MigrationDestination.Listen(ParseEndpoint(listenAt), once: false, ep => Console.WriteLine($"destination listening on {ep}"), cancel.Token);
        return 0;
    }

    var options = new MigrationOptions
    {
        GuestBytes = ParseSize(parse.GetValue(guestSize)!),
        AllocatedFraction = parse.GetValue(allocated),
        Fragmentation = parse.GetValue(fragmentation),
        WorkloadPagesPerSecond = parse.GetValue(sparse) ? 0 : parse.GetValue(workload),
        HintOrder = parse.GetValue(hintOrder),
        Protocol = parse.GetValue(protocol) switch
        {
            "arrays" => FreePageHintProtocol.HintArrays,
            "standard" => FreePageHintProtocol.Standard,
            var other => throw new ArgumentException($"--protocol is arrays or standard, not {other}."),
        },
        Ring = parse.GetValue(ring) switch
        {
            "split" => VirtqueueFormat.Split,
            "packed" => VirtqueueFormat.Packed,
            var other => throw new ArgumentException($"--ring is split or packed, not {other}."),
        },
        QueueSize = parse.GetValue(queueSize),
        Seed = parse.GetValue(seed),
        MaxRounds = parse.GetValue(maxRounds),
        FixedRounds = parse.GetValue(rounds),
        DowntimeTarget = TimeSpan.FromMilliseconds(parse.GetValue(downtime)),
        MaxBandwidth = (long)ParseSize(parse.GetValue(bandwidth)!),
        DeviceThreading = parse.GetValue(inlineDevice) ? QueueThreading.Inline : QueueThreading.WorkerPerQueue,
        Destination = parse.GetValue(destination) is string d ? ParseEndpoint(d) : null,
        UnsafeApplyHintsAfterSync = parse.GetValue(unsafeLate),
    };
    options.Validate();
    string? jsonPath = parse.GetValue(json);
    if (parse.GetValue(sparse))
    {
        SparseResult result = SparseHintRun.Run(options, Math.Max(1, parse.GetValue(reports)));
        Report.Sparse(result);
        WriteJson(jsonPath, result);
        return 0;
    }

    string which = parse.GetValue(hints)!;
    if (which is not ("both" or "on" or "off"))
    {
        throw new ArgumentException($"--hints is both, on or off, not {which}.");
    }

    var results = new System.Collections.Generic.List<MigrationResult>();
    if (which != "on")
    {
        results.Add(MigrationRunner.Run(options, withHints: false, progress: !parse.GetValue(plain)));
    }

    if (which != "off")
    {
        results.Add(MigrationRunner.Run(options, withHints: true, progress: !parse.GetValue(plain)));
    }

    Report.Migrations(options, results);
    WriteJson(jsonPath, results);
    bool ok = results.TrueForAll(r => r.IntegrityOk && r.BytesReceived == r.BytesSent && r.HintedPagesHeldAfterDone == 0 && r.DeviceFault is null);
    if (!ok)
    {
        Console.Error.WriteLine("INTEGRITY CHECK FAILED: the destination's memory differs from the source's (see the table above).");
    }

    return ok ? 0 : 1;
});
return root.Parse(args).Invoke();

static ulong ParseSize(string text)
{
    text = text.Trim().ToLowerInvariant();
    ulong unit = text[^1] switch { 'k' => 1UL << 10, 'm' => 1UL << 20, 'g' => 1UL << 30, 't' => 1UL << 40, _ => 1 };
    string number = unit == 1 ? text : text[..^1];
    return checked(ulong.Parse(number, CultureInfo.InvariantCulture) * unit);
}

static IPEndPoint ParseEndpoint(string text) =>
    IPEndPoint.TryParse(text, out IPEndPoint? endpoint) && endpoint.Port != 0 ? endpoint : throw new ArgumentException($"Not host:port: {text}.");

static void WriteJson<T>(string? path, T value)
{
    if (path is null)
    {
        return;
    }

    string text = JsonSerializer.Serialize(value, new JsonSerializerOptions { WriteIndented = true });
    if (path == "-")
    {
        Console.WriteLine(text);
    }
    else
    {
        File.WriteAllText(path, text);
    }
}

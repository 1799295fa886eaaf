// Virtio.BalloonServer: our balloon device served over QEMU's qtest protocol, laid out as QEMU's microvm with
// acpi=off (virtio-mmio transports at 0xfeb00000 + i * 0x200, the balloon on the last of eight, GSI 5 + i), guest
// RAM in a shared file (GPA = file offset), and a QMP-style control socket for the host side. Any qtest client,
// and our driver through Virtio.Interop's QtestMmioBus, drives it exactly as it drives QEMU's own balloon.
//
//   dotnet run -c Release --project samples/Virtio.BalloonServer -- \
//     --qtest unix:/tmp/b.qtest --qmp unix:/tmp/b.qmp --memory 268435456 --mem-path /dev/shm/balloon
using System;
using System.CommandLine;
using System.IO;
using System.IO.MemoryMappedFiles;
using System.Threading;
using Virtio.Balloon;
using Virtio.Balloon.Backends;
using Virtio.Balloon.Device;
using Virtio.Balloon.Hints;
using Virtio.BalloonServer;
using Virtio.Interop.Qtest;
using Virtio.Ring;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;

[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")] // shared memory released with madvise(MADV_REMOVE)

var qtest = new Option<string>("--qtest") { Description = "The qtest socket: unix:PATH.", Required = true };
var qmp = new Option<string>("--qmp") { Description = "The control socket: unix:PATH.", Required = true };
var memoryBytes = new Option<ulong>("--memory") { Description = "Guest RAM in bytes (a multiple of 4 MiB).", DefaultValueFactory = _ => 256UL << 20 };
var memPath = new Option<string>("--mem-path") { Description = "The shared file that holds guest RAM (created; GPA = file offset).", Required = true };
var packed = new Option<bool>("--packed") { Description = "Offer the packed ring." };
var noHint = new Option<bool>("--no-free-page-hint") { Description = "Do not offer FREE_PAGE_HINT." };
var noReporting = new Option<bool>("--no-free-page-reporting") { Description = "Do not offer PAGE_REPORTING." };
var noDeflate = new Option<bool>("--no-deflate-on-oom") { Description = "Do not offer DEFLATE_ON_OOM." };
var protocol = new Option<string>("--hint-protocol") { Description = "standard (as QEMU) or arrays (the original patch).", DefaultValueFactory = _ => "standard" };
var transportIndex = new Option<int>("--transport") { Description = "The virtio-mmio transport the balloon sits on (0-7).", DefaultValueFactory = _ => 7 };
var root = new RootCommand("Serves our virtio-balloon device over QEMU's qtest protocol, as QEMU's microvm lays it out.")
{
    qtest, qmp, memoryBytes, memPath, packed, noHint, noReporting, noDeflate, protocol, transportIndex,
};
root.SetAction(parse => Run(
    Unix(parse.GetValue(qtest)!), Unix(parse.GetValue(qmp)!), parse.GetValue(memoryBytes), parse.GetValue(memPath)!,
    parse.GetValue(packed), !parse.GetValue(noHint), !parse.GetValue(noReporting), !parse.GetValue(noDeflate),
    parse.GetValue(protocol) == "arrays" ? FreePageHintProtocol.HintArrays : FreePageHintProtocol.Standard, parse.GetValue(transportIndex)));
return root.Parse(args).Invoke();

static string Unix(string address) =>
    address.StartsWith("unix:", StringComparison.Ordinal) ? address[5..] : throw new ArgumentException($"Expected unix:PATH, not {address}.");

static unsafe int Run(string qtestPath, string qmpPath, ulong ram, string memoryPath, bool packed, bool hint, bool reporting, bool deflate,
    FreePageHintProtocol protocol, int index)
{
    using var file = new FileStream(memoryPath, FileMode.Create, FileAccess.ReadWrite, FileShare.ReadWrite);
    file.SetLength((long)ram);
    using MemoryMappedFile mapping = MemoryMappedFile.CreateFromFile(file, null, (long)ram, MemoryMappedFileAccess.ReadWrite, HandleInheritability.None, leaveOpen: true);
    using MemoryMappedViewAccessor view = mapping.CreateViewAccessor(0, (long)ram, MemoryMappedFileAccess.ReadWrite);
    byte* host = null;
    view.SafeMemoryMappedViewHandle.AcquirePointer(ref host);
    using GuestMemory memory = new GuestMemoryBuilder().AttachRegion(0, (nint)(host + view.PointerOffset), ram).Build();

    ulong features = (1UL << BalloonFeatureBits.StatsVq) | (1UL << BalloonFeatureBits.PagePoison)
        | (hint ? 1UL << BalloonFeatureBits.FreePageHint : 0)
        | (reporting ? 1UL << BalloonFeatureBits.PageReporting : 0)
        | (deflate ? 1UL << BalloonFeatureBits.DeflateOnOom : 0);
    using var device = new BalloonDevice(memory, new LinuxBalloonBackend(memory, HostMemoryBacking.Shared), new BalloonDeviceOptions
    {
        OfferedFeatures = features,
        Numbering = BalloonQueueNumbering.Qemu,
        HintProtocol = protocol,
        MaxQueueSize = 128,
        Device = new VirtioDeviceOptions
        {
            Threading = QueueThreading.Inline, // like QEMU's: a kick is served before the write that made it returns
            TransportFeatures = VirtioDevice.DefaultTransportFeatures & ~(packed ? 0 : 1UL << VirtioFeatureBits.RingPacked),
            Name = "virtio-balloon",
        },
    });
    device.Faulted += (_, fault) => Console.Error.WriteLine($"virtio-balloon needs reset: {fault}");

    using var server = new QtestServer(memory);
    var transport = new VirtioMmioTransport(device, server.LineFor(index));
    server.Attach(index, transport);
    using var control = new BalloonQmpServer(device, ram);
    var controlThread = new Thread(() => control.Serve(qmpPath)) { IsBackground = true, Name = "qmp" };
    controlThread.Start();
    Console.CancelKeyPress += (_, e) =>
    {
        e.Cancel = true;
        server.Dispose();
    };
    AppDomain.CurrentDomain.ProcessExit += (_, _) => server.Dispose();
    Console.WriteLine($"qtest on {qtestPath}, qmp on {qmpPath}, {ram >> 20} MiB in {memoryPath}, balloon on transport {index}");
    server.Serve(qtestPath);
    view.SafeMemoryMappedViewHandle.ReleasePointer();
    return 0;
}

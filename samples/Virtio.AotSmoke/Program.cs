// Virtio.AotSmoke: both libraries under NativeAOT. CI publishes it with PublishAot (no trimming or AOT warning
// allowed) and runs the native binary: a guest with our balloon driver and device over virtio-mmio inflates,
// deflates, answers a free page hint report in each protocol into a migration bitmap, and a device snapshot
// round-trips. Exit code 0 when every check holds.
//
//   dotnet publish samples/Virtio.AotSmoke -c Release -r linux-x64 -o out && out/Virtio.AotSmoke
using System;
using System.Runtime.CompilerServices;
using Virtio.Balloon;
using Virtio.Balloon.Backends;
using Virtio.Balloon.Device;
using Virtio.Balloon.Driver;
using Virtio.Balloon.GuestAllocator;
using Virtio.Balloon.Hints;
using Virtio.Balloon.Migration;
using Virtio.Ring;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;

Console.WriteLine($"runtime: {System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription}, native AOT: {!RuntimeFeature.IsDynamicCodeSupported}");
int failures = 0;
foreach (FreePageHintProtocol protocol in new[] { FreePageHintProtocol.Standard, FreePageHintProtocol.HintArrays })
{
    foreach (VirtqueueFormat format in new[] { VirtqueueFormat.Split, VirtqueueFormat.Packed })
    {
        failures += Run(protocol, format);
    }
}

Console.WriteLine(failures == 0 ? "AOT smoke: every check held" : $"AOT smoke: {failures} checks failed");
return failures == 0 ? 0 : 1;

static int Run(FreePageHintProtocol protocol, VirtqueueFormat format)
{
    const ulong Bytes = 64UL << 20;
    using GuestMemory memory = GuestMemory.Allocate(Bytes);
    using var allocator = new BuddyAllocator(0, Bytes / 4096);
    using var bitmap = new MigrationBitmap(0, Bytes / 4096);
    using var device = new BalloonDevice(memory, new InMemoryBalloonBackend(Bytes / 4096), new BalloonDeviceOptions
    {
        OfferedFeatures = BalloonFeatureBits.All,
        HintProtocol = protocol,
        FreePageHintSink = bitmap,
    });
    BalloonDriver? driver = null;
    var transport = new VirtioMmioTransport(device, new InterruptLine(() => driver?.OnInterrupt()));
    driver = new BalloonDriver(transport, memory, allocator, new BalloonDriverOptions { RingFormat = format, HintProtocol = protocol });
    using BalloonDriver owned = driver;
    int failures = 0;
    void Check(bool condition, string what)
    {
        if (!condition)
        {
            Console.Error.WriteLine($"{protocol}/{format}: {what}");
            failures++;
        }
    }

    Check(driver.Initialize(), "initialize");
    device.SetTargetPages(1000);
    driver.Poll();
    Check(driver.BalloonPages == 1000 && device.ActualPages == 1000, "inflate to 1000 pages");
    device.SetTargetPages(0);
    driver.Poll();
    Check(driver.BalloonPages == 0, "deflate");

    bitmap.MarkAll();
    device.RequestFreePageHints();
    driver.Poll();
    Check(device.FreePageHintStatus == FreePageHintStatus.Stopped && device.HintedPages > 0, "a hint report");
    Check(bitmap.CountMarked() < (long)(Bytes / 4096) - device.HintedPages + 1024, "hints cleared the bitmap");
    device.FinishFreePageHints();
    driver.Poll();
    Check(allocator.IsolatedPages == 0, "DONE gave the blocks back");

    device.Pause();
    byte[] state = device.SaveState();
    device.Resume();
    using var copy = new BalloonDevice(memory, new InMemoryBalloonBackend(Bytes / 4096), new BalloonDeviceOptions { OfferedFeatures = BalloonFeatureBits.All, HintProtocol = protocol });
    Check(copy.TryRestoreState(state, out DeviceStateError error) && error == DeviceStateError.None, $"snapshot restore ({error})");
    Console.WriteLine($"{protocol}/{format}: inflate, deflate, {device.HintBlocks} hint blocks, snapshot of {state.Length} bytes: {(failures == 0 ? "ok" : "FAILED")}");
    return failures;
}

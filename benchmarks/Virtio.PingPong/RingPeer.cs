using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.IO.MemoryMappedFiles;
using System.Linq;
using Virtio.Ring;
using Virtio.Ring.Packed;
using Virtio.Ring.Split;

namespace Virtio.PingPong;

/// <summary>
/// One side of a queue in its own process, over a shared-memory file, so our driver or our device can be paired
/// with another implementation. Guest physical address = <c>gpa_base</c> + file offset.
/// <list type="bullet">
/// <item><c>peer driver</c> creates the file, places the rings, prints one <c>RING ...</c> line, then sends
/// <c>--count</c> buffers whose readable bytes carry a pattern of (buffer number, byte index), checks every
/// returned buffer and prints <c>DONE count=C errors=E ns_per_buffer=X</c>; exit 0 only if all came back intact.</item>
/// <item><c>peer device RING ...</c> (the driver's line, as arguments or on standard input) maps the file and
/// attaches to the rings as they are, from the reset state, without writing ring memory; it copies each chain's
/// readable bytes into its writable bytes and returns the bytes written. A peer that breaks the rules ends it
/// with <c>BROKEN error=...</c> and exit code 3, never a crash.</item>
/// </list>
/// Both sides poll; notification suppression fields are still maintained as the spec says.
/// </summary>
internal static class RingPeer
{
    private const ulong RingOffset = 0x1000;

    /// <summary>Runs one side, turning a malformed RING line or an unusable file into exit code 2 and a message.</summary>
    public static int Guarded(Func<int> side)
    {
        try
        {
            return side();
        }
        catch (Exception e) when (e is ArgumentException or FormatException or IOException or KeyNotFoundException or OverflowException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"peer: {e.Message}");
            return 2;
        }
    }

    /// <summary>Byte <paramref name="index"/> of buffer <paramref name="number"/>'s readable data.</summary>
    public static byte Pattern(int number, int index) => (byte)((number * 131) + (index * 7) + (index >> 8) + 1);

    /// <summary>The driver side (options parsed by Program.cs with System.CommandLine).</summary>
    public static int RunDriver(PeerDriverOptions options)
    {
        string ring = options.Ring;
        int qsize = options.QueueSize;
        int count = options.Count;
        int outBytes = options.OutBytes;
        int inBytes = options.InBytes;
        int segments = Math.Max(1, options.Segments);
        int outstanding = Math.Min(options.Outstanding ?? qsize, qsize);
        int timeout = options.TimeoutSeconds;
        ulong gpaBase = ParseHex(options.GpaBase);
        bool legacy = options.Legacy;
        string[] featureNames = options.Features.Split(',', StringSplitOptions.RemoveEmptyEntries);
        string path = options.File ?? Path.Combine(Path.GetTempPath(), $"virtio-ring-{Environment.ProcessId}.bin");

        bool packed = ring == "packed";
        ulong features = FeatureBits(featureNames, packed);
        int slotBytes = (int)Align((ulong)(outBytes + inBytes), 64);
        ulong ringBytes = packed ? PackedQueueLayout.CompactTotalBytes(qsize) : SplitQueueLayout.LegacyTotalBytes(qsize);
        ulong poolOffset = Align(RingOffset + ringBytes, 4096);
        int poolEntries = Math.Max(2, 2 * segments);
        ulong poolBytes = IndirectDescriptorPool.BytesFor(qsize, poolEntries);
        ulong dataOffset = Align(poolOffset + poolBytes, 4096);
        ulong size = Align(dataOffset + ((ulong)outstanding * (ulong)slotBytes), 4096);

        using var file = MemoryMappedFile.CreateFromFile(path, FileMode.Create, null, (long)size);
        using GuestMemory memory = Map(file, gpaBase, size);
        VirtqueueAddresses a = packed
            ? VirtqueueAddresses.From(PackedQueueLayout.Compact(gpaBase + RingOffset, qsize))
            : legacy ? VirtqueueAddresses.From(SplitQueueLayout.Legacy(gpaBase + RingOffset, qsize)) : VirtqueueAddresses.From(SplitQueueLayout.Compact(gpaBase + RingOffset, qsize));
        using var pool = new IndirectDescriptorPool(memory, gpaBase + poolOffset, qsize, poolEntries);
        using var driver = new DriverVirtqueue<int>(memory, a, features, pool);

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"RING {ring} qsize={qsize} desc=0x{a.DescriptorAreaAddress:x} driver=0x{a.DriverAreaAddress:x} device=0x{a.DeviceAreaAddress:x} features={(featureNames.Any(n => n != NoFeatures) ? string.Join(',', featureNames) : NoFeatures)} gpa_base=0x{gpaBase:x} size={size} file={path}"));
        Console.Out.Flush();

        var free = new Stack<int>(Enumerable.Range(0, outstanding).Reverse());
        var numberOf = new int[outstanding];
        int readableSegments = Math.Max(1, segments / 2);
        int writableSegments = Math.Max(1, segments - readableSegments);
        var readable = new GuestRange[readableSegments];
        var writable = new GuestRange[writableSegments];
        int sent = 0;
        int received = 0;
        int errors = 0;
        var clock = Stopwatch.StartNew();
        Stopwatch? sinceFirst = null; // ns per buffer counts from the first buffer back, not from the device's start-up
        while (received < count)
        {
            if (clock.Elapsed.TotalSeconds > timeout)
            {
                Console.WriteLine($"DONE count={received} errors={errors + (count - received)} ns_per_buffer=0 timeout=true");
                return 1;
            }

            while (sent < count && free.Count > 0)
            {
                int slot = free.Peek();
                ulong slotGpa = gpaBase + dataOffset + ((ulong)slot * (ulong)slotBytes);
                memory.TryGetSpan(slotGpa, outBytes, out Span<byte> data);
                for (int i = 0; i < outBytes; i++)
                {
                    data[i] = Pattern(sent, i);
                }

                Split(readable, slotGpa, outBytes);
                Split(writable, slotGpa + (ulong)outBytes, inBytes);
                if (!driver.TryAdd(readable, writable, slot))
                {
                    break;
                }

                free.Pop();
                numberOf[slot] = sent++;
            }

            driver.PublishAvailable();
            while (driver.TryGetUsed(out int slot, out uint length))
            {
                int number = numberOf[slot];
                int expected = Math.Min(outBytes, inBytes);
                memory.TryGetSpan(gpaBase + dataOffset + ((ulong)slot * (ulong)slotBytes) + (ulong)outBytes, inBytes, out Span<byte> back);
                bool ok = length == (uint)expected;
                for (int i = 0; ok && i < expected; i++)
                {
                    ok = back[i] == Pattern(number, i);
                }

                errors += ok ? 0 : 1;
                back.Clear();
                free.Push(slot);
                received++;
                sinceFirst ??= Stopwatch.StartNew();
            }

            if (driver.Error != QueueError.None)
            {
                Console.WriteLine($"DONE count={received} errors={errors + (count - received)} ns_per_buffer=0 broken={driver.Error}");
                return 1;
            }
        }

        double ns = count > 1 ? sinceFirst!.Elapsed.TotalNanoseconds / (count - 1) : 0;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"DONE count={received} errors={errors} ns_per_buffer={ns:F1}"));
        return errors == 0 ? 0 : 1;
    }

    /// <summary>The device side: the driver's RING line (as arguments, or else the first line of standard input).</summary>
    public static int RunDevice(string[] ringLine, int count, int timeout)
    {
        // The RING line comes as arguments (after "device") or, if absent, as the first line of standard input.
        var tokens = new List<string>(ringLine);
        if (!tokens.Contains("RING"))
        {
            tokens.InsertRange(0, (Console.ReadLine() ?? string.Empty).Split(' ', StringSplitOptions.RemoveEmptyEntries));
        }

        int at = tokens.IndexOf("RING");
        if (at < 0 || at + 1 >= tokens.Count)
        {
            throw new ArgumentException("no RING line");
        }

        bool packed = tokens[at + 1] == "packed";
        var ringKeys = tokens.Skip(at + 2).Where(t => t.Contains('=', StringComparison.Ordinal))
            .Select(t => t.Split('=', 2)).ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);
        int qsize = int.Parse(ringKeys["qsize"], CultureInfo.InvariantCulture);
        ulong gpaBase = ParseHex(ringKeys["gpa_base"]);
        ulong size = ulong.Parse(ringKeys["size"], CultureInfo.InvariantCulture);
        string[] featureNames = ringKeys.TryGetValue("features", out string? f) ? f.Split(',', StringSplitOptions.RemoveEmptyEntries) : [];
        var addresses = new VirtqueueAddresses(qsize, ParseHex(ringKeys["desc"]), ParseHex(ringKeys["driver"]), ParseHex(ringKeys["device"]));

        using var file = MemoryMappedFile.CreateFromFile(ringKeys["file"], FileMode.Open, null, 0);
        using GuestMemory memory = Map(file, gpaBase, size);
        if (!DeviceVirtqueue.TryAttach(memory, addresses, FeatureBits(featureNames, packed), out DeviceVirtqueue? device, out QueueError attachError))
        {
            Console.WriteLine($"BROKEN error={attachError}");
            return 3;
        }

        using (device)
        {
            Span<byte> scratch = new byte[1 << 20];
            int served = 0;
            var clock = Stopwatch.StartNew();
            while (served < count)
            {
                bool any = false;
                while (served < count && device.TryPop(out DescriptorChain chain))
                {
                    any = true;
                    int n = chain.CopyReadableTo(scratch);
                    int written = chain.CopyToWritable(scratch[..n]);
                    device.PushUsed(chain.Id, (uint)written);
                    served++;
                }

                device.PublishUsed();
                if (device.IsBroken)
                {
                    Console.WriteLine($"BROKEN error={device.Error} detail=0x{device.ErrorDetail:x} served={served}");
                    return 3;
                }

                if (any)
                {
                    clock.Restart();
                }
                else if (clock.Elapsed.TotalSeconds > timeout)
                {
                    // Idle for the whole timeout: the driver is done (exit 0) or never came (exit 1).
                    Console.WriteLine($"IDLE served={served}");
                    return served > 0 ? 0 : 1;
                }
            }

            Console.WriteLine($"SERVED count={served}");
            return 0;
        }
    }

    private static unsafe GuestMemory Map(MemoryMappedFile file, ulong gpaBase, ulong size)
    {
        MemoryMappedViewAccessor view = file.CreateViewAccessor(0, (long)size);
        byte* p = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        var owner = new ViewOwner(view);
        return new GuestMemoryBuilder().AttachRegion(gpaBase, (nint)(p + view.PointerOffset), size, owner).Build();
    }

    /// <summary>How a RING line says that no ring feature was negotiated (an empty list means the same).</summary>
    private const string NoFeatures = "none";

    private static ulong FeatureBits(string[] names, bool packed)
    {
        ulong bits = 1UL << VirtioFeatureBits.Version1;
        bits |= packed ? 1UL << VirtioFeatureBits.RingPacked : 0;
        foreach (string name in names)
        {
            bits |= name switch
            {
                NoFeatures => 0, // "features=none" (or an empty list): no ring feature negotiated
                "EVENT_IDX" => 1UL << VirtioFeatureBits.EventIdx,
                "INDIRECT_DESC" => 1UL << VirtioFeatureBits.IndirectDesc,
                "IN_ORDER" => 1UL << VirtioFeatureBits.InOrder,
                _ => throw new ArgumentException($"unknown feature {name}"),
            };
        }

        return bits;
    }

    private static void Split(GuestRange[] ranges, ulong gpa, int bytes)
    {
        int per = bytes / ranges.Length;
        for (int i = 0; i < ranges.Length; i++)
        {
            int length = i == ranges.Length - 1 ? bytes - (per * i) : per;
            ranges[i] = new GuestRange(gpa + (ulong)(per * i), (uint)length);
        }
    }

    private static ulong Align(ulong value, ulong align) => (value + align - 1) & ~(align - 1);

    private static ulong ParseHex(string s) =>
        ulong.Parse(s.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? s[2..] : s, NumberStyles.HexNumber, CultureInfo.InvariantCulture);

    private sealed class ViewOwner(MemoryMappedViewAccessor view) : IDisposable
    {
        public void Dispose()
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
            view.Dispose();
        }
    }
}

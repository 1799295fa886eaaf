// Virtio.Demo: a guest driver thread and a VMM device thread exchange buffers through a virtqueue (split, or
// packed with --packed) in simulated guest memory, the way a VMM embeds Virtio.Ring. The device is an "echo-checksum" device: for each
// request it reads the device-readable bytes and writes back their length and FNV-1a hash. Kicks and interrupts
// are SemaphoreSlims standing in for eventfds. Afterwards a hostile guest feeds the device a looping chain, and
// the device reports a typed error instead of hanging.
//
//   dotnet run -c Release --project samples/Virtio.Demo -- [--buffers N] [--queue-size Q] [--polling] [--packed]
using System;
using System.Buffers.Binary;
using System.CommandLine;
using System.Diagnostics;
using System.Threading;
using Virtio.Ring;
using Virtio.Ring.Split;

var buffersOption = new Option<int>("--buffers") { Description = "Buffers the driver and the device exchange.", DefaultValueFactory = _ => 2_000_000 };
var queueSizeOption = new Option<int>("--queue-size") { Description = "Entries in the queue.", DefaultValueFactory = _ => 256 };
var pollingOption = new Option<bool>("--polling") { Description = "Both threads poll instead of kicking and interrupting." };
var packedOption = new Option<bool>("--packed") { Description = "Use the packed ring instead of the split ring." };
var root = new RootCommand("A guest driver thread and a VMM device thread exchange buffers through a virtqueue; then a hostile guest is refused.")
{
    buffersOption, queueSizeOption, pollingOption, packedOption,
};
root.SetAction(parse => Run(parse.GetValue(buffersOption), parse.GetValue(queueSizeOption), parse.GetValue(pollingOption), parse.GetValue(packedOption)));
return root.Parse(args).Invoke();

static int Run(int buffers, int queueSize, bool polling, bool packed)
{
    const ulong RingBase = 0x1000;
    const ulong PoolBase = 0x10_0000;
    const ulong DataBase = 0x20_0000;
    const int SlotBytes = 512;
    ulong features = (1UL << VirtioFeatureBits.Version1) | (1UL << VirtioFeatureBits.EventIdx) | (1UL << VirtioFeatureBits.IndirectDesc)
        | (packed ? 1UL << VirtioFeatureBits.RingPacked : 0);

    // --- The VMM's guest memory and the queue the guest driver places in it (the three addresses a transport carries).
    using GuestMemory memory = GuestMemory.Allocate(64UL << 20);
    VirtqueueAddresses addresses = VirtqueueAddresses.Compact(packed ? VirtqueueFormat.Packed : VirtqueueFormat.Split, RingBase, queueSize);
    using var pool = new IndirectDescriptorPool(memory, PoolBase, queueSize, 4);
    using var driver = new DriverVirtqueue<int>(memory, addresses, features, pool);

    // --- The VMM attaches its device to the queue; the same device code runs over either ring format.
    if (!DeviceVirtqueue.TryAttach(memory, addresses, features, out DeviceVirtqueue? device, out QueueError attachError))
    {
        Console.Error.WriteLine($"attach failed: {attachError}");
        return 1;
    }

    using var kick = new SemaphoreSlim(0);       // guest -> device (QueueNotify / ioeventfd)
    using var interrupt = new SemaphoreSlim(0);  // device -> guest (irqfd)
    long kicks = 0;
    long interrupts = 0;
    string? failure = null;
    using var start = new Barrier(2);

    var deviceThread = new Thread(() =>
    {
        start.SignalAndWait();
        int served = 0;
        Span<byte> reply = stackalloc byte[8];
        while (served < buffers)
        {
            device.DisableAvailableNotifications();
            while (device.TryPop(out DescriptorChain chain))
            {
                uint hash = 2166136261u;
                foreach (ReadOnlySpan<byte> segment in chain.Readable)
                {
                    foreach (byte b in segment)
                    {
                        hash = (hash ^ b) * 16777619u;
                    }
                }

                BinaryPrimitives.WriteUInt32LittleEndian(reply, chain.ReadableLength);
                BinaryPrimitives.WriteUInt32LittleEndian(reply[4..], hash);
                device.PushUsed(chain.Id, (uint)chain.CopyToWritable(reply));
                served++;
            }

            if (device.IsBroken)
            {
                failure = $"device: {device.Error}";
                return;
            }

            if (device.PublishUsed() && !polling)
            {
                Interlocked.Increment(ref interrupts);
                interrupt.Release();
            }

            if (served < buffers && device.EnableAvailableNotifications() == NotificationRecheck.NothingPending && !polling && !kick.Wait(TimeSpan.FromSeconds(10)))
            {
                failure = "device: no kick for 10 s";
                return;
            }
        }
    }) { Name = "device" };

    var driverThread = new Thread(() =>
    {
        Span<GuestRange> readable = stackalloc GuestRange[3];
        Span<GuestRange> writable = stackalloc GuestRange[1];
        int[] freeSlots = new int[queueSize];
        int[] slotOf = new int[queueSize * 2];
        int freeCount = queueSize;
        for (int i = 0; i < queueSize; i++)
        {
            freeSlots[i] = i;
        }

        start.SignalAndWait();
        int sent = 0;
        int received = 0;
        while (received < buffers)
        {
            while (sent < buffers && freeCount > 0)
            {
                int slot = freeSlots[freeCount - 1];
                ulong gpa = DataBase + ((ulong)slot * SlotBytes);
                int segments = 1 + (sent % 3);
                for (int s = 0; s < segments; s++)
                {
                    memory.TryGetSpan(gpa + (ulong)(s * 128), 64, out Span<byte> payload);
                    payload.Fill((byte)(sent + s));
                    readable[s] = new GuestRange(gpa + (ulong)(s * 128), 64);
                }

                writable[0] = new GuestRange(gpa + 448, 8);
                if (!driver.TryAdd(readable[..segments], writable, sent))
                {
                    break;
                }

                freeCount--;
                slotOf[sent % slotOf.Length] = slot;
                sent++;
            }

            if (driver.PublishAvailable() && !polling)
            {
                Interlocked.Increment(ref kicks);
                kick.Release();
            }

            bool progress = false;
            while (driver.TryGetUsed(out int seq, out uint written))
            {
                int slot = slotOf[seq % slotOf.Length];
                memory.TryGetSpan(DataBase + ((ulong)slot * SlotBytes) + 448, 8, out Span<byte> reply);
                if (written != 8 || BinaryPrimitives.ReadUInt32LittleEndian(reply) != 64u * (uint)(1 + (seq % 3)))
                {
                    failure = $"driver: reply {seq} is wrong";
                    return;
                }

                freeSlots[freeCount++] = slot;
                received++;
                progress = true;
            }

            if (!progress && !polling && (freeCount == 0 || sent == buffers) && driver.EnableUsedNotifications() == NotificationRecheck.NothingPending
                && !interrupt.Wait(TimeSpan.FromSeconds(10)))
            {
                failure = "driver: no interrupt for 10 s";
                return;
            }
        }
    }) { Name = "driver" };

    var clock = Stopwatch.StartNew();
    deviceThread.Start();
    driverThread.Start();
    driverThread.Join();
    deviceThread.Join();
    clock.Stop();

    Console.WriteLine($"{device.Format} virtqueue, Q={queueSize}, EVENT_IDX + INDIRECT_DESC, mode={(polling ? "polling" : "notifications")}");
    Console.WriteLine($"  buffers exchanged : {buffers:N0} (1-3 readable segments of 64 B + one 8 B writable, indirect when possible)");
    Console.WriteLine($"  elapsed           : {clock.Elapsed.TotalMilliseconds:F1} ms, {clock.Elapsed.TotalMilliseconds * 1e6 / buffers:F1} ns per buffer");
    Console.WriteLine($"  kicks / interrupts: {kicks:N0} / {interrupts:N0} (EVENT_IDX suppresses the rest)");
    Console.WriteLine($"  errors            : {failure ?? "none"}; driver {driver.Error}, device {device.Error}");
    device.Dispose();

    // --- A hostile guest: a descriptor chain that loops (0 -> 1 -> 0). The device must not spin forever.
    using GuestMemory hostile = GuestMemory.Allocate(1 << 20);
    SplitQueueLayout small = SplitQueueLayout.Compact(0x1000, 8);
    hostile.TryGetSpan(small.DescriptorTableAddress, 32, out Span<byte> table);
    BinaryPrimitives.WriteUInt64LittleEndian(table, 0x8000);
    BinaryPrimitives.WriteUInt32LittleEndian(table[8..], 16);
    BinaryPrimitives.WriteUInt16LittleEndian(table[12..], SplitDescriptor.FlagNext);
    BinaryPrimitives.WriteUInt16LittleEndian(table[14..], 1);
    BinaryPrimitives.WriteUInt64LittleEndian(table[16..], 0x8000);
    BinaryPrimitives.WriteUInt32LittleEndian(table[24..], 16);
    BinaryPrimitives.WriteUInt16LittleEndian(table[28..], SplitDescriptor.FlagNext);
    BinaryPrimitives.WriteUInt16LittleEndian(table[30..], 0);
    hostile.TryGetSpan(small.DriverAreaAddress, 6, out Span<byte> avail);
    BinaryPrimitives.WriteUInt16LittleEndian(avail[2..], 1); // idx = 1, ring[0] = head 0
    SplitDeviceVirtqueue.TryAttach(hostile, small, VirtqueueFeatures.None, out SplitDeviceVirtqueue? victim, out _);
    using (victim)
    {
        bool popped = victim!.TryPop(out _);
        Console.WriteLine($"hostile guest: looping chain -> popped={popped}, error={victim.Error} (detail {victim.ErrorDetail}); the VMM sets DEVICE_NEEDS_RESET");
    }

    return failure is null ? 0 : 1;
}

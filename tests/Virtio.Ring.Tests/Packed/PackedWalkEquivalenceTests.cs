using System;
using Virtio.Ring.Packed;
using static Virtio.Ring.Tests.Packed.PackedForge;

namespace Virtio.Ring.Tests.Packed;

/// <summary>
/// The packed device's fast walks (one-descriptor and direct lists, taken once it has a cached guest memory
/// region) must reach exactly the verdict of a device with a cold cache, which always walks completely: the same
/// buffer, or the same typed error, whatever the guest wrote.
/// </summary>
public class PackedWalkEquivalenceTests
{
    private const int Q = 16;
    private const ushort WarmId = Q - 1; // the warm-up buffer's ID; random lists never use it
    private const ulong Buf = BufferBase;

    [Fact]
    public void A_warm_device_and_a_cold_device_agree_on_every_random_list()
    {
        var rng = new Random(20261124);
        using var forge = new PackedForge(Q, VirtqueueFeatures.IndirectDescriptors);
        int accepted = 0;
        int rejected = 0;
        for (int round = 0; round < 5000; round++)
        {
            forge.WriteSlot(0, Buf, 8, WarmId, Avail);
            WriteRandomList(forge, rng);

            // Cold: restored at slot 1 with nothing in flight, so its first pop is the list under test.
            var state = new PackedQueueState(forge.Layout, forge.Features, 1, true, 1, true, false);
            Assert.True(PackedDeviceVirtqueue.TryRestore(forge.Memory, state, out PackedDeviceVirtqueue? coldDevice, out QueueError error), error.ToString());
            PopVerdict cold;
            using (coldDevice)
            {
                cold = Pop(coldDevice!);
            }

            // Warm: pops the buffer at slot 0 first (kept in flight, so ring memory stays as the cold device saw it).
            PopVerdict warm;
            using (PackedDeviceVirtqueue warmDevice = forge.AttachDevice())
            {
                Assert.True(warmDevice.TryPop(out DescriptorChain first));
                Assert.Equal(WarmId, first.Id);
                warm = Pop(warmDevice);
            }

            Assert.Equal(cold, warm);
            _ = cold.Error == QueueError.None ? accepted++ : rejected++;
        }

        Assert.InRange(accepted, 500, 4500);
        Assert.InRange(rejected, 500, 4500);
    }

    private static void WriteRandomList(PackedForge forge, Random rng)
    {
        for (int slot = 1; slot < Q; slot++)
        {
            ulong address = Buf + (ulong)rng.Next(1 << 16);
            uint length = (uint)rng.Next(1, 512);
            ushort id = (ushort)rng.Next(Q - 1);
            ushort flags = (ushort)(Avail | (rng.Next(3) != 0 ? Next : 0) | (slot > 6 ? Write : 0));
            switch (rng.Next(40))
            {
                case 0: flags = (ushort)((flags & ~Avail) | (rng.Next(2) == 0 ? PackedDescriptor.FlagUsed : 0)); break;
                case 1: address = MemorySize - (ulong)rng.Next(256); break;
                case 2: length = (uint)rng.Next(int.MaxValue - 1000, int.MaxValue) + (uint)rng.Next(2000); break;
                case 3: flags ^= Write; break;
                case 4: id = (ushort)rng.Next(Q, ushort.MaxValue); break;
                case 5: address = 0xFFFF_FFFF_FFFF_FF00; break;
                case 6:
                    flags = (ushort)(Avail | Indirect | (rng.Next(3) == 0 ? Next : 0));
                    address = IndirectBase;
                    length = (uint)(16 * rng.Next(0, 6)) + (uint)(rng.Next(5) == 0 ? 8 : 0);
                    break;
            }

            forge.WriteSlot(slot, address, length, id, flags);
        }

        for (int i = 0; i < 5; i++)
        {
            ushort flags = (ushort)((rng.Next(4) == 0 ? Write : 0) | (rng.Next(30) == 0 ? Indirect : 0));
            forge.WriteAt(IndirectBase + (ulong)(16 * i), Buf + (ulong)rng.Next(1 << 16), (uint)rng.Next(1, 512), 0, flags);
        }
    }

    private static PopVerdict Pop(PackedDeviceVirtqueue device) =>
        device.TryPop(out DescriptorChain chain) ? PopVerdict.Popped(chain) : PopVerdict.Failed(device.Error, device.ErrorDetail);
}

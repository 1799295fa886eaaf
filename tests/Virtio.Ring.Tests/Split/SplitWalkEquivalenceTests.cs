using System;
using Virtio.Ring.Split;

namespace Virtio.Ring.Tests.Split;

/// <summary>
/// The device has two walks: a fast one for ordinary chains, taken once it has a cached guest memory region, and
/// the complete one. Whatever the guest writes, a device with a warm cache must reach exactly the verdict of a
/// device with a cold one (which always walks completely): the same chain, or the same typed error.
/// </summary>
public class SplitWalkEquivalenceTests
{
    private const int Q = 16;
    private const ushort WarmHead = Q - 1; // a valid one-descriptor chain, never rewritten
    private const ulong Buf = RingForge.BufferBase;

    [Fact]
    public void A_warm_device_and_a_cold_device_agree_on_every_random_chain()
    {
        var rng = new Random(20261124);
        using var forge = new RingForge(Q, VirtqueueFeatures.IndirectDescriptors);
        int accepted = 0;
        int rejected = 0;
        for (int round = 0; round < 5000; round++)
        {
            WriteRandomChain(forge, rng);
            forge.WriteDescriptor(WarmHead, Buf, 8, 0);
            ushort head = (ushort)rng.Next(Q - 1);

            // Cold: a fresh device whose first pop is the chain under test.
            forge.WriteAvailEntry(0, head);
            forge.WriteAvailIdx(1);
            PopVerdict cold;
            using (SplitDeviceVirtqueue device = forge.AttachDevice())
            {
                cold = Pop(device);
            }

            // Warm: a fresh device that first pops (and returns) a one-descriptor chain in guest memory.
            forge.WriteAvailEntry(0, WarmHead);
            forge.WriteAvailEntry(1, head);
            forge.WriteAvailIdx(2);
            PopVerdict warm;
            using (SplitDeviceVirtqueue device = forge.AttachDevice())
            {
                Assert.True(device.TryPop(out DescriptorChain first));
                device.PushUsed(first.Id, 0);
                warm = Pop(device);
            }

            Assert.Equal(cold, warm);
            _ = cold.Error == QueueError.None ? accepted++ : rejected++;
        }

        // The generator must reach both verdicts often, or the test proves little.
        Assert.InRange(accepted, 500, 4500);
        Assert.InRange(rejected, 500, 4500);
    }

    private static void WriteRandomChain(RingForge forge, Random rng)
    {
        // Mostly ordinary chains (consecutive, in memory, readable then writable), each with a chance of one
        // fault: a jump, a loop, a buffer off the end of memory, a huge length, readable after writable, an
        // indirect table (valid or not).
        for (int i = 0; i < Q - 1; i++)
        {
            ulong address = Buf + (ulong)rng.Next(1 << 16);
            uint length = (uint)rng.Next(1, 512);
            ushort flags = (ushort)((rng.Next(4) != 0 ? SplitDescriptor.FlagNext : 0) | (i > 7 ? SplitDescriptor.FlagWrite : 0));
            ushort next = (ushort)(i + 1);
            switch (rng.Next(40))
            {
                case 0: next = (ushort)rng.Next(Q); break;
                case 1: next = (ushort)rng.Next(Q, ushort.MaxValue); break;
                case 2: address = RingForge.MemorySize - (ulong)rng.Next(256); break;
                case 3: length = (uint)rng.Next(int.MaxValue - 1000, int.MaxValue) + (uint)rng.Next(2000); break;
                case 4: flags ^= SplitDescriptor.FlagWrite; break;
                case 5: address = 0xFFFF_FFFF_FFFF_FF00; break;
                case 6:
                    flags = (ushort)(SplitDescriptor.FlagIndirect | (rng.Next(3) == 0 ? SplitDescriptor.FlagNext : 0));
                    address = RingForge.IndirectBase;
                    length = (uint)(16 * rng.Next(0, 6)) + (uint)(rng.Next(5) == 0 ? 8 : 0);
                    break;
            }

            forge.WriteDescriptor(i, address, length, flags, next);
        }

        for (int i = 0; i < 5; i++)
        {
            ushort flags = (ushort)((i < 4 && rng.Next(3) != 0 ? SplitDescriptor.FlagNext : 0) | (rng.Next(4) == 0 ? SplitDescriptor.FlagWrite : 0)
                | (rng.Next(30) == 0 ? SplitDescriptor.FlagIndirect : 0));
            ushort next = (ushort)(rng.Next(10) == 0 ? rng.Next(8) : i + 1);
            forge.WriteDescriptorAt(RingForge.IndirectBase + (ulong)(16 * i), Buf + (ulong)rng.Next(1 << 16), (uint)rng.Next(1, 512), flags, next);
        }
    }

    private static PopVerdict Pop(SplitDeviceVirtqueue device) =>
        device.TryPop(out DescriptorChain chain) ? PopVerdict.Popped(chain) : PopVerdict.Failed(device.Error, device.ErrorDetail);
}

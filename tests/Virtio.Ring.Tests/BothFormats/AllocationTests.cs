using System;

namespace Virtio.Ring.Tests.BothFormats;

/// <summary>
/// The steady-state hot paths allocate nothing: add, publish (kick decision), pop, iterate, push, publish used
/// (interrupt decision), get used, and the notification toggles. Measured on this thread with
/// <see cref="GC.GetAllocatedBytesForCurrentThread"/> after a warm-up that lets tiered JIT settle.
/// </summary>
public class AllocationTests
{
    [Theory]
    [InlineData(VirtqueueFormat.Split, VirtqueueFeatures.None, 1)]
    [InlineData(VirtqueueFormat.Split, VirtqueueFeatures.None, 4)]
    [InlineData(VirtqueueFormat.Split, VirtqueueFeatures.EventIndex, 4)]
    [InlineData(VirtqueueFormat.Split, VirtqueueFeatures.IndirectDescriptors | VirtqueueFeatures.EventIndex, 4)]
    [InlineData(VirtqueueFormat.Split, VirtqueueFeatures.IndirectDescriptors, 16)]
    [InlineData(VirtqueueFormat.Packed, VirtqueueFeatures.None, 1)]
    [InlineData(VirtqueueFormat.Packed, VirtqueueFeatures.None, 4)]
    [InlineData(VirtqueueFormat.Packed, VirtqueueFeatures.EventIndex, 4)]
    [InlineData(VirtqueueFormat.Packed, VirtqueueFeatures.IndirectDescriptors | VirtqueueFeatures.EventIndex, 4)]
    [InlineData(VirtqueueFormat.Packed, VirtqueueFeatures.IndirectDescriptors, 16)]
    public void Steady_state_allocates_zero_bytes(VirtqueueFormat format, VirtqueueFeatures features, int segments)
    {
        using var pair = new QueuePair(format, 256, features, indirectTables: 256, indirectEntries: 16);
        var readable = new GuestRange[segments - 1];
        for (int i = 0; i < readable.Length; i++)
        {
            readable[i] = new GuestRange(pair.BufferBase + (ulong)(i * 64), 64);
        }

        GuestRange[] writable = [new GuestRange(pair.BufferBase + 4096, 64)];

        // Warm up past tier-0 and OSR so the JIT itself does not allocate during the measurement.
        long checksum = Run(pair, readable, writable, 50_000);
        long before = GC.GetAllocatedBytesForCurrentThread();
        checksum += Run(pair, readable, writable, 20_000);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(0, allocated);
        Assert.True(checksum > 0);
        Assert.False(pair.Device.IsBroken);
    }

    private static long Run(QueuePair pair, GuestRange[] readable, GuestRange[] writable, int rounds)
    {
        long sum = 0;
        DriverVirtqueue<int> driver = pair.Driver;
        DeviceVirtqueue device = pair.Device;
        for (int round = 0; round < rounds; round++)
        {
            for (int i = 0; i < 8; i++)
            {
                if (!driver.TryAdd(readable, writable, round))
                {
                    throw new InvalidOperationException("queue full");
                }
            }

            sum += driver.PublishAvailable() ? 1 : 0;
            device.DisableAvailableNotifications();
            while (device.TryPop(out DescriptorChain chain))
            {
                foreach (ReadOnlySpan<byte> s in chain.Readable)
                {
                    sum += s[0];
                }

                foreach (Span<byte> s in chain.Writable)
                {
                    s[0] = 1;
                }

                device.PushUsed(chain.Id, chain.WritableLength);
            }

            sum += (int)device.EnableAvailableNotifications();
            sum += device.PublishUsed() ? 1 : 0;
            while (driver.TryGetUsed(out int token, out uint length))
            {
                sum += token + length;
            }

            sum += (int)driver.EnableUsedNotificationsDelayed();
        }

        return sum;
    }
}

using System;
using System.Diagnostics;
using System.Globalization;
using Virtio.Ring;

namespace Virtio.PingPong;

/// <summary>
/// A small single-thread suite that runs the same way on every runtime (net8.0, net10.0, NativeAOT), where
/// BenchmarkDotNet cannot follow: per buffer, driver add + publish + device pop + push + publish + driver get
/// used, for both formats and 1 and 4 descriptors, plus the managed bytes allocated per operation. Each case warms
/// up, then reports the best of several timed rounds.
/// </summary>
internal static class MicroSuite
{
    private const int Batch = 32;

    public static int Run(int rounds)
    {
        Console.WriteLine($"runtime={System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription.Replace(' ', '_')} aot={!System.Runtime.CompilerServices.RuntimeFeature.IsDynamicCodeSupported}");
        foreach (VirtqueueFormat format in new[] { VirtqueueFormat.Split, VirtqueueFormat.Packed })
        {
            foreach (int descriptors in new[] { 1, 4 })
            {
                (double ns, double bytes) = Measure(format, descriptors, rounds);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"case={format.ToString().ToLowerInvariant()}-roundtrip-{descriptors}desc ns_per_op={ns:F2} bytes_per_op={bytes:F3}"));
            }
        }

        return 0;
    }

    private static (double Ns, double Bytes) Measure(VirtqueueFormat format, int descriptors, int rounds)
    {
        using GuestMemory memory = GuestMemory.Allocate(16UL << 20);
        ulong features = (1UL << VirtioFeatureBits.Version1) | (1UL << VirtioFeatureBits.EventIdx)
            | (format == VirtqueueFormat.Packed ? 1UL << VirtioFeatureBits.RingPacked : 0);
        VirtqueueAddresses addresses = VirtqueueAddresses.Compact(format, 0x1000, 256);
        using var driver = new DriverVirtqueue<int>(memory, addresses, features);
        if (!DeviceVirtqueue.TryAttach(memory, addresses, features, out DeviceVirtqueue? device, out _))
        {
            throw new InvalidOperationException("attach");
        }

        using (device)
        {
            var readable = new GuestRange[descriptors - 1];
            for (int i = 0; i < readable.Length; i++)
            {
                readable[i] = new GuestRange(0x20_0000 + ((ulong)i * 64), 64);
            }

            GuestRange[] writable = [new GuestRange(0x30_0000, 64)];
            const int Iterations = 200_000;
            Loop(driver, device, readable, writable, Iterations); // warm-up (tiering on JIT runtimes)
            double best = double.MaxValue;
            long allocated = 0;
            for (int r = 0; r < rounds; r++)
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                long start = Stopwatch.GetTimestamp();
                Loop(driver, device, readable, writable, Iterations);
                long end = Stopwatch.GetTimestamp();
                allocated += GC.GetAllocatedBytesForCurrentThread() - before;
                best = Math.Min(best, (end - start) * 1e9 / Stopwatch.Frequency / (Iterations * (double)Batch));
            }

            return (best, allocated / (rounds * (double)Iterations * Batch));
        }
    }

    private static long Loop(DriverVirtqueue<int> driver, DeviceVirtqueue device, GuestRange[] readable, GuestRange[] writable, int iterations)
    {
        long sum = 0;
        for (int it = 0; it < iterations; it++)
        {
            for (int i = 0; i < Batch; i++)
            {
                driver.TryAdd(readable, writable, i);
            }

            sum += driver.PublishAvailable() ? 1 : 0;
            while (device.TryPop(out DescriptorChain chain))
            {
                device.PushUsed(chain.Id, chain.WritableLength);
            }

            sum += device.PublishUsed() ? 1 : 0;
            while (driver.TryGetUsed(out int token, out uint length))
            {
                sum += token + length;
            }
        }

        return sum;
    }
}

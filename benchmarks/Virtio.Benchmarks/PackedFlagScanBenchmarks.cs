using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Virtio.Ring.Packed;

namespace Virtio.Benchmarks;

/// <summary>
/// Checking four packed descriptors (one cache line) for availability: scalar acquire loads against the
/// Vector256 and Vector512 paths, side by side. Per scan of 4 descriptors; 1024 scans over a 64 KiB ring.
/// </summary>
[MemoryDiagnoser]
[Config(typeof(VectorHardwareConfig))]
public unsafe class PackedFlagScanBenchmarks
{
    private const int Descriptors = 4096;
    private byte* _ring;

    [GlobalSetup]
    public void Setup()
    {
        _ring = (byte*)NativeMemory.AlignedAlloc(Descriptors * 16, 64);
        for (int i = 0; i < Descriptors; i++)
        {
            *(ushort*)(_ring + (i * 16) + 14) = PackedDescriptor.FlagAvail; // all available in lap 1
        }
    }

    [GlobalCleanup]
    public void Cleanup() => NativeMemory.AlignedFree(_ring);

    [Benchmark(Baseline = true, OperationsPerInvoke = Descriptors / 4)]
    public long Scalar()
    {
        long sum = 0;
        for (int i = 0; i < Descriptors; i += 4)
        {
            sum += PackedFlagScanner.ScanScalar(_ring + (i * 16), 4, true, out ulong flags) + (long)flags;
        }

        return sum;
    }

    [Benchmark(OperationsPerInvoke = Descriptors / 4)]
    public long Vector256Scan()
    {
        long sum = 0;
        for (int i = 0; i < Descriptors; i += 4)
        {
            sum += PackedFlagScanner.ScanVector256(_ring + (i * 16), true, out ulong flags) + (long)flags;
        }

        return sum;
    }

    [Benchmark(OperationsPerInvoke = Descriptors / 4)]
    public long Vector512Scan()
    {
        long sum = 0;
        for (int i = 0; i < Descriptors; i += 4)
        {
            sum += PackedFlagScanner.ScanVector512(_ring + (i * 16), true, out ulong flags) + (long)flags;
        }

        return sum;
    }
}

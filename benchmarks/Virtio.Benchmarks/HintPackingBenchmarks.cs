using System;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Virtio.Balloon.Hints;

namespace Virtio.Benchmarks;

/// <summary>
/// Packing one 4 MiB hint array: 524,288 PFNs into le64 (and be64) addresses, against a
/// <c>Buffer.MemoryCopy</c> of the same 4 MiB in the same run (the bandwidth bound: every packing reads 4 MiB
/// of PFNs and writes 4 MiB of addresses, as the copy does). Also the scalar reference, and 524,288 PFNs packed
/// into a 2 MiB le32 array (reads 4 MiB, writes 2 MiB).
/// Targets (issue 12): le64 at least 0.9 of the copy's bandwidth, be64 at least 0.8.
/// </summary>
[MemoryDiagnoser]
[Config(typeof(VectorHardwareConfig))]
public unsafe class HintPackingBenchmarks
{
    private const int Count = 524_288;
    private ulong* _pfns;
    private ulong* _pfns32; // PFNs of a guest below 16 TiB, for the le32 arrays
    private byte* _array;

    [GlobalSetup]
    public void Setup()
    {
        _pfns = (ulong*)NativeMemory.AlignedAlloc(Count * 8, 64);
        _pfns32 = (ulong*)NativeMemory.AlignedAlloc(Count * 8, 64);
        _array = (byte*)NativeMemory.AlignedAlloc(Count * 8, 64);
        var rng = new Random(8);
        for (int i = 0; i < Count; i++)
        {
            _pfns[i] = (ulong)rng.NextInt64(0, 1L << 18) << 10; // 4 MiB blocks of a 1 TiB guest
            _pfns32[i] = (ulong)rng.NextInt64(0, 1L << 32);
        }

        new Span<byte>(_array, Count * 8).Clear();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.AlignedFree(_pfns);
        NativeMemory.AlignedFree(_pfns32);
        NativeMemory.AlignedFree(_array);
    }

    [Benchmark(Baseline = true)]
    public void MemoryCopy4MiB() => Buffer.MemoryCopy(_pfns, _array, Count * 8, Count * 8);

    [Benchmark]
    public int PackLe64() => HintPacking.PackAddresses(new ReadOnlySpan<ulong>(_pfns, Count), new Span<byte>(_array, Count * 8));

    [Benchmark]
    public int PackBe64() => HintPacking.PackAddresses(new ReadOnlySpan<ulong>(_pfns, Count), new Span<byte>(_array, Count * 8), bigEndian: true);

    [Benchmark]
    public void PackLe64Scalar() => HintPacking.PackAddressesScalar(new ReadOnlySpan<ulong>(_pfns, Count), new Span<byte>(_array, Count * 8));

    [Benchmark]
    public int PackPfnsLe32() => HintPacking.PackPfnsLe32(new ReadOnlySpan<ulong>(_pfns32, Count), new Span<byte>(_array, Count * 4));
}

using System;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Virtio.Balloon;
using Virtio.Balloon.Device;
using Virtio.Ring;

namespace Virtio.Benchmarks;

/// <summary>
/// The balloon device's inflate path for one request of 256 PFNs: copy the le32 array out of guest memory (read
/// once), sort, de-duplicate and merge into runs, and check the runs against guest RAM. <see cref="ArraySortAndMerge"/>
/// (the baseline) sorts with <see cref="Array.Sort(Array)"/>, merges linearly and checks each run; <see cref="Ours"/>
/// is the device's path (<c>PfnRunBuilder</c>: ordered inputs merge at once, clustered ones go through a bitmap,
/// scattered ones through <c>PfnSorter</c>; one range check when all runs lie in one RAM region). Patterns: <c>Random</c> (PFNs anywhere in a 64 GiB guest), <c>MostlyContiguous</c> (a
/// run of 256 pages with a few out of place, what a guest that frees a large block gives back), and
/// <c>Descending</c> (a run handed out from the top, as a LIFO free list does).
/// </summary>
[MemoryDiagnoser]
[Config(typeof(VectorHardwareConfig))]
public class InflatePathBenchmarks
{
    private const int Count = 256;
    private const ulong ArrayGpa = 0x1000;

    private GuestMemory _memory = null!;
    private GuestRamMap _ram = null!;
    private readonly uint[] _pfns = new uint[Count];
    private readonly uint[] _scratch = new uint[Count];
    private readonly GuestPageRange[] _ranges = new GuestPageRange[Count];
    private readonly ulong[] _bitmap = new ulong[PfnRunBuilder.BitmapWords(Count)];

    public enum Pattern
    {
        Random,
        MostlyContiguous,
        Descending,
    }

    [Params(Pattern.Random, Pattern.MostlyContiguous, Pattern.Descending)]
    public Pattern Input { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Allocate(64UL << 30); // reserved, not committed
        _ram = new GuestRamMap(_memory);
        var rng = new Random(256);
        uint[] pfns = new uint[Count];
        for (int i = 0; i < Count; i++)
        {
            pfns[i] = Input switch
            {
                Pattern.Random => (uint)rng.Next(16, 1 << 24),
                Pattern.Descending => 0x40_0000 + (uint)(Count - i),
                _ => 0x40_0000 + (uint)i,
            };
        }

        if (Input == Pattern.MostlyContiguous)
        {
            for (int swaps = 0; swaps < 8; swaps++)
            {
                int a = rng.Next(Count);
                int b = rng.Next(Count);
                (pfns[a], pfns[b]) = (pfns[b], pfns[a]);
            }
        }

        _memory.TryWrite(ArrayGpa, MemoryMarshal.AsBytes(pfns.AsSpan()));
    }

    [GlobalCleanup]
    public void Cleanup() => _memory.Dispose();

    [Benchmark(Baseline = true)]
    public int ArraySortAndMerge()
    {
        _memory.TryRead(ArrayGpa, MemoryMarshal.AsBytes(_pfns.AsSpan()));
        Array.Sort(_pfns);
        return MergeAndCheck();
    }

    [Benchmark]
    public int Ours()
    {
        _memory.TryRead(ArrayGpa, MemoryMarshal.AsBytes(_pfns.AsSpan()));
        int runs = PfnRunBuilder.Build(_pfns, _scratch, _bitmap, _ranges, out uint min, out uint max);
        return _ram.Contains(new GuestPageRange(min, (ulong)max - min + 1)) || _ram.ContainsAll(_ranges.AsSpan(0, runs)) ? runs : -1;
    }

    private int MergeAndCheck()
    {
        int runs = PageRangeMerger.Merge(_pfns, _ranges);
        return _ram.ContainsAll(_ranges.AsSpan(0, runs)) ? runs : -1;
    }
}

using BenchmarkDotNet.Attributes;
using Virtio.Balloon.GuestAllocator;

namespace Virtio.Benchmarks;

/// <summary>
/// The simulated guest allocator per operation: allocate and free order-0 pages (splitting and merging 4 MiB
/// blocks), and walk the whole order-10 and order-0 free lists of a fragmented 64 GiB guest without taking
/// anything (what free page hinting walks; divide by the block counts the setup prints for a per-block cost).
/// </summary>
[MemoryDiagnoser]
public class BuddyAllocatorBenchmarks
{
    private const int Batch = 4096;
    private BuddyAllocator _fresh = null!;
    private BuddyAllocator _fragmented = null!;
    private readonly ulong[] _held = new ulong[Batch];
    private long _order10;
    private long _order0;

    [GlobalSetup]
    public void Setup()
    {
        _fresh = new BuddyAllocator(0, 1UL << 20); // 4 GiB
        _fragmented = new BuddyAllocator(0, 16UL << 20); // 64 GiB
        _fragmented.Fragment(0.25, 0.2, seed: 7);
        _order10 = _fragmented.FreeBlocks(10);
        _order0 = _fragmented.FreeBlocks(0);
        System.Console.WriteLine($"// free blocks: order 10 {_order10}, order 0 {_order0}");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _fresh.Dispose();
        _fragmented.Dispose();
    }

    [Benchmark(OperationsPerInvoke = 2 * Batch)]
    public void AllocateThenFreeOrder0()
    {
        for (int i = 0; i < Batch; i++)
        {
            _fresh.TryAllocate(0, out _held[i]);
        }

        for (int i = Batch - 1; i >= 0; i--)
        {
            _fresh.Free(_held[i], 0);
        }
    }

    [Benchmark]
    public ulong WalkOrder10FreeList()
    {
        ulong sum = 0;
        foreach (ulong pfn in _fragmented.EnumerateFreeBlocks(10))
        {
            sum += pfn;
        }

        return sum + (ulong)_order10;
    }

    [Benchmark]
    public ulong WalkOrder0FreeList()
    {
        ulong sum = 0;
        foreach (ulong pfn in _fragmented.EnumerateFreeBlocks(0))
        {
            sum += pfn;
        }

        return sum + (ulong)_order0;
    }
}

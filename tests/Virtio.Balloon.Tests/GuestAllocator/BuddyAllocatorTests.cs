using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using CsCheck;
using Virtio.Balloon.GuestAllocator;

namespace Virtio.Balloon.Tests.GuestAllocator;

/// <summary>Tests that measure the process's resident set run alone: a test running beside them would move it.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ResidentSetRunsAlone
{
    public const string Name = "Resident set";
}

/// <summary>The simulated guest buddy allocator: operations, invariants, and scale (the 1 TiB test reads the resident set).</summary>
[Collection(ResidentSetRunsAlone.Name)]
public class BuddyAllocatorTests
{
    [Fact]
    public void A_fresh_allocator_holds_every_page_in_the_largest_blocks_it_can()
    {
        using var a = new BuddyAllocator(1024, 3 * 1024 + 7); // three 4 MiB blocks, then 4 + 2 + 1 pages
        Assert.Equal(3, a.FreeBlocks(10));
        Assert.Equal(1, a.FreeBlocks(2));
        Assert.Equal(1, a.FreeBlocks(1));
        Assert.Equal(1, a.FreeBlocks(0));
        Assert.Equal(3 * 1024 + 7, a.FreePages);
        a.CheckInvariants();
    }

    [Fact]
    public void Allocation_splits_the_smallest_larger_block_and_free_merges_buddies_back()
    {
        using var a = new BuddyAllocator(0, 1024);
        Assert.True(a.TryAllocate(0, out ulong p));
        Assert.Equal(0UL, p);
        for (int k = 0; k < 10; k++)
        {
            Assert.Equal(1, a.FreeBlocks(k)); // the upper halves of the split, one per order
        }

        Assert.Equal(0, a.FreeBlocks(10));
        a.Free(p, 0);
        Assert.Equal(1, a.FreeBlocks(10));
        for (int k = 0; k < 10; k++)
        {
            Assert.Equal(0, a.FreeBlocks(k));
        }

        a.CheckInvariants();
    }

    [Fact]
    public void Freeing_twice_or_inside_a_free_block_is_refused()
    {
        using var a = new BuddyAllocator(0, 2048);
        Assert.True(a.TryAllocate(3, out ulong p));
        a.Free(p, 3);
        Assert.Throws<InvalidOperationException>(() => a.Free(p, 3));
        Assert.Throws<InvalidOperationException>(() => a.Free(p + 1024, 0)); // inside the free second 4 MiB block
        Assert.Throws<ArgumentOutOfRangeException>(() => a.Free(p + 1, 3));  // misaligned
        Assert.Throws<ArgumentOutOfRangeException>(() => a.Free(4096, 0));   // past the end
        a.CheckInvariants();
    }

    [Fact]
    public void Isolated_blocks_leave_the_free_lists_and_come_back_merged()
    {
        using var a = new BuddyAllocator(0, 4096);
        Assert.True(a.TryIsolate(1024, 10));
        Assert.False(a.TryIsolate(1024, 10));   // not on the list any more
        Assert.False(a.TryIsolate(2048, 9));    // inside a free order-10 block, not an order-9 one
        Assert.Equal(3, a.FreeBlocks(10));
        Assert.Equal(1024, a.IsolatedPages);
        Assert.True(a.TryIsolateAny(10, out ulong any));
        Assert.Equal(0UL, any);
        a.PutBack(1024, 10);
        a.PutBack(0, 10);
        Assert.Equal(0, a.IsolatedPages);
        Assert.Equal(4, a.FreeBlocks(10));
        a.CheckInvariants();
    }

    [Fact]
    public void Enumeration_and_bulk_copy_list_the_same_blocks_without_taking_them()
    {
        using var a = new BuddyAllocator(1UL << 20, 64 * 1024);
        a.Fragment(0.5, 0.5, seed: 3);
        Span<ulong> chunk = stackalloc ulong[7];
        for (int order = 0; order <= 10; order++)
        {
            var walked = new List<ulong>();
            foreach (ulong pfn in a.EnumerateFreeBlocks(order))
            {
                walked.Add(pfn);
            }

            Assert.Equal(a.FreeBlocks(order), walked.Count);
            var copied = new List<ulong>();
            ulong from = 0;
            int n;
            while ((n = a.CopyFreeBlocks(order, from, chunk, out from)) > 0)
            {
                copied.AddRange(chunk[..n].ToArray());
            }

            Assert.Equal(walked, copied);
            Assert.All(walked, pfn => Assert.Equal(0UL, pfn % (1UL << order)));
        }

        a.CheckInvariants();
    }

    [Fact]
    public void Fragmentation_is_reproducible_and_allocates_about_the_asked_fraction()
    {
        using var a = new BuddyAllocator(0, 1UL << 20); // 4 GiB
        using var b = new BuddyAllocator(0, 1UL << 20);
        long pa = a.Fragment(0.25, 0.3, seed: 42);
        long pb = b.Fragment(0.25, 0.3, seed: 42);
        Assert.Equal(pa, pb);
        Assert.InRange(pa / (double)(1 << 20), 0.22, 0.28);
        for (int k = 0; k <= 10; k++)
        {
            Assert.Equal(a.FreeBlocks(k), b.FreeBlocks(k));
            Assert.True(a.FreeBlocks(k) > 0, $"order {k} has holes");
        }

        a.CheckInvariants();
    }

    [Fact]
    public void Out_of_memory_calls_the_hook_and_retries_once()
    {
        using var a = new BuddyAllocator(0, 1024);
        Assert.True(a.TryAllocate(10, out ulong all));
        int calls = 0;
        a.OutOfMemory = order =>
        {
            calls++;
            a.Free(all, 10); // the balloon deflates: pages come back
            return 1024;
        };
        Assert.True(a.TryAllocate(0, out _));
        Assert.Equal(1, calls);
        a.OutOfMemory = _ =>
        {
            calls++;
            return 0;
        };
        Assert.True(a.TryAllocate(9, out _));
        Assert.True(a.TryAllocate(8, out _));
        Assert.False(a.TryAllocate(9, out _));
        Assert.Equal(2, calls);
    }

    [Fact]
    public void Random_operations_match_a_page_by_page_model()
    {
        // Each generated int is one operation: allocate (order from its low bits), free or isolate a held
        // block, or put an isolated one back. A plain array of page states is the model.
        Gen.Int[0, 1 << 20].Array[1, 300].Sample(ops =>
        {
            const int Pages = 3 * 1024 + 512;
            using var a = new BuddyAllocator(0, Pages);
            var state = new byte[Pages]; // 0 free, 1 allocated, 2 isolated
            var held = new List<(ulong Pfn, int Order)>();
            var isolated = new List<(ulong Pfn, int Order)>();
            foreach (int op in ops)
            {
                int order = op % 11;
                switch ((op >> 4) % 4)
                {
                    case 0:
                    case 1:
                        if (a.TryAllocate(order, out ulong pfn))
                        {
                            Mark(state, pfn, order, from: 0, to: 1);
                            held.Add((pfn, order));
                        }
                        else
                        {
                            Assert.True(LargestFreeRun(state, order) == false, $"order {order} failed with a free aligned block");
                        }

                        break;
                    case 2 when held.Count > 0:
                        (ulong p, int o) = held[(op >> 6) % held.Count];
                        held.Remove((p, o));
                        a.Free(p, o);
                        Mark(state, p, o, from: 1, to: 0);
                        break;
                    case 3 when a.FreeBlocks(order) > 0:
                        Assert.True(a.TryIsolateAny(order, out ulong iso));
                        Mark(state, iso, order, from: 0, to: 2);
                        isolated.Add((iso, order));
                        break;
                    case 3 when isolated.Count > 0:
                        (ulong ip, int io) = isolated[^1];
                        isolated.RemoveAt(isolated.Count - 1);
                        a.PutBack(ip, io);
                        Mark(state, ip, io, from: 2, to: 0);
                        break;
                }

                a.CheckInvariants();
                Assert.Equal(Count(state, 0), a.FreePages);
                Assert.Equal(Count(state, 1), a.AllocatedPages);
                Assert.Equal(Count(state, 2), a.IsolatedPages);
            }
        }, iter: 150);
    }

    [Fact]
    public void A_one_TiB_guest_is_created_fast_and_its_metadata_stays_small()
    {
        long rssBefore = ResidentBytes();
        var watch = Stopwatch.StartNew();
        using var a = new BuddyAllocator(0, (1UL << 40) / 4096);
        a.Fragment(0.25, 0.02, seed: 1, chunkOrder: 4);
        watch.Stop();
        long rssGrowth = ResidentBytes() - rssBefore;
        Assert.Equal(1L << 28, a.FreePages + a.AllocatedPages);
        Assert.True(a.FreeBlocks(10) > 150_000);
        // A correctness bound, not a timing claim: an O(pages) construction would take many seconds here.
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"1 TiB guest took {watch.Elapsed}");
        Assert.True(rssGrowth < 64L << 20, $"metadata grew the resident set by {rssGrowth >> 20} MiB");
    }

    private static long ResidentBytes()
    {
        foreach (string line in File.ReadAllLines("/proc/self/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line[6..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) * 1024;
            }
        }

        return 0;
    }

    private static void Mark(byte[] state, ulong pfn, int order, byte from, byte to)
    {
        for (ulong i = pfn; i < pfn + (1UL << order); i++)
        {
            Assert.Equal(from, state[i]);
            state[i] = to;
        }
    }

    private static int Count(byte[] state, byte value) => Array.FindAll(state, s => s == value).Length;

    /// <summary>Whether the model has a free aligned block of the order (then allocation must not fail).</summary>
    private static bool LargestFreeRun(byte[] state, int order)
    {
        int size = 1 << order;
        for (int start = 0; start + size <= state.Length; start += size)
        {
            if (Array.TrueForAll(state[start..(start + size)], s => s == 0))
            {
                return true;
            }
        }

        return false;
    }
}

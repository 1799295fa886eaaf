using System;
using System.Linq;
using CsCheck;
using Virtio.Balloon.Device;

namespace Virtio.Balloon.Tests.Device;

/// <summary>
/// The inflate path's sort, and its fused run builder (bitmap or sort), equal a plain
/// <see cref="Array.Sort(Array)"/> and a linear merge.
/// </summary>
public class PfnSorterTests
{
    [Fact]
    public void Random_arrays_of_every_length_sort_like_Array_Sort()
    {
        Gen.Int[0, 1024].SelectMany(n => Gen.UInt[0, 1u << 22].Array[n]).Sample(keys => Check(keys), iter: 1000);
    }

    [Fact]
    public void Keys_that_differ_in_any_byte_sort_like_Array_Sort()
    {
        // Full 32-bit keys exercise all four digit positions; narrow ones let passes be skipped.
        Gen.UInt.Array[0, 600].Sample(keys => Check(keys), iter: 500);
        Gen.UInt[0, 255].Array[0, 600].Sample(keys => Check(keys), iter: 200);
        Gen.UInt[0xFF00_0000, 0xFF00_00FF].Array[0, 600].Sample(keys => Check(keys), iter: 200);
    }

    [Theory]
    [InlineData(256)]
    [InlineData(1000)]
    public void Ascending_descending_contiguous_and_duplicate_runs_sort_like_Array_Sort(int n)
    {
        var rng = new Random(n);
        uint[] ascending = new uint[n];
        for (int i = 0; i < n; i++)
        {
            ascending[i] = 5000 + (uint)i;
        }

        Check(ascending);
        Check([.. ascending.AsEnumerable().Reverse()]);
        Check(Array.ConvertAll(ascending, k => k / 3));                  // ascending with duplicates
        Check([.. Array.ConvertAll(ascending, k => k / 3).AsEnumerable().Reverse()]); // descending with duplicates: not strict
        uint[] mostly = (uint[])ascending.Clone();
        mostly[rng.Next(n)] = 7;                                        // one out of place
        Check(mostly);
        Check(new uint[n]);                                             // all equal
    }

    [Fact]
    public void Crowded_buckets_at_the_top_of_the_key_range_recurse_without_overflow()
    {
        var rng = new Random(11);
        uint[] keys = new uint[300];
        for (int i = 0; i < keys.Length; i++)
        {
            keys[i] = i % 10 == 0 ? (uint)rng.Next(100) : uint.MaxValue - (uint)rng.Next(5000);
        }

        Check(keys);
        Gen.Int[2, 600].SelectMany(n => Gen.UInt[uint.MaxValue - 100_000, uint.MaxValue].Array[n]).Sample(k => Check(k), iter: 200);
    }

    [Fact]
    public void Misaligned_and_sliced_spans_sort_in_place()
    {
        uint[] backing = new uint[300];
        var rng = new Random(3);
        for (int i = 0; i < backing.Length; i++)
        {
            backing[i] = (uint)rng.Next();
        }

        for (int offset = 0; offset < 9; offset++)
        {
            uint[] copy = (uint[])backing.Clone();
            Span<uint> slice = copy.AsSpan(offset, 257);
            uint[] expected = slice.ToArray();
            Array.Sort(expected);
            PfnSorter.Sort(slice, new uint[257]);
            Assert.Equal(expected, slice.ToArray());
            Assert.Equal(backing[..offset], copy[..offset]);            // nothing outside the slice moved
            Assert.Equal(backing[(offset + 257)..], copy[(offset + 257)..]);
        }
    }

    private static void Check(uint[] keys)
    {
        uint[] expected = (uint[])keys.Clone();
        Array.Sort(expected);
        uint[] actual = (uint[])keys.Clone();
        PfnSorter.Sort(actual, new uint[actual.Length]);
        Assert.Equal(expected, actual);

        var runs = new GuestPageRange[Math.Max(1, actual.Length)];
        int count = PageRangeMerger.Merge(actual, runs);

        // The device's fused path (bitmap for clustered keys, sort otherwise) gives exactly the same runs.
        var fused = new GuestPageRange[Math.Max(1, keys.Length)];
        uint[] input = (uint[])keys.Clone();
        int fusedCount = PfnRunBuilder.Build(input, new uint[input.Length], new ulong[PfnRunBuilder.BitmapWords(input.Length)], fused, out uint min, out uint max);
        Assert.Equal(runs[..count], fused[..fusedCount]);
        if (keys.Length > 0)
        {
            Assert.Equal(expected[0], min);
            Assert.Equal(expected[^1], max);
        }

        ulong covered = 0;
        ulong previousEnd = 0;
        for (int i = 0; i < count; i++)
        {
            Assert.True(i == 0 || runs[i].FirstPfn > previousEnd, "runs are separate and ascending");
            previousEnd = runs[i].EndPfn;
            covered += runs[i].PageCount;
        }

        Assert.Equal((ulong)new System.Collections.Generic.HashSet<uint>(keys).Count, covered); // every distinct PFN, once
    }
}

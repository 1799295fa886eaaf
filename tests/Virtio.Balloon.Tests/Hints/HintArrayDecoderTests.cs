using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Runtime.Intrinsics;
using Virtio.Balloon.Device;
using Virtio.Balloon.Migration;
using Virtio.Ring;

namespace Virtio.Balloon.Tests.Hints;

/// <summary>
/// The vectorized hint-array decoder equals the scalar reference: the same runs, the same outcome, the same stop
/// position, on random arrays of every length 0..1000, little- and big-endian, aligned and misaligned, with RAM in
/// two regions (so entries outside the vector window take the RAM map path). CI runs this class again with
/// AVX-512, then AVX2, then every hardware intrinsic disabled, so each vector width is checked.
/// </summary>
public sealed class HintArrayDecoderTests : IDisposable
{
    private const ulong LowRam = 256UL << 20;     // [0, 256 MiB)
    private const ulong HighRam = 4UL << 30;      // [4 GiB, 4 GiB + 256 MiB)
    private readonly GuestMemory _memory = new GuestMemoryBuilder().AddAllocatedRegion(0, LowRam).AddAllocatedRegion(HighRam, 256UL << 20).Build();
    private readonly GuestRamMap _ram;

    public HintArrayDecoderTests() => _ram = new GuestRamMap(_memory);

    public void Dispose() => _memory.Dispose();

    [Fact]
    public void The_widest_accelerated_path_is_reported()
    {
        // Not an assertion about speed: a record in the test log of which path the other tests ran.
        string width = Vector512.IsHardwareAccelerated ? "Vector512" : Vector256.IsHardwareAccelerated ? "Vector256"
            : Vector128.IsHardwareAccelerated ? "Vector128" : "scalar";
        Assert.False(string.IsNullOrEmpty(width));
        Console.WriteLine($"hint decoder path: {width}");
    }

    [Theory]
    [InlineData(false, 0)]
    [InlineData(true, 0)]
    [InlineData(false, 4)]
    [InlineData(true, 3)]
    public void Vectorized_decoding_equals_the_scalar_reference_at_every_length(bool bigEndian, int misalignment)
    {
        var random = new Random(1234 + misalignment + (bigEndian ? 100 : 0));
        var vector = new HintArrayDecoder(_ram, 64);
        var scalar = new HintArrayDecoder(_ram, 64) { ScalarOnly = true };
        for (int length = 0; length <= 1000; length++)
        {
            int shift = random.Next(12, 23);
            ulong[] addresses = RandomAddresses(random, length, shift);
            byte[] buffer = new byte[(length * 8) + misalignment];
            Span<byte> entries = buffer.AsSpan(misalignment, length * 8);
            WriteEntries(entries, addresses, bigEndian);

            (List<GuestPageRange> runs, bool valid, int stop) expected = Reference(addresses, shift);
            foreach (HintArrayDecoder decoder in new[] { vector, scalar })
            {
                (List<GuestPageRange> runs, bool valid, int stop) actual = DecodeAll(decoder, entries, shift, bigEndian);
                Assert.Equal(expected.runs, actual.runs);
                Assert.Equal((expected.valid, expected.stop), (actual.valid, actual.stop));
            }
        }
    }

    /// <summary>
    /// The direct path (4 MiB hints cleared straight into a migration bitmap, gathered per summary word) leaves the
    /// same bitmap, and stops at the same entry, as decoding into runs and handing them to the bitmap's
    /// <c>OnFreePageHints</c>: random arrays of every length 0..1000 in random batch sizes, little- and big-endian,
    /// misaligned, with RAM below the bitmap, RAM past its end, a partial last chunk and another RAM region.
    /// </summary>
    [Theory]
    [InlineData(false, 0)]
    [InlineData(true, 0)]
    [InlineData(false, 4)]
    [InlineData(true, 3)]
    public void Clearing_4_MiB_hints_straight_into_a_bitmap_equals_runs_through_the_sink(bool bigEndian, int misalignment)
    {
        ulong firstPfn = (16UL << 20) >> 12;
        ulong pages = ((HighRam + (102UL << 20)) >> 12) - firstPfn;
        using GuestMemory memory = new GuestMemoryBuilder().AddAllocatedRegion(0, 2UL << 30).AddAllocatedRegion(HighRam, 256UL << 20).Build();
        var ram = new GuestRamMap(memory);
        using var expected = new MigrationBitmap(firstPfn, pages);
        using var direct = new MigrationBitmap(firstPfn, pages);
        using var directScalar = new MigrationBitmap(firstPfn, pages);
        var runs = new HintArrayDecoder(ram, 64);
        var vector = new HintArrayDecoder(ram, 64);
        var scalar = new HintArrayDecoder(ram, 64) { ScalarOnly = true };
        Assert.True(HintArrayDecoder.CanDecodeIntoBitmap(22, direct));
        var random = new Random(777 + misalignment + (bigEndian ? 100 : 0));
        for (int length = 0; length <= 1000; length++)
        {
            ulong[] addresses = RandomChunkAddresses(random, length);
            if (random.Next(4) == 0)
            {
                random.Shuffle(addresses); // an unsorted array: lanes of many summary words
            }

            byte[] buffer = new byte[(length * 8) + misalignment];
            Span<byte> entries = buffer.AsSpan(misalignment, length * 8);
            WriteEntries(entries, addresses, bigEndian);

            expected.MarkAll();
            direct.MarkAll();
            directScalar.MarkAll();
            (List<GuestPageRange> decoded, bool valid, int stop) = DecodeAll(runs, entries, 22, bigEndian);
            expected.OnFreePageHints(2, decoded.ToArray());
            foreach ((HintArrayDecoder decoder, MigrationBitmap bitmap) in new[] { (vector, direct), (scalar, directScalar) })
            {
                decoder.BeginBitmap(bigEndian, bitmap);
                int position = 0;
                HintDecodeOutcome outcome = HintDecodeOutcome.Done;
                while (position < length && outcome == HintDecodeOutcome.Done)
                {
                    outcome = decoder.DecodeIntoBitmap(entries, ref position, Math.Min(length, position + random.Next(1, 300)));
                }

                Assert.Equal((valid, stop), (outcome == HintDecodeOutcome.Done, position));
                Assert.Equal(expected.CountMarked(), bitmap.CountMarked());
                for (ulong pfn = firstPfn; pfn < firstPfn + pages; pfn += 1023)
                {
                    Assert.Equal(expected.IsMarked(pfn), bitmap.IsMarked(pfn));
                }
            }
        }
    }

    private static void WriteEntries(Span<byte> entries, ulong[] addresses, bool bigEndian)
    {
        for (int i = 0; i < addresses.Length; i++)
        {
            if (bigEndian)
            {
                BinaryPrimitives.WriteUInt64BigEndian(entries[(8 * i)..], addresses[i]);
            }
            else
            {
                BinaryPrimitives.WriteUInt64LittleEndian(entries[(8 * i)..], addresses[i]);
            }
        }
    }

    /// <summary>Runs the decoder over a whole array the way the device does: flush on a full buffer, finish at the end.</summary>
    private static (List<GuestPageRange>, bool, int) DecodeAll(HintArrayDecoder decoder, ReadOnlySpan<byte> entries, int shift, bool bigEndian)
    {
        var runs = new List<GuestPageRange>();
        decoder.Begin(shift, bigEndian);
        int position = 0;
        while (true)
        {
            HintDecodeOutcome outcome = decoder.Decode(entries, ref position);
            if (outcome != HintDecodeOutcome.RunsFull)
            {
                decoder.Finish();
            }

            runs.AddRange(decoder.Runs.ToArray());
            decoder.ClearRuns();
            if (outcome != HintDecodeOutcome.RunsFull)
            {
                return (runs, outcome == HintDecodeOutcome.Done, position);
            }
        }
    }

    /// <summary>The specification in its plainest form: each entry aligned and inside one RAM region, contiguous entries joined.</summary>
    private static (List<GuestPageRange>, bool, int) Reference(ulong[] addresses, int shift)
    {
        ulong block = 1UL << shift;
        var runs = new List<GuestPageRange>();
        ulong start = 0;
        ulong count = 0;
        for (int i = 0; i < addresses.Length; i++)
        {
            ulong a = addresses[i];
            bool inRam = (a < LowRam && LowRam - a >= block) || (a >= HighRam && a - HighRam <= (256UL << 20) - block);
            if ((a & (block - 1)) != 0 || !inRam)
            {
                if (count > 0)
                {
                    runs.Add(new GuestPageRange(start >> 12, (count * block) >> 12));
                }

                return (runs, false, i);
            }

            if (count > 0 && a == start + (count * block))
            {
                count++;
            }
            else
            {
                if (count > 0)
                {
                    runs.Add(new GuestPageRange(start >> 12, (count * block) >> 12));
                }

                start = a;
                count = 1;
            }
        }

        if (count > 0)
        {
            runs.Add(new GuestPageRange(start >> 12, (count * block) >> 12));
        }

        return (runs, true, addresses.Length);
    }

    /// <summary>
    /// 4 MiB blocks as a fragmented guest reports them: ascending, consecutive or with gaps of up to 3 blocks (so vectors cross 256 MiB
    /// summary words), now and then a jump (below the bitmap, the other region, past the bitmap's end, its partial
    /// last chunk), and rarely a bad entry (misaligned, in the hole, near 2^64).
    /// </summary>
    private static ulong[] RandomChunkAddresses(Random random, int length)
    {
        const ulong Block = 4UL << 20;
        var result = new ulong[length];
        ulong next = (ulong)random.Next(512) * Block;
        int gaps = random.Next(1, 5); // 1: an idle guest's consecutive blocks
        for (int i = 0; i < length; i++)
        {
            int dice = random.Next(1000);
            ulong a = next + ((ulong)random.Next(gaps) * Block);
            if (dice >= 960 || a >= (2UL << 30))
            {
                a = random.Next(6) switch
                {
                    0 => (ulong)random.Next(4) * Block,                                  // below the bitmap (16 MiB)
                    1 or 2 => HighRam + ((ulong)random.Next(64) * Block),               // the other region, to its end
                    3 => (ulong)random.Next(512) * Block,                                // back into the window
                    4 => dice >= 995 ? (ulong)random.Next(1, 1 << 20) * 4096 : 0,       // rarely misaligned
                    _ => dice >= 995 ? (3UL << 30) + ((ulong)random.Next(4) * Block) : ulong.MaxValue - Block + 1, // the hole, or 2^64 bait
                };
            }

            result[i] = a;
            next = a < (2UL << 30) ? a + Block : (ulong)random.Next(512) * Block;
        }

        return result;
    }

    /// <summary>Mostly runs of contiguous blocks with gaps, in both RAM regions; now and then a bad entry (misaligned, outside RAM, near 2^64).</summary>
    private static ulong[] RandomAddresses(Random random, int length, int shift)
    {
        ulong block = 1UL << shift;
        var result = new ulong[length];
        ulong regionBlocks = (256UL << 20) / block;
        ulong next = 0;
        for (int i = 0; i < length; i++)
        {
            int dice = random.Next(1000);
            if (dice < 700 && i > 0 && next + block <= LowRam)
            {
                result[i] = next; // continue the run
            }
            else if (dice < 990)
            {
                ulong baseAddress = random.Next(4) == 0 ? HighRam : 0;
                result[i] = baseAddress + ((ulong)random.NextInt64((long)regionBlocks) * block);
            }
            else
            {
                result[i] = random.Next(3) switch
                {
                    0 => ((ulong)random.NextInt64(1 << 20) * block) + 4096 + (ulong)random.Next(1, 4096), // misaligned
                    1 => LowRam + ((ulong)random.Next(1, 100) * block),                                 // the hole
                    _ => ulong.MaxValue - block + 1,                                                   // overflow bait
                };
            }

            next = result[i] + block;
        }

        return result;
    }
}

/// <summary>
/// Proves that CI's ISA variants really change the path: with <c>VIRTIO_EXPECT_VECTOR_WIDTH</c> set (512, 256,
/// 128 or 0 for scalar), the widest accelerated width must be that one. Without the variable it checks nothing
/// beyond reporting the width.
/// </summary>
public sealed class VectorPathTests
{
    [Fact]
    public void The_expected_vector_width_is_the_one_the_runtime_accelerates()
    {
        int widest = Vector512.IsHardwareAccelerated ? 512 : Vector256.IsHardwareAccelerated ? 256 : Vector128.IsHardwareAccelerated ? 128 : 0;
        string? expected = Environment.GetEnvironmentVariable("VIRTIO_EXPECT_VECTOR_WIDTH");
        if (expected is not null)
        {
            Assert.Equal(int.Parse(expected, System.Globalization.CultureInfo.InvariantCulture), widest);
        }

        Assert.Contains(widest, new[] { 0, 128, 256, 512 });
    }
}

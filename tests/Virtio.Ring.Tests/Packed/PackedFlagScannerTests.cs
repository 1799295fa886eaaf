using System;
using System.Buffers.Binary;
using System.Runtime.Intrinsics;
using Virtio.Ring.Packed;

namespace Virtio.Ring.Tests.Packed;

/// <summary>The vectorized flag scans give exactly the scalar scan's answer, on every input.</summary>
public unsafe class PackedFlagScannerTests
{
    [Fact]
    public void Vector_and_scalar_scans_agree_on_random_cache_lines()
    {
        var rng = new Random(77);
        byte[] line = new byte[64];
        ushort[] interesting = [0, 0x0080, 0x8000, 0x8080, 0x0081, 0x8003, 0x0087, 0x00FF, 0xFF7F, 0xFFFF];
        fixed (byte* p = line)
        {
            for (int round = 0; round < 20_000; round++)
            {
                rng.NextBytes(line);
                for (int d = 0; d < 4; d++)
                {
                    if (rng.Next(3) != 0)
                    {
                        BinaryPrimitives.WriteUInt16LittleEndian(line.AsSpan(16 * d + 14), interesting[rng.Next(interesting.Length)]);
                    }
                }

                foreach (bool wrap in new[] { true, false })
                {
                    int expected = PackedFlagScanner.ScanScalar(p, 4, wrap, out ulong expectedFlags);
                    if (Vector256.IsHardwareAccelerated)
                    {
                        Assert.Equal(expected, PackedFlagScanner.ScanVector256(p, wrap, out ulong f256));
                        Assert.Equal(expectedFlags, f256);
                    }

                    if (Vector512.IsHardwareAccelerated)
                    {
                        Assert.Equal(expected, PackedFlagScanner.ScanVector512(p, wrap, out ulong f512));
                        Assert.Equal(expectedFlags, f512);
                    }

                    Assert.Equal(expected, PackedFlagScanner.Scan(p, 4, wrap, out ulong chosen));
                    Assert.Equal(expectedFlags, chosen);
                }
            }
        }
    }

    [Theory]
    [InlineData(true, new ushort[] { 0x0080, 0x0081, 0x0082, 0x0080 }, 4)]
    [InlineData(true, new ushort[] { 0x0080, 0x8080, 0x0080, 0x0080 }, 1)] // second is used, not available
    [InlineData(false, new ushort[] { 0x8000, 0x8001, 0x0080, 0x8000 }, 2)] // lap 2: third still from lap 1
    [InlineData(true, new ushort[] { 0x0000, 0x0080, 0x0080, 0x0080 }, 0)]
    public void The_run_stops_at_the_first_descriptor_not_available(bool wrap, ushort[] flags, int run)
    {
        byte[] line = new byte[64];
        for (int d = 0; d < 4; d++)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(line.AsSpan(16 * d + 14), flags[d]);
        }

        fixed (byte* p = line)
        {
            Assert.Equal(run, PackedFlagScanner.Scan(p, 4, wrap, out ulong packed));
            for (int d = 0; d < run; d++)
            {
                Assert.Equal(flags[d], (ushort)(packed >> (16 * d)));
            }

            Assert.Equal(0UL, run == 4 ? 0UL : packed >> (16 * run));
            Assert.Equal(Math.Min(run, 2), PackedFlagScanner.Scan(p, 2, wrap, out _));
        }
    }

    [Theory]
    [InlineData(1, 0)]
    [InlineData(8, 0)]
    [InlineData(16, 4)]
    [InlineData(64, 16)]
    [InlineData(100, 24)]
    [InlineData(256, 32)]
    [InlineData(32768, 32)]
    public void Prefetch_distance_is_whole_lines_within_a_quarter_of_the_ring(int queueSize, int expected)
    {
        int slots = PackedFlagScanner.PrefetchSlots(queueSize);
        Assert.Equal(expected, slots);
        Assert.Equal(0, slots % PackedFlagScanner.MaxRun);
        Assert.True(slots <= queueSize / 4, "one subtraction of Q keeps position + distance inside the ring");
    }
}

using System;
using CsCheck;
using Virtio.Balloon.Hints;

namespace Virtio.Balloon.Tests.Hints;

/// <summary>
/// Vectorized packing equals the scalar reference: every length 0..1000, random PFNs, misaligned source and
/// destination spans, both byte orders, in place. CI runs the class again with AVX-512, then AVX2, then every
/// hardware intrinsic disabled, so each vector width is checked against the scalar reference.
/// </summary>
public class HintPackingTests
{
    [Fact]
    public void Addresses_pack_like_the_scalar_reference_for_every_length_and_both_byte_orders()
    {
        var rng = new Random(64);
        for (int n = 0; n <= 1000; n++)
        {
            ulong[] pfns = new ulong[n + 3];
            for (int i = 0; i < pfns.Length; i++)
            {
                pfns[i] = (ulong)rng.NextInt64(0, 1L << 40);
            }

            foreach (bool bigEndian in new[] { false, true })
            {
                int offset = n % 3;                          // misaligned source
                ReadOnlySpan<ulong> source = pfns.AsSpan(offset, n);
                byte[] expected = new byte[(8 * n) + 5];
                byte[] actual = new byte[(8 * n) + 5];
                HintPacking.PackAddressesScalar(source, expected.AsSpan(1), bigEndian);
                Assert.Equal(8 * n, HintPacking.PackAddresses(source, actual.AsSpan(1), bigEndian)); // misaligned target
                Assert.Equal(expected, actual);
            }
        }
    }

    /// <summary>The driver packs a pool array in place (PFNs in, addresses out, same memory): same output as the scalar reference.</summary>
    [Fact]
    public void Packing_in_place_equals_the_scalar_reference()
    {
        var rng = new Random(65);
        for (int n = 0; n <= 1000; n++)
        {
            ulong[] pfns = new ulong[n];
            for (int i = 0; i < n; i++)
            {
                pfns[i] = (ulong)rng.NextInt64(0, 1L << 40);
            }

            foreach (bool bigEndian in new[] { false, true })
            {
                byte[] expected = new byte[8 * n];
                HintPacking.PackAddressesScalar(pfns, expected, bigEndian);
                ulong[] inPlace = (ulong[])pfns.Clone();
                Span<byte> bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(inPlace.AsSpan());
                HintPacking.PackAddresses(inPlace, bytes, bigEndian);
                Assert.Equal(expected, bytes.ToArray());
            }
        }
    }

    [Fact]
    public void A_be64_address_is_the_byte_reverse_of_its_le64()
    {
        byte[] le = new byte[8];
        byte[] be = new byte[8];
        HintPacking.PackAddresses([0x12345678], le);
        HintPacking.PackAddresses([0x12345678], be, bigEndian: true);
        Assert.Equal(new byte[] { 0x00, 0x80, 0x67, 0x45, 0x23, 0x01, 0, 0 }, le); // 0x12345678 << 12 = 0x1_2345_6780_00
        Assert.Equal(new byte[] { 0, 0, 0x01, 0x23, 0x45, 0x67, 0x80, 0x00 }, be);
    }

    [Fact]
    public void Le32_pfns_pack_like_the_scalar_reference()
    {
        Gen.ULong[0, uint.MaxValue].Array[0, 1000].Sample(pfns =>
        {
            byte[] expected = new byte[4 * pfns.Length + 3];
            byte[] actual = new byte[4 * pfns.Length + 3];
            HintPacking.PackPfnsLe32Scalar(pfns, expected.AsSpan(3));
            HintPacking.PackPfnsLe32(pfns, actual.AsSpan(3));
            Assert.Equal(expected, actual);
        }, iter: 500);
    }

    [Fact]
    public void A_pfn_beyond_32_bits_is_refused_wherever_it_sits()
    {
        for (int at = 0; at < 40; at++)
        {
            ulong[] pfns = new ulong[40];
            pfns[at] = 1UL << 32;
            Assert.Throws<ArgumentException>(() => HintPacking.PackPfnsLe32(pfns, new byte[160]));
        }
    }

    [Fact]
    public void A_destination_too_short_is_refused()
    {
        Assert.Throws<ArgumentException>(() => HintPacking.PackAddresses(new ulong[3], new byte[23]));
        Assert.Throws<ArgumentException>(() => HintPacking.PackPfnsLe32(new ulong[3], new byte[11]));
    }
}

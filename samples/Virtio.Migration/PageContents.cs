using System;
using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace Virtio.Migration;

/// <summary>What the simulated guest writes into a page: a seeded pattern unique to (seed, page, version), and the hash both ends compare.</summary>
public static class PageContents
{
    /// <summary>Bytes in a page.</summary>
    public const int PageSize = 4096;

    /// <summary>Fills <paramref name="page"/> with version <paramref name="version"/> of page <paramref name="pfn"/>'s contents.</summary>
    public static void Write(Span<byte> page, int seed, ulong pfn, ulong version)
    {
        Span<ulong> words = MemoryMarshal.Cast<byte, ulong>(page);
        ulong x = Mix(((ulong)(uint)seed << 32) ^ (pfn * 0x9E3779B97F4A7C15UL) ^ (version * 0xBF58476D1CE4E5B9UL));
        words.Fill(x);
        words[0] = pfn;
        words[1] = version;
        words[^1] = Mix(x ^ pfn);
    }

    /// <summary>The 64-bit hash the integrity check compares (XXH3).</summary>
    public static ulong Hash(ReadOnlySpan<byte> page) => XxHash3.HashToUInt64(page);

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}

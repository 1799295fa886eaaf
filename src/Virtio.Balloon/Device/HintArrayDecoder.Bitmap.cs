using System;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Virtio.Balloon.Hints;
using Virtio.Balloon.Migration;

namespace Virtio.Balloon.Device;

/// <summary>
/// The direct path for the case a migration lives on: 4 MiB blocks applied to a <see cref="MigrationBitmap"/>.
/// A 4 MiB block is exactly one of the bitmap's chunks, so instead of coalescing entries into runs and handing the
/// runs to the sink, each validated entry becomes a chunk bit, and the bits of one summary word (64 chunks, 256 MiB)
/// are gathered in a register and written once: coalescing by the word instead of by the run, which costs the same
/// whatever the guest's fragmentation.
/// <para>
/// <b>Vectorized.</b> A vector of entries is validated as in <see cref="Decode"/> (aligned, inside the window where
/// both RAM and the bitmap's whole chunks lie), turned into chunk numbers (subtract, shift), and into one bit per
/// lane (a variable shift). When its lanes fall in one summary word, or in two (a sorted array crossing a 256 MiB
/// line), their bits are OR-reduced into one mask per word; lanes of more words (an unsorted array) are gathered
/// lane by lane. Entries outside the window (another RAM region, a partial last chunk, beyond the bitmap) take
/// the scalar step, which checks them against the RAM map and clears them through <see cref="MigrationBitmap.Clear"/>.
/// The result is the same bitmap <see cref="Decode"/> followed by <see cref="MigrationBitmap.OnFreePageHints"/>
/// leaves, and the same stop position on an invalid entry.
/// </para>
/// </summary>
internal sealed partial class HintArrayDecoder
{
    private const int ChunkShift = 22; // MigrationBitmap.ChunkPages pages of 4 KiB

    private MigrationBitmap? _bitmap;
    private ulong _chunkBase;          // guest physical address of the bitmap's first page
    private ulong _chunkFirst;         // the direct window: RAM's largest run and the bitmap's whole chunks, intersected
    private ulong _chunkSpan;          // lanes are direct when (address - _chunkFirst) <= _chunkSpan
    private bool _chunkWindowUsable;

    /// <summary>True when an array of blocks of <c>2^blockShift</c> bytes can be cleared into <paramref name="bitmap"/> directly.</summary>
    public static bool CanDecodeIntoBitmap(int blockShift, MigrationBitmap bitmap) =>
        blockShift == ChunkShift && bitmap.FirstPfn <= (ulong.MaxValue >> PageShift) - (bitmap.PageCount + MigrationBitmap.ChunkPages);

    /// <summary>Starts an array of 4 MiB blocks to be cleared straight from <paramref name="bitmap"/> (see <see cref="CanDecodeIntoBitmap"/>).</summary>
    public void BeginBitmap(bool bigEndian, MigrationBitmap bitmap)
    {
        Debug.Assert(CanDecodeIntoBitmap(ChunkShift, bitmap), "checked by the caller");
        Begin(ChunkShift, bigEndian);
        _bitmap = bitmap;
        _chunkBase = bitmap.FirstPfn << PageShift;
        ulong first = Math.Max(_windowFirst, _chunkBase);
        ulong end = Math.Min(_windowFirst + _windowBytes, _chunkBase + (bitmap.WholeChunks << ChunkShift));
        _chunkWindowUsable = end > first && end - first >= _blockBytes;
        _chunkFirst = first;
        _chunkSpan = _chunkWindowUsable ? end - first - _blockBytes : 0;
    }

    /// <summary>
    /// Validates the entries of <paramref name="entries"/> from <paramref name="position"/> up to
    /// <paramref name="end"/> (entry indices) and clears their chunks from the bitmap given to
    /// <see cref="BeginBitmap"/>. Returns <see cref="HintDecodeOutcome.Done"/> at <paramref name="end"/>, or
    /// <see cref="HintDecodeOutcome.Invalid"/> with <paramref name="position"/> at the first invalid entry (every
    /// entry before it was applied).
    /// </summary>
    public HintDecodeOutcome DecodeIntoBitmap(ReadOnlySpan<byte> entries, ref int position, int end)
    {
        Debug.Assert(_bitmap is not null && entries.Length % 8 == 0 && end <= entries.Length / 8, "BeginBitmap, whole entries");
        MigrationBitmap bitmap = _bitmap!;
        ref ulong first = ref MemoryMarshal.GetReference(MemoryMarshal.Cast<byte, ulong>(entries));
        bool vectors = !ScalarOnly && _chunkWindowUsable;
        ulong word = ulong.MaxValue; // the summary word being gathered, and its bits
        ulong mask = 0;
        int i = position;
        try
        {
            while (i < end)
            {
                if (vectors && Vector512.IsHardwareAccelerated && i + 8 <= end)
                {
                    int before = i;
                    Bitmap512(ref first, ref i, end, ref word, ref mask);
                    if (i == before && !ScalarChunkSteps(ref first, ref i, 8, ref word, ref mask))
                    {
                        return HintDecodeOutcome.Invalid; // the vector at i had a lane outside the window
                    }
                }
                else if (vectors && Vector256.IsHardwareAccelerated && i + 4 <= end)
                {
                    int before = i;
                    Bitmap256(ref first, ref i, end, ref word, ref mask);
                    if (i == before && !ScalarChunkSteps(ref first, ref i, 4, ref word, ref mask))
                    {
                        return HintDecodeOutcome.Invalid;
                    }
                }
                else if (vectors && Vector128.IsHardwareAccelerated && i + 2 <= end)
                {
                    int before = i;
                    Bitmap128(ref first, ref i, end, ref word, ref mask);
                    if (i == before && !ScalarChunkSteps(ref first, ref i, 2, ref word, ref mask))
                    {
                        return HintDecodeOutcome.Invalid;
                    }
                }
                else
                {
                    if (!StepChunk(Unsafe.Add(ref first, i), ref word, ref mask))
                    {
                        return HintDecodeOutcome.Invalid;
                    }

                    i++;
                }
            }

            return HintDecodeOutcome.Done;
        }
        finally
        {
            bitmap.ClearChunkWord(word, mask);
            position = i;
        }
    }
    /// <summary>
    /// The Vector512 loop over as many whole vectors as pass the direct window check; stops at
    /// <paramref name="end"/> or before a vector with a lane outside the window (the caller takes it entry by entry).
    /// </summary>
    // Fully optimized from the first call: a report calls it a few times, each a long loop, so tiering would run it as
    // on-stack-replacement code for many reports (a whole 1 TiB report measured 1.37 ms that way, 1.04 ms like this).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Bitmap512(ref ulong first, ref int position, int end, ref ulong word, ref ulong mask)
    {
        MigrationBitmap bitmap = _bitmap!;
        Vector512<ulong> align = Vector512.Create(_alignMask);
        Vector512<ulong> windowFirst = Vector512.Create(_chunkFirst);
        Vector512<ulong> windowSpan = Vector512.Create(_chunkSpan);
        Vector512<ulong> chunkBase = Vector512.Create(_chunkBase);
        Vector512<ulong> low6 = Vector512.Create(63UL);
        Vector512<byte> reverse = Vector512.Create(HintPacking.ReverseEachUInt64Bytes512());
        bool swap = _swap;
        ulong w = word;
        ulong m = mask;
        int i = position;
        while (i + 8 <= end)
        {
            Vector512<ulong> v = Vector512.LoadUnsafe(ref first, (nuint)i);
            if (swap)
            {
                v = Vector512.Shuffle(v.AsByte(), reverse).AsUInt64();
            }

            if (((v & align) | Vector512.GreaterThan(v - windowFirst, windowSpan)) != Vector512<ulong>.Zero)
            {
                break;
            }

            Vector512<ulong> chunks = Vector512.ShiftRightLogical(v - chunkBase, ChunkShift);
            Vector512<ulong> words = Vector512.ShiftRightLogical(chunks, 6);
            Vector512<ulong> bits = ShiftOne(chunks & low6);
            ulong w0 = words.ToScalar();
            Vector512<ulong> inFirst = Vector512.Equals(words, Vector512.Create(w0));
            if (inFirst == Vector512<ulong>.AllBitsSet)
            {
                Gather(bitmap, ref w, ref m, w0, OrReduce(bits)); // the lanes share one summary word
            }
            else
            {
                ulong w7 = words.GetElement(7);
                if ((inFirst | Vector512.Equals(words, Vector512.Create(w7))) == Vector512<ulong>.AllBitsSet)
                {
                    // A sorted array crossing a 256 MiB line: the lanes of the first word, then those of the last.
                    Gather(bitmap, ref w, ref m, w0, OrReduce(bits & inFirst));
                    Gather(bitmap, ref w, ref m, w7, OrReduce(Vector512.AndNot(bits, inFirst)));
                }
                else
                {
                    for (int lane = 0; lane < 8; lane++)
                    {
                        Gather(bitmap, ref w, ref m, words.GetElement(lane), bits.GetElement(lane));
                    }
                }
            }

            i += 8;
        }

        word = w;
        mask = m;
        position = i;

        static Vector512<ulong> ShiftOne(Vector512<ulong> counts) => Avx512F.IsSupported
            ? Avx512F.ShiftLeftLogicalVariable(Vector512<ulong>.One, counts)
            : Vector512.Create(ShiftOne256(counts.GetLower()), ShiftOne256(counts.GetUpper()));

        static ulong OrReduce(Vector512<ulong> x) => OrReduce256(x.GetLower() | x.GetUpper());
    }

    /// <summary>The Vector256 loop (machines without AVX-512), as <see cref="Bitmap512"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // as Bitmap512
    private void Bitmap256(ref ulong first, ref int position, int end, ref ulong word, ref ulong mask)
    {
        MigrationBitmap bitmap = _bitmap!;
        Vector256<ulong> align = Vector256.Create(_alignMask);
        Vector256<ulong> windowFirst = Vector256.Create(_chunkFirst);
        Vector256<ulong> windowSpan = Vector256.Create(_chunkSpan);
        Vector256<ulong> chunkBase = Vector256.Create(_chunkBase);
        Vector256<ulong> low6 = Vector256.Create(63UL);
        Vector256<byte> reverse = Vector256.Create(HintPacking.ReverseEachUInt64Bytes512()[..32]);
        bool swap = _swap;
        ulong w = word;
        ulong m = mask;
        int i = position;
        while (i + 4 <= end)
        {
            Vector256<ulong> v = Vector256.LoadUnsafe(ref first, (nuint)i);
            if (swap)
            {
                v = Vector256.Shuffle(v.AsByte(), reverse).AsUInt64();
            }

            if (((v & align) | Vector256.GreaterThan(v - windowFirst, windowSpan)) != Vector256<ulong>.Zero)
            {
                break;
            }

            Vector256<ulong> chunks = Vector256.ShiftRightLogical(v - chunkBase, ChunkShift);
            Vector256<ulong> words = Vector256.ShiftRightLogical(chunks, 6);
            Vector256<ulong> bits = ShiftOne256(chunks & low6);
            ulong w0 = words.ToScalar();
            Vector256<ulong> inFirst = Vector256.Equals(words, Vector256.Create(w0));
            if (inFirst == Vector256<ulong>.AllBitsSet)
            {
                Gather(bitmap, ref w, ref m, w0, OrReduce256(bits));
            }
            else
            {
                ulong w3 = words.GetElement(3);
                if ((inFirst | Vector256.Equals(words, Vector256.Create(w3))) == Vector256<ulong>.AllBitsSet)
                {
                    Gather(bitmap, ref w, ref m, w0, OrReduce256(bits & inFirst));
                    Gather(bitmap, ref w, ref m, w3, OrReduce256(Vector256.AndNot(bits, inFirst)));
                }
                else
                {
                    for (int lane = 0; lane < 4; lane++)
                    {
                        Gather(bitmap, ref w, ref m, words.GetElement(lane), bits.GetElement(lane));
                    }
                }
            }

            i += 4;
        }

        word = w;
        mask = m;
        position = i;
    }

    /// <summary>
    /// The Vector128 loop (ARM64's width, or x86 without AVX2), as <see cref="Bitmap512"/>: two entries validated and
    /// turned into chunk numbers together, their bits gathered lane by lane (two lanes are not worth a reduction).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // as Bitmap512
    private void Bitmap128(ref ulong first, ref int position, int end, ref ulong word, ref ulong mask)
    {
        MigrationBitmap bitmap = _bitmap!;
        Vector128<ulong> align = Vector128.Create(_alignMask);
        Vector128<ulong> windowFirst = Vector128.Create(_chunkFirst);
        Vector128<ulong> windowSpan = Vector128.Create(_chunkSpan);
        Vector128<ulong> chunkBase = Vector128.Create(_chunkBase);
        Vector128<byte> reverse = Vector128.Create(HintPacking.ReverseEachUInt64Bytes512()[..16]);
        bool swap = _swap;
        ulong w = word;
        ulong m = mask;
        int i = position;
        while (i + 2 <= end)
        {
            Vector128<ulong> v = Vector128.LoadUnsafe(ref first, (nuint)i);
            if (swap)
            {
                v = Vector128.Shuffle(v.AsByte(), reverse).AsUInt64();
            }

            if (((v & align) | Vector128.GreaterThan(v - windowFirst, windowSpan)) != Vector128<ulong>.Zero)
            {
                break;
            }

            Vector128<ulong> chunks = Vector128.ShiftRightLogical(v - chunkBase, ChunkShift);
            ulong c0 = chunks.ToScalar();
            ulong c1 = chunks.GetElement(1);
            Gather(bitmap, ref w, ref m, c0 >> 6, 1UL << (int)c0); // C# takes a 64-bit shift's count mod 64
            Gather(bitmap, ref w, ref m, c1 >> 6, 1UL << (int)c1);
            i += 2;
        }

        word = w;
        mask = m;
        position = i;
    }

    /// <summary>A vector with a lane outside the direct window: its entries one by one.</summary>
    private bool ScalarChunkSteps(ref ulong first, ref int i, int lanes, ref ulong word, ref ulong mask)
    {
        for (int end = i + lanes; i < end; i++)
        {
            if (!StepChunk(Unsafe.Add(ref first, i), ref word, ref mask))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// One entry (the scalar reference, and entries outside the window): validate; a chunk inside the direct window
    /// is gathered, any other block in RAM goes through <see cref="MigrationBitmap.Clear"/>, which clips it to the
    /// bitmap and clears a partial chunk page by page.
    /// </summary>
    private bool StepChunk(ulong raw, ref ulong word, ref ulong mask)
    {
        ulong address = _swap ? BinaryPrimitives.ReverseEndianness(raw) : raw;
        if ((address & _alignMask) != 0)
        {
            return false;
        }

        if (_chunkWindowUsable && address - _chunkFirst <= _chunkSpan)
        {
            ulong chunk = (address - _chunkBase) >> ChunkShift;
            Gather(_bitmap!, ref word, ref mask, chunk >> 6, 1UL << (int)chunk);
            return true;
        }

        bool inWindow = _windowUsable && address - _windowFirst <= _windowSpan;
        var block = new GuestPageRange(address >> PageShift, _blockBytes >> PageShift);
        if (!inWindow && !_ram.Contains(block))
        {
            return false;
        }

        _bitmap!.Clear(block);
        return true;
    }

    /// <summary>Adds <paramref name="bits"/> of summary word <paramref name="next"/> to the gathered mask, writing the gathered word out first when it is another.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Gather(MigrationBitmap bitmap, ref ulong word, ref ulong mask, ulong next, ulong bits)
    {
        if (next != word)
        {
            bitmap.ClearChunkWord(word, mask);
            word = next;
            mask = 0;
        }

        mask |= bits;
    }

    private static Vector256<ulong> ShiftOne256(Vector256<ulong> counts) => Avx2.IsSupported
        ? Avx2.ShiftLeftLogicalVariable(Vector256<ulong>.One, counts)
        : Vector256.Create(1UL << (int)counts.GetElement(0), 1UL << (int)counts.GetElement(1), 1UL << (int)counts.GetElement(2), 1UL << (int)counts.GetElement(3));

    private static ulong OrReduce256(Vector256<ulong> x)
    {
        Vector128<ulong> half = x.GetLower() | x.GetUpper();
        return half.ToScalar() | half.GetElement(1);
    }
}

using System;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Virtio.Balloon.Hints;

namespace Virtio.Balloon.Device;

/// <summary>What <see cref="HintArrayDecoder.Decode"/> stopped at.</summary>
internal enum HintDecodeOutcome
{
    /// <summary>Every entry was decoded.</summary>
    Done,

    /// <summary>The run buffer is nearly full: take <see cref="HintArrayDecoder.Runs"/>, clear, call again.</summary>
    RunsFull,

    /// <summary>The entry at the returned position is not block-aligned or not inside guest RAM; decoding stopped there.</summary>
    Invalid,
}

/// <summary>
/// The device's hot path for the hint-array protocol: turns an array of guest physical addresses of free blocks
/// (le64, or be64 from a big-endian legacy peer) into coalesced runs of pages, validating every entry (aligned to
/// the block size, the whole block inside guest RAM). Each entry is read from guest memory once, into a register,
/// and only the validated value is used.
/// <para>
/// <b>Vectorized.</b> Vector512, Vector256 or Vector128 (whichever the hardware accelerates) loads a vector of
/// entries and, beside it, the same vector shifted back by one entry (an unaligned load at <c>i - 1</c>); one
/// compare gives the alignment and RAM check of every lane against the largest RAM run, another gives which lanes
/// continue their predecessor. A vector whose lanes all continue the open run costs a few instructions; lanes that
/// start a run are found by a mask scan, so the work per vector is proportional to the runs it ends, not to its
/// entries. A lane that fails the window check falls back to the scalar step, which checks against the whole RAM
/// map, so the output (runs, and the position of an invalid entry) is identical to <see cref="ScalarOnly"/>.
/// </para>
/// </summary>
internal sealed partial class HintArrayDecoder
{
    private const int PageShift = 12;

    private readonly GuestRamMap _ram;
    private readonly GuestPageRange[] _runs;
    private readonly ulong _windowFirst;      // first address of the largest RAM run
    private readonly ulong _windowBytes;      // its length
    private int _count;
    private int _blockShift;
    private ulong _blockBytes;
    private ulong _alignMask;
    private ulong _windowSpan;                // lanes are valid when (address - _windowFirst) <= _windowSpan
    private bool _windowUsable;
    private bool _swap;
    private bool _open;
    private ulong _runStart;
    private ulong _runBlocks;

    public HintArrayDecoder(GuestRamMap ram, int runCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(runCapacity, 2 * MaxRunsPerStep);
        _ram = ram;
        _runs = new GuestPageRange[runCapacity];
        (ulong first, ulong end) = ram.LargestRun;
        _windowFirst = first << PageShift;
        _windowBytes = (end - first) << PageShift;
    }

    /// <summary>The most runs one step can emit (a Vector512 of 8 entries that all start runs, plus the one it closes).</summary>
    public static int MaxRunsPerStep => 9;

    /// <summary>Decode entry by entry with no vector at all (the scalar reference; tests and benchmarks).</summary>
    public bool ScalarOnly { get; set; }

    /// <summary>The runs decoded since the last <see cref="ClearRuns"/>.</summary>
    public ReadOnlySpan<GuestPageRange> Runs => _runs.AsSpan(0, _count);

    /// <summary>The block size of the current array, in bytes.</summary>
    public ulong BlockBytes => _blockBytes;

    /// <summary>Starts an array of blocks of <c>2^blockShift</c> bytes (12 = 4 KiB .. 30 = 1 GiB).</summary>
    public void Begin(int blockShift, bool bigEndian)
    {
        Debug.Assert(blockShift is >= PageShift and <= 30, "the device validated the block size");
        _blockShift = blockShift;
        _blockBytes = 1UL << blockShift;
        _alignMask = _blockBytes - 1;
        _windowUsable = _windowBytes >= _blockBytes;
        _windowSpan = _windowUsable ? _windowBytes - _blockBytes : 0;
        _swap = bigEndian == BitConverter.IsLittleEndian;
        _open = false;
        _count = 0;
    }

    /// <summary>Forgets the runs taken (the open run, if any, carries on).</summary>
    public void ClearRuns() => _count = 0;

    /// <summary>Closes the open run (end of the array): it joins <see cref="Runs"/>. Leaves room: callers flush at <see cref="HintDecodeOutcome.RunsFull"/>.</summary>
    public void Finish()
    {
        if (_open)
        {
            Emit();
            _open = false;
        }
    }

    /// <summary>
    /// Decodes the 8-byte entries of <paramref name="entries"/> from <paramref name="position"/> (an entry index)
    /// until the end, a nearly full run buffer, or an invalid entry (left at <paramref name="position"/>).
    /// </summary>
    public HintDecodeOutcome Decode(ReadOnlySpan<byte> entries, ref int position)
    {
        Debug.Assert(entries.Length % 8 == 0, "whole entries");
        ReadOnlySpan<ulong> values = MemoryMarshal.Cast<byte, ulong>(entries);
        ref ulong first = ref MemoryMarshal.GetReference(values);
        int n = values.Length;
        int limit = _runs.Length - MaxRunsPerStep;
        int i = position;
        bool vectors = !ScalarOnly && _windowUsable;
        try
        {
            while (i < n)
            {
                if (_count > limit)
                {
                    return HintDecodeOutcome.RunsFull;
                }

                if (i == 0 || !vectors)
                {
                    if (!Step(Unsafe.Add(ref first, i)))
                    {
                        return HintDecodeOutcome.Invalid;
                    }

                    i++;
                }
                else if (Vector512.IsHardwareAccelerated && i + 8 <= n)
                {
                    int before = i;
                    Run512(ref first, ref i, n, limit);
                    if (i == before && !ScalarSteps(ref first, ref i, 8))
                    {
                        return HintDecodeOutcome.Invalid; // the vector at i had a lane outside the window
                    }
                }
                else if (Vector256.IsHardwareAccelerated && i + 4 <= n)
                {
                    int before = i;
                    Run256(ref first, ref i, n, limit);
                    if (i == before && !ScalarSteps(ref first, ref i, 4))
                    {
                        return HintDecodeOutcome.Invalid; // the vector at i had a lane outside the window
                    }
                }
                else if (Vector128.IsHardwareAccelerated && i + 2 <= n)
                {
                    if (!Step128(ref first, i))
                    {
                        if (!ScalarSteps(ref first, ref i, 2))
                        {
                            return HintDecodeOutcome.Invalid;
                        }

                        continue;
                    }

                    i += 2;
                }
                else
                {
                    if (!Step(Unsafe.Add(ref first, i)))
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
            position = i;
        }
    }

    /// <summary>
    /// The Vector512 loop over as many whole vectors as pass the window check, with the run state in locals (in
    /// fields, every run would be a chain of stores and reloads through <c>this</c>): stops at the end, at a
    /// nearly full run buffer, or before a vector with a lane outside the window (which the caller then takes
    /// entry by entry). Emits exactly the runs the scalar <see cref="Step"/> would.
    /// </summary>
    private void Run512(ref ulong first, ref int position, int n, int limit)
    {
        Span<ulong> lanes = stackalloc ulong[8];
        ref ulong lane0 = ref MemoryMarshal.GetReference(lanes);
        GuestPageRange[] runs = _runs;
        Vector512<ulong> align = Vector512.Create(_alignMask);
        Vector512<ulong> windowFirst = Vector512.Create(_windowFirst);
        Vector512<ulong> windowSpan = Vector512.Create(_windowSpan);
        Vector512<ulong> block = Vector512.Create(_blockBytes);
        Vector512<byte> reverse = Vector512.Create(HintPacking.ReverseEachUInt64Bytes512());
        bool swap = _swap;
        int shift = _blockShift - PageShift;
        ulong runStart = _runStart;
        ulong runBlocks = _runBlocks;
        int count = _count;
        int i = position;
        while (i + 8 <= n && count <= limit)
        {
            Vector512<ulong> v = Vector512.LoadUnsafe(ref first, (nuint)i);
            Vector512<ulong> previous = Vector512.LoadUnsafe(ref first, (nuint)(i - 1));
            if (swap)
            {
                v = Vector512.Shuffle(v.AsByte(), reverse).AsUInt64();
                previous = Vector512.Shuffle(previous.AsByte(), reverse).AsUInt64();
            }

            if (((v & align) | Vector512.GreaterThan(v - windowFirst, windowSpan)) != Vector512<ulong>.Zero)
            {
                break;
            }

            ulong starts = ~Vector512.Equals(v, previous + block).ExtractMostSignificantBits() & 0xFF;
            if (starts == 0)
            {
                runBlocks += 8;
                i += 8;
                continue;
            }

            v.StoreUnsafe(ref lane0); // the validated lanes, copied once: run starts come from this copy
            int lane = 0;
            do
            {
                int b = BitOperations.TrailingZeroCount(starts);
                runBlocks += (ulong)(b - lane);
                runs[count++] = new GuestPageRange(runStart >> PageShift, runBlocks << shift);
                runStart = Unsafe.Add(ref lane0, b);
                runBlocks = 1;
                lane = b + 1;
                starts &= starts - 1;
            }
            while (starts != 0);

            runBlocks += (ulong)(8 - lane);
            i += 8;
        }

        _runStart = runStart;
        _runBlocks = runBlocks;
        _count = count;
        position = i;
    }

    /// <summary>
    /// The Vector256 loop (machines without AVX-512) over as many whole vectors as pass the window check, with the run state in locals (in
    /// fields, every run would be a chain of stores and reloads through <c>this</c>): stops at the end, at a
    /// nearly full run buffer, or before a vector with a lane outside the window (which the caller then takes
    /// entry by entry). Emits exactly the runs the scalar <see cref="Step"/> would.
    /// </summary>
    private void Run256(ref ulong first, ref int position, int n, int limit)
    {
        Span<ulong> lanes = stackalloc ulong[4];
        ref ulong lane0 = ref MemoryMarshal.GetReference(lanes);
        GuestPageRange[] runs = _runs;
        Vector256<ulong> align = Vector256.Create(_alignMask);
        Vector256<ulong> windowFirst = Vector256.Create(_windowFirst);
        Vector256<ulong> windowSpan = Vector256.Create(_windowSpan);
        Vector256<ulong> block = Vector256.Create(_blockBytes);
        Vector256<byte> reverse = Vector256.Create(HintPacking.ReverseEachUInt64Bytes512()[..32]);
        bool swap = _swap;
        int shift = _blockShift - PageShift;
        ulong runStart = _runStart;
        ulong runBlocks = _runBlocks;
        int count = _count;
        int i = position;
        while (i + 4 <= n && count <= limit)
        {
            Vector256<ulong> v = Vector256.LoadUnsafe(ref first, (nuint)i);
            Vector256<ulong> previous = Vector256.LoadUnsafe(ref first, (nuint)(i - 1));
            if (swap)
            {
                v = Vector256.Shuffle(v.AsByte(), reverse).AsUInt64();
                previous = Vector256.Shuffle(previous.AsByte(), reverse).AsUInt64();
            }

            if (((v & align) | Vector256.GreaterThan(v - windowFirst, windowSpan)) != Vector256<ulong>.Zero)
            {
                break;
            }

            ulong starts = ~Vector256.Equals(v, previous + block).ExtractMostSignificantBits() & 0xF;
            if (starts == 0)
            {
                runBlocks += 4;
                i += 4;
                continue;
            }

            v.StoreUnsafe(ref lane0); // the validated lanes, copied once: run starts come from this copy
            int lane = 0;
            do
            {
                int b = BitOperations.TrailingZeroCount(starts);
                runBlocks += (ulong)(b - lane);
                runs[count++] = new GuestPageRange(runStart >> PageShift, runBlocks << shift);
                runStart = Unsafe.Add(ref lane0, b);
                runBlocks = 1;
                lane = b + 1;
                starts &= starts - 1;
            }
            while (starts != 0);

            runBlocks += (ulong)(4 - lane);
            i += 4;
        }

        _runStart = runStart;
        _runBlocks = runBlocks;
        _count = count;
        position = i;
    }

    /// <summary>A vector with a lane outside the window: its entries one by one, against the whole RAM map.</summary>
    private bool ScalarSteps(ref ulong first, ref int i, int lanes)
    {
        for (int end = i + lanes; i < end; i++)
        {
            if (!Step(Unsafe.Add(ref first, i)))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>One entry: validate, then extend the open run or start a new one.</summary>
    private bool Step(ulong raw)
    {
        ulong address = _swap ? BinaryPrimitives.ReverseEndianness(raw) : raw;
        if ((address & _alignMask) != 0)
        {
            return false;
        }

        bool inWindow = _windowUsable && address - _windowFirst <= _windowSpan;
        if (!inWindow && !_ram.Contains(new GuestPageRange(address >> PageShift, _blockBytes >> PageShift)))
        {
            return false;
        }

        if (_open && address == _runStart + (_runBlocks << _blockShift))
        {
            _runBlocks++;
        }
        else
        {
            if (_open)
            {
                Emit();
            }

            _open = true;
            _runStart = address;
            _runBlocks = 1;
        }

        return true;
    }

    private bool Step128(ref ulong first, int i)
    {
        Vector128<ulong> v = Vector128.LoadUnsafe(ref first, (nuint)i);
        Vector128<ulong> previous = Vector128.LoadUnsafe(ref first, (nuint)(i - 1));
        if (_swap)
        {
            Vector128<byte> reverse = Vector128.Create(HintPacking.ReverseEachUInt64Bytes512()[..16]);
            v = Vector128.Shuffle(v.AsByte(), reverse).AsUInt64();
            previous = Vector128.Shuffle(previous.AsByte(), reverse).AsUInt64();
        }

        Vector128<ulong> bad = (v & Vector128.Create(_alignMask))
            | Vector128.GreaterThan(v - Vector128.Create(_windowFirst), Vector128.Create(_windowSpan));
        if (bad != Vector128<ulong>.Zero)
        {
            return false;
        }

        ulong starts = ~Vector128.Equals(v, previous + Vector128.Create(_blockBytes)).ExtractMostSignificantBits() & 0x3;
        if (starts == 0)
        {
            _runBlocks += 2;
            return true;
        }

        int lane = 0;
        while (starts != 0)
        {
            int b = BitOperations.TrailingZeroCount(starts);
            _runBlocks += (ulong)(b - lane);
            Emit();
            _runStart = v.GetElement(b);
            _runBlocks = 1;
            lane = b + 1;
            starts &= starts - 1;
        }

        _runBlocks += (ulong)(2 - lane);
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Emit()
    {
        Debug.Assert(_open && _count < _runs.Length, "a run is open and there is room");
        _runs[_count++] = new GuestPageRange(_runStart >> PageShift, _runBlocks << (_blockShift - PageShift));
    }
}

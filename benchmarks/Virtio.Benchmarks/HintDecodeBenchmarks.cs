using System;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Virtio.Balloon.Device;
using Virtio.Balloon.GuestAllocator;
using Virtio.Balloon.Migration;
using Virtio.Ring;

namespace Virtio.Benchmarks;

/// <summary>
/// The device's side of one 4 MiB hint array (524,288 le64 addresses of 4 MiB free blocks of a 2 TiB guest): unpack,
/// validate (block-aligned, inside RAM), coalesce into runs, and clear the runs from the migration bitmap, as
/// <c>BalloonDevice</c> does for the hint-array protocol. Vectorized against the scalar reference (the same decoder
/// entry by entry) in the same run. Times are per hint (OperationsPerInvoke = 524,288).
/// <list type="bullet">
/// <item>contiguous: every block free (a fresh or idle guest): one run.</item>
/// <item>fragmented: the free 4 MiB blocks of a guest 25% allocated with fragmentation 0.5 (runs of every length).</item>
/// </list>
/// Targets (issue 12): at most 2 ns per hint, at least 3x the scalar reference. The device clears 4 MiB hints
/// straight into a migration bitmap (<c>Vectorized</c>, against the same pass entry by entry); any other sink gets
/// coalesced runs (<c>RunsToSink</c>), measured beside it.
/// </summary>
[MemoryDiagnoser]
[Config(typeof(VectorHardwareConfig))]
public unsafe class HintDecodeBenchmarks
{
    private const int Count = 524_288;
    private const ulong GuestBytes = 2UL << 40;
    private GuestMemory _memory = null!;
    private MigrationBitmap _bitmap = null!;
    private HintArrayDecoder _vector = null!;
    private HintArrayDecoder _scalar = null!;
    private byte* _array;
    private int _entries;

    [Params("contiguous", "fragmented")]
    public string Pattern { get; set; } = "contiguous";

    [GlobalSetup]
    public void Setup()
    {
        _memory = GuestMemory.Allocate(GuestBytes); // reserved, never touched
        var ram = new GuestRamMap(_memory);
        _vector = new HintArrayDecoder(ram, 1024);
        _scalar = new HintArrayDecoder(ram, 1024) { ScalarOnly = true };
        _bitmap = new MigrationBitmap(0, GuestBytes / 4096);
        _bitmap.MarkAll();
        _array = (byte*)NativeMemory.AlignedAlloc(Count * 8, 64);
        var addresses = new Span<ulong>(_array, Count);
        if (Pattern == "contiguous")
        {
            for (int i = 0; i < Count; i++)
            {
                addresses[i] = (ulong)i << 22;
            }

            _entries = Count;
        }
        else
        {
            using var allocator = new BuddyAllocator(0, GuestBytes / 4096);
            allocator.Fragment(0.25, 0.5, seed: 12);
            _entries = allocator.CopyFreeBlocks(BuddyAllocator.MaxOrder, 0, addresses, out _);
            for (int i = 0; i < _entries; i++)
            {
                addresses[i] <<= 12;
            }

            for (int i = _entries; i < Count; i++)
            {
                addresses[i] = addresses[i % _entries]; // fill the array: the fragmented guest has fewer free blocks
            }
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.AlignedFree(_array);
        _bitmap.Dispose();
        _memory.Dispose();
    }

    /// <summary>What <c>BalloonDevice</c> does when its sink is a migration bitmap: decode and clear in one pass.</summary>
    [Benchmark(OperationsPerInvoke = Count)]
    public int Vectorized() => IntoBitmap(_vector);

    /// <summary>The same pass entry by entry, no vector at all.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Count)]
    public int ScalarReference() => IntoBitmap(_scalar);

    /// <summary>The general path any other sink gets: vectorized runs, then the bitmap's <c>OnFreePageHints</c>.</summary>
    [Benchmark(OperationsPerInvoke = Count)]
    public int RunsToSink() => IntoRuns(_vector);

    /// <summary>The general path entry by entry (the previous scalar reference).</summary>
    [Benchmark(OperationsPerInvoke = Count)]
    public int RunsToSinkScalar() => IntoRuns(_scalar);

    private int IntoBitmap(HintArrayDecoder decoder)
    {
        _bitmap.RestoreSummaries(); // the round's bitmap as the sync left it (64 KiB; 0.1 ps a hint)
        var entries = new ReadOnlySpan<byte>(_array, Count * 8);
        decoder.BeginBitmap(bigEndian: false, _bitmap);
        int position = 0;
        while (position < Count)
        {
            // In the device's batches, so the benchmark pays what the device pays between them.
            decoder.DecodeIntoBitmap(entries, ref position, Math.Min(Count, position + 16384));
        }

        return position;
    }

    private int IntoRuns(HintArrayDecoder decoder)
    {
        _bitmap.RestoreSummaries();
        var entries = new ReadOnlySpan<byte>(_array, Count * 8);
        decoder.Begin(22, bigEndian: false);
        int position = 0;
        int runs = 0;
        while (true)
        {
            HintDecodeOutcome outcome = decoder.Decode(entries, ref position);
            if (outcome != HintDecodeOutcome.RunsFull)
            {
                decoder.Finish();
            }

            runs += decoder.Runs.Length;
            _bitmap.OnFreePageHints(2, decoder.Runs);
            decoder.ClearRuns();
            if (outcome != HintDecodeOutcome.RunsFull)
            {
                return runs;
            }
        }
    }
}

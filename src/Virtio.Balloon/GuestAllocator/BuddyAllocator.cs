using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using Virtio.Ring.Memory;

namespace Virtio.Balloon.GuestAllocator;

/// <summary>
/// A simulated guest page allocator: a binary buddy allocator over a guest physical address range, orders 0..10
/// (4 KiB .. 4 MiB blocks), with the operations the Linux balloon driver, free page reporting and free page
/// hinting rely on (allocate and free blocks, count free blocks per order, enumerate free blocks of an order
/// without removing them, take a block off its free list and give it back). The balloon driver, the tests, the
/// benchmarks and the live-migration simulation all run on it.
/// <para>
/// <b>Representation.</b> No per-page objects. Each order <c>k</c> has one bitmap with a bit per aligned
/// <c>2^k</c>-page block; bit <c>i</c> set means block <c>i</c> is on the order-<c>k</c> free list (free, and not
/// merged into a larger free block). That is the whole state: a page is free when exactly one enclosing block
/// (of some order) has its bit set. The bitmaps are reserved, not committed (<c>mmap(MAP_NORESERVE)</c>): a
/// 1 TiB guest needs 64 MiB of address space for them, of which an all-free guest touches only the order-10
/// bitmap (32 KiB). A per-order cursor (the lowest word that may have a bit set) makes allocation amortised
/// constant time.
/// </para>
/// <para>
/// <b>Invariants</b> (checked by <see cref="CheckInvariants"/>): no two free blocks overlap; two free buddies
/// are always merged (so the order-10 list holds every fully free 4 MiB block); the free-block counts match the
/// bitmaps; free + allocated + isolated pages = total pages. Freeing a block that is free or overlaps a free
/// block throws (a simulation bug must not pass silently).
/// </para>
/// <para>
/// <b>Threads.</b> Not thread-safe, like the kernel's free lists without the zone lock: callers that share an
/// allocator between threads hold <see cref="SyncRoot"/> around every call.
/// </para>
/// </summary>
public sealed unsafe class BuddyAllocator : IDisposable
{
    /// <summary>The largest order (4 MiB blocks of 4 KiB pages), Linux's MAX_ORDER - 1 on x86.</summary>
    public const int MaxOrder = 10;

    /// <summary>Bytes in a page.</summary>
    public const int PageSize = 4096;

    private const int Orders = MaxOrder + 1;

    private readonly ulong*[] _bitmaps = new ulong*[Orders];
    private readonly ulong[] _bitmapBytes = new ulong[Orders];
    private readonly ulong[] _blocks = new ulong[Orders];     // blocks of each order in the range
    private readonly long[] _freeBlocks = new long[Orders];
    private readonly ulong[] _cursor = new ulong[Orders];     // no set bit below this word
    private long _allocatedPages;
    private long _isolatedPages;
    private bool _disposed;

    /// <summary>
    /// Creates an allocator over <paramref name="pageCount"/> pages starting at <paramref name="firstPfn"/>, all
    /// free. <paramref name="firstPfn"/> must be 4 MiB aligned (a multiple of 1024), as a zone's start is aligned
    /// to the largest block.
    /// </summary>
    public BuddyAllocator(ulong firstPfn, ulong pageCount)
    {
        if (firstPfn % (1UL << MaxOrder) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(firstPfn), "The first page must be aligned to the largest block (1024 pages).");
        }

        if (pageCount == 0 || pageCount > (1UL << 40))
        {
            throw new ArgumentOutOfRangeException(nameof(pageCount), "1 page to 4 PiB.");
        }

        FirstPfn = firstPfn;
        TotalPages = pageCount;
        for (int k = 0; k < Orders; k++)
        {
            _blocks[k] = pageCount >> k;
            ulong words = (_blocks[k] + 63) / 64;
            _bitmapBytes[k] = Math.Max(NativeRegion.PageSize, (words * 8 + NativeRegion.PageSize - 1) / NativeRegion.PageSize * NativeRegion.PageSize);
            _bitmaps[k] = (ulong*)NativeRegion.Allocate(_bitmapBytes[k]);
        }

        // Everything free: whole 4 MiB blocks, then the tail as the largest aligned blocks that fit.
        ulong full = pageCount >> MaxOrder;
        SetRange(_bitmaps[MaxOrder], 0, full);
        _freeBlocks[MaxOrder] = (long)full;
        ulong page = full << MaxOrder;
        for (int k = MaxOrder - 1; k >= 0; k--)
        {
            if (page + (1UL << k) <= pageCount)
            {
                SetBit(_bitmaps[k], page >> k);
                _freeBlocks[k]++;
                page += 1UL << k;
            }
        }

        Debug.Assert(page == pageCount, "the tail is a sum of powers of two");
    }

    /// <summary>Lock callers hold when the allocator is shared between threads.</summary>
    public object SyncRoot { get; } = new();

    /// <summary>The first page frame number managed.</summary>
    public ulong FirstPfn { get; }

    /// <summary>Pages managed.</summary>
    public ulong TotalPages { get; }

    /// <summary>Pages on the free lists.</summary>
    public long FreePages
    {
        get
        {
            long pages = 0;
            for (int k = 0; k < Orders; k++)
            {
                pages += _freeBlocks[k] << k;
            }

            return pages;
        }
    }

    /// <summary>Pages handed out by <see cref="TryAllocate"/> and not freed.</summary>
    public long AllocatedPages => _allocatedPages;

    /// <summary>Pages taken off the free lists by <see cref="TryIsolate"/> and not put back.</summary>
    public long IsolatedPages => _isolatedPages;

    /// <summary>
    /// Called when an allocation finds no free block: the number of pages it made free (the balloon's
    /// deflate-on-OOM hook). The allocation is retried once when it returns more than 0.
    /// </summary>
    public Func<int, long>? OutOfMemory { get; set; }

    /// <summary>Free blocks on the order-<paramref name="order"/> free list.</summary>
    public long FreeBlocks(int order)
    {
        CheckOrder(order);
        return _freeBlocks[order];
    }

    /// <summary>
    /// Allocates a block of <c>2^order</c> pages, splitting a larger free block if needed. False when none is
    /// free (after the <see cref="OutOfMemory"/> hook had its chance).
    /// </summary>
    public bool TryAllocate(int order, out ulong pfn)
    {
        CheckOrder(order);
        if (TryTake(order, out pfn))
        {
            _allocatedPages += 1L << order;
            return true;
        }

        if (OutOfMemory is { } oom && oom(order) > 0 && TryTake(order, out pfn))
        {
            _allocatedPages += 1L << order;
            return true;
        }

        pfn = 0;
        return false;
    }

    /// <summary>Frees a block <see cref="TryAllocate"/> returned, merging it with free buddies.</summary>
    /// <exception cref="InvalidOperationException">The block is free already, or overlaps a free block.</exception>
    public void Free(ulong pfn, int order)
    {
        ulong index = CheckBlock(pfn, order);
        if ((1L << order) > _allocatedPages)
        {
            throw new InvalidOperationException($"Freeing {1L << order} pages at {pfn:x} but only {_allocatedPages} are allocated.");
        }

        _allocatedPages -= 1L << order;
        Insert(index, order);
    }

    /// <summary>
    /// Takes the free block at <paramref name="pfn"/> of exactly <paramref name="order"/> off its free list (free
    /// page reporting and hinting hold blocks this way). False when that block is not on the order's free list.
    /// </summary>
    public bool TryIsolate(ulong pfn, int order)
    {
        CheckOrder(order);
        if (pfn < FirstPfn || ((pfn - FirstPfn) & ((1UL << order) - 1)) != 0)
        {
            return false;
        }

        ulong index = (pfn - FirstPfn) >> order;
        if (index >= _blocks[order] || !ClearBit(_bitmaps[order], index))
        {
            return false;
        }

        _freeBlocks[order]--;
        _isolatedPages += 1L << order;
        return true;
    }

    /// <summary>Takes the lowest free block of <paramref name="order"/> off its free list, without splitting a larger one.</summary>
    public bool TryIsolateAny(int order, out ulong pfn)
    {
        CheckOrder(order);
        if (!TryFindSet(order, out ulong index))
        {
            pfn = 0;
            return false;
        }

        ClearBit(_bitmaps[order], index);
        _freeBlocks[order]--;
        _isolatedPages += 1L << order;
        pfn = FirstPfn + (index << order);
        return true;
    }

    /// <summary>Gives an isolated block back to the free lists (merging it with free buddies).</summary>
    public void PutBack(ulong pfn, int order)
    {
        ulong index = CheckBlock(pfn, order);
        if ((1L << order) > _isolatedPages)
        {
            throw new InvalidOperationException($"Putting back {1L << order} pages at {pfn:x} but only {_isolatedPages} are isolated.");
        }

        _isolatedPages -= 1L << order;
        Insert(index, order);
    }

    /// <summary>
    /// The free blocks of <paramref name="order"/>, lowest first, without removing them (the free list walk of
    /// the original hinting patch). The allocator must not change while enumerating.
    /// </summary>
    public FreeBlockEnumerator EnumerateFreeBlocks(int order)
    {
        CheckOrder(order);
        return new FreeBlockEnumerator(_bitmaps[order], (_blocks[order] + 63) / 64, FirstPfn, order);
    }

    /// <summary>
    /// Copies the page frame numbers of free blocks of <paramref name="order"/> at or after
    /// <paramref name="fromPfn"/> into <paramref name="destination"/>, lowest first; returns how many, and in
    /// <paramref name="nextPfn"/> where to continue (past the last one copied). The bulk form of
    /// <see cref="EnumerateFreeBlocks"/> for the hint path.
    /// </summary>
    public int CopyFreeBlocks(int order, ulong fromPfn, Span<ulong> destination, out ulong nextPfn)
    {
        CheckOrder(order);
        ulong* bitmap = _bitmaps[order];
        ulong words = (_blocks[order] + 63) / 64;
        ulong index = fromPfn <= FirstPfn ? 0 : (fromPfn - FirstPfn + (1UL << order) - 1) >> order;
        int n = 0;
        while (n < destination.Length)
        {
            ulong word = index / 64;
            if (word >= words)
            {
                break;
            }

            ulong bits = bitmap[word] & (ulong.MaxValue << (int)(index % 64));
            if (bits == 0)
            {
                index = (word + 1) * 64;
                continue;
            }

            ulong block = (word * 64) + (ulong)BitOperations.TrailingZeroCount(bits);
            destination[n++] = FirstPfn + (block << order);
            index = block + 1;
        }

        nextPfn = FirstPfn + (index << order);
        return n;
    }

    /// <summary>
    /// Scatters allocations over the guest, reproducibly: each 4 MiB block is allocated whole with probability
    /// <paramref name="allocatedFraction"/> × (1 − <paramref name="fragmentation"/>), and with probability
    /// <paramref name="fragmentation"/> it is fragmented: cut in halves recursively (each half again with
    /// probability 0.6, down to <paramref name="chunkOrder"/>), every piece that is not cut further allocated with
    /// probability <paramref name="allocatedFraction"/>. That leaves free holes of every order, as a long-running
    /// guest has, and on average <paramref name="allocatedFraction"/> of the pages allocated. Returns the pages
    /// allocated.
    /// </summary>
    public long Fragment(double allocatedFraction, double fragmentation, int seed, int chunkOrder = 0)
    {
        if (allocatedFraction is < 0 or > 1 || fragmentation is < 0 or > 1)
        {
            throw new ArgumentOutOfRangeException(nameof(allocatedFraction), "Fractions are between 0 and 1.");
        }

        CheckOrder(chunkOrder);
        var rng = new Random(seed);
        double whole = allocatedFraction * (1 - fragmentation);
        long before = _allocatedPages;
        ulong full = TotalPages >> MaxOrder;
        Span<(ulong Pfn, int Order)> pieces = stackalloc (ulong, int)[2 * (MaxOrder + 1)];
        for (ulong block = 0; block < full; block++)
        {
            if (!TestBit(_bitmaps[MaxOrder], block))
            {
                continue;
            }

            double u = rng.NextDouble();
            if (u >= whole + fragmentation)
            {
                continue;
            }

            // Take the whole block, then give back the pieces that stay free (they merge as buddies allow).
            ClearBit(_bitmaps[MaxOrder], block);
            _freeBlocks[MaxOrder]--;
            _allocatedPages += 1L << MaxOrder;
            if (u < whole)
            {
                continue;
            }

            int depth = 0;
            pieces[depth++] = (FirstPfn + (block << MaxOrder), MaxOrder);
            while (depth > 0)
            {
                (ulong pfn, int order) = pieces[--depth];
                if (order > chunkOrder && (order == MaxOrder || rng.NextDouble() < 0.6))
                {
                    pieces[depth++] = (pfn + (1UL << (order - 1)), order - 1);
                    pieces[depth++] = (pfn, order - 1);
                }
                else if (rng.NextDouble() >= allocatedFraction)
                {
                    Free(pfn, order);
                }
            }
        }

        return _allocatedPages - before;
    }

    /// <summary>
    /// Checks every invariant by a full scan (tests and debugging): free blocks do not overlap, free buddies are
    /// merged, counts match the bitmaps, and free + allocated + isolated pages add up to the total.
    /// </summary>
    /// <exception cref="InvalidOperationException">An invariant does not hold.</exception>
    public void CheckInvariants()
    {
        long freePages = 0;
        for (int k = 0; k < Orders; k++)
        {
            long count = 0;
            ulong words = (_blocks[k] + 63) / 64;
            for (ulong w = 0; w < words; w++)
            {
                ulong bits = _bitmaps[k][w];
                if (w < _cursor[k] && bits != 0)
                {
                    throw new InvalidOperationException($"order {k}: a free block below the cursor");
                }

                while (bits != 0)
                {
                    ulong index = (w * 64) + (ulong)BitOperations.TrailingZeroCount(bits);
                    bits &= bits - 1;
                    count++;
                    if (index >= _blocks[k])
                    {
                        throw new InvalidOperationException($"order {k}: block {index} is past the end");
                    }

                    if (k < MaxOrder && (index ^ 1) < _blocks[k] && TestBit(_bitmaps[k], index ^ 1))
                    {
                        throw new InvalidOperationException($"order {k}: free buddies {index} and {index ^ 1} are not merged");
                    }

                    for (int j = k + 1; j < Orders; j++)
                    {
                        if ((index >> (j - k)) < _blocks[j] && TestBit(_bitmaps[j], index >> (j - k)))
                        {
                            throw new InvalidOperationException($"order {k} block {index} lies inside a free order-{j} block");
                        }
                    }
                }
            }

            if (count != _freeBlocks[k])
            {
                throw new InvalidOperationException($"order {k}: {count} free blocks in the bitmap, {_freeBlocks[k]} counted");
            }

            freePages += count << k;
        }

        if (freePages + _allocatedPages + _isolatedPages != (long)TotalPages)
        {
            throw new InvalidOperationException($"{freePages} free + {_allocatedPages} allocated + {_isolatedPages} isolated != {TotalPages} pages");
        }
    }

    /// <summary>Releases the bitmaps.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        for (int k = 0; k < Orders; k++)
        {
            NativeRegion.Free((byte*)_bitmaps[k], _bitmapBytes[k]);
            _bitmaps[k] = null;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TestBit(ulong* bitmap, ulong index) => (bitmap[index / 64] & (1UL << (int)(index % 64))) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SetBit(ulong* bitmap, ulong index) => bitmap[index / 64] |= 1UL << (int)(index % 64);

    /// <summary>Clears a bit; false when it was clear.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool ClearBit(ulong* bitmap, ulong index)
    {
        ulong mask = 1UL << (int)(index % 64);
        ulong word = bitmap[index / 64];
        bitmap[index / 64] = word & ~mask;
        return (word & mask) != 0;
    }

    private static void SetRange(ulong* bitmap, ulong from, ulong count)
    {
        ulong end = from + count;
        for (ulong i = from; i < end;)
        {
            if (i % 64 == 0 && end - i >= 64)
            {
                bitmap[i / 64] = ulong.MaxValue;
                i += 64;
            }
            else
            {
                SetBit(bitmap, i++);
            }
        }
    }

    private static void CheckOrder(int order)
    {
        if ((uint)order > MaxOrder)
        {
            throw new ArgumentOutOfRangeException(nameof(order), "Orders are 0 to 10.");
        }
    }

    /// <summary>Checks that a block given back is inside the range, aligned, and overlaps no free block.</summary>
    private ulong CheckBlock(ulong pfn, int order)
    {
        CheckOrder(order);
        if (pfn < FirstPfn || ((pfn - FirstPfn) & ((1UL << order) - 1)) != 0 || ((pfn - FirstPfn) >> order) >= _blocks[order])
        {
            throw new ArgumentOutOfRangeException(nameof(pfn), $"Block {pfn:x} of order {order} is not an aligned block of this allocator.");
        }

        ulong index = (pfn - FirstPfn) >> order;
        for (int j = order; j < Orders; j++)
        {
            ulong enclosing = index >> (j - order);
            if (enclosing < _blocks[j] && TestBit(_bitmaps[j], enclosing))
            {
                throw new InvalidOperationException($"Block {pfn:x} of order {order} is free already (inside a free order-{j} block).");
            }
        }

        for (int j = order - 1; j >= 0; j--)
        {
            ulong first = index << (order - j);
            ulong count = 1UL << (order - j);
            for (ulong i = first; i < first + count;)
            {
                if (i % 64 == 0 && count >= 64)
                {
                    if (_bitmaps[j][i / 64] != 0)
                    {
                        throw new InvalidOperationException($"Block {pfn:x} of order {order} contains a free order-{j} block.");
                    }

                    i += 64;
                }
                else
                {
                    if (TestBit(_bitmaps[j], i))
                    {
                        throw new InvalidOperationException($"Block {pfn:x} of order {order} contains a free order-{j} block.");
                    }

                    i++;
                }
            }
        }

        return index;
    }

    /// <summary>Puts block <paramref name="index"/> of <paramref name="order"/> on the free lists, merging buddies.</summary>
    private void Insert(ulong index, int order)
    {
        while (order < MaxOrder)
        {
            ulong buddy = index ^ 1;
            if (buddy >= _blocks[order] || !ClearBit(_bitmaps[order], buddy))
            {
                break;
            }

            _freeBlocks[order]--;
            index >>= 1;
            order++;
        }

        SetBit(_bitmaps[order], index);
        _freeBlocks[order]++;
        _cursor[order] = Math.Min(_cursor[order], index / 64);
    }

    /// <summary>Takes a free block of <paramref name="order"/>, splitting the smallest larger one if needed.</summary>
    private bool TryTake(int order, out ulong pfn)
    {
        int from = order;
        ulong index = 0;
        while (from <= MaxOrder && !TryFindSet(from, out index))
        {
            from++;
        }

        if (from > MaxOrder)
        {
            pfn = 0;
            return false;
        }

        ClearBit(_bitmaps[from], index);
        _freeBlocks[from]--;
        while (from > order)
        {
            // Keep the lower half, free the upper half one order down.
            from--;
            index <<= 1;
            SetBit(_bitmaps[from], index + 1);
            _freeBlocks[from]++;
            _cursor[from] = Math.Min(_cursor[from], (index + 1) / 64);
        }

        pfn = FirstPfn + (index << order);
        return true;
    }

    /// <summary>The lowest set bit of an order's bitmap, from its cursor on (which it advances).</summary>
    private bool TryFindSet(int order, out ulong index)
    {
        if (_freeBlocks[order] == 0)
        {
            index = 0;
            return false;
        }

        ulong* bitmap = _bitmaps[order];
        ulong words = (_blocks[order] + 63) / 64;
        ulong w = _cursor[order];
        while (w < words && bitmap[w] == 0)
        {
            w++;
        }

        _cursor[order] = w;
        Debug.Assert(w < words, "a counted free block is in the bitmap");
        index = (w * 64) + (ulong)BitOperations.TrailingZeroCount(bitmap[w]);
        return true;
    }
}

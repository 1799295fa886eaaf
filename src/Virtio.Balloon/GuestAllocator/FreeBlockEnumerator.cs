using System.Numerics;

namespace Virtio.Balloon.GuestAllocator;

/// <summary>
/// Walks one order's free list of a <see cref="BuddyAllocator"/> (its bitmap), lowest block first, without
/// taking anything off it. A ref struct: no allocation, and it cannot outlive the call that made it.
/// </summary>
public unsafe ref struct FreeBlockEnumerator
{
    private readonly ulong* _bitmap;
    private readonly ulong _words;
    private readonly ulong _firstPfn;
    private readonly int _order;
    private ulong _word;
    private ulong _bits;

    internal FreeBlockEnumerator(ulong* bitmap, ulong words, ulong firstPfn, int order)
    {
        _bitmap = bitmap;
        _words = words;
        _firstPfn = firstPfn;
        _order = order;
        _word = 0;
        _bits = words > 0 ? bitmap[0] : 0;
        Current = 0;
    }

    /// <summary>The current free block's first page frame number.</summary>
    public ulong Current { get; private set; }

    /// <summary>For <c>foreach</c>.</summary>
    public readonly FreeBlockEnumerator GetEnumerator() => this;

    /// <summary>Advances to the next free block.</summary>
    public bool MoveNext()
    {
        while (_bits == 0)
        {
            if (++_word >= _words)
            {
                return false;
            }

            _bits = _bitmap[_word];
        }

        ulong block = (_word * 64) + (ulong)BitOperations.TrailingZeroCount(_bits);
        _bits &= _bits - 1;
        Current = _firstPfn + (block << _order);
        return true;
    }
}

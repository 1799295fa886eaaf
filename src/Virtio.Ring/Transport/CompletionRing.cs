using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Threading;

namespace Virtio.Ring.Transport;

/// <summary>
/// The lock-free hand-off of completed chains from any thread to the one thread that owns a queue's device side:
/// a bounded multi-producer, single-consumer ring (Vyukov's bounded queue with one consumer).
/// <para>
/// <b>Protocol.</b> Each cell has a sequence number. A producer claims position <c>p</c> by a compare-exchange
/// of the enqueue position, but only once the cell's sequence reads <c>p</c> (the consumer freed it); it writes
/// the entry and then stores sequence <c>p + 1</c> with release semantics, which publishes the entry. The consumer
/// reads the cell at its position <c>c</c> with an acquire load of the sequence; <c>c + 1</c> means the entry is
/// there. It copies it out and stores sequence <c>c + capacity</c> (release), handing the cell to the producer
/// one lap later. No producer waits for another: a full ring is reported, never waited on here.
/// </para>
/// <para>
/// Entries are three integers in preallocated cells: nothing is allocated per completion.
/// </para>
/// </summary>
internal sealed class CompletionRing
{
    private readonly Cell[] _cells;
    private readonly int _mask;
    private long _enqueuePosition; // shared by producers (compare-exchange)
    private long _dequeuePosition; // the consumer's alone

    public CompletionRing(int capacity)
    {
        Debug.Assert(capacity >= 2 && BitOperations.IsPow2(capacity), "a power of two");
        _cells = new Cell[capacity];
        _mask = capacity - 1;
        for (int i = 0; i < capacity; i++)
        {
            _cells[i].Sequence = i;
        }
    }

    /// <summary>Producers: hands over one completion; false when the ring is full.</summary>
    public bool TryEnqueue(uint epoch, ushort id, uint writtenLength)
    {
        long position = Volatile.Read(ref _enqueuePosition);
        while (true)
        {
            ref Cell cell = ref _cells[position & _mask];
            long sequence = Volatile.Read(ref cell.Sequence); // acquire: the consumer is done with the cell
            long difference = sequence - position;
            if (difference == 0)
            {
                long seen = Interlocked.CompareExchange(ref _enqueuePosition, position + 1, position);
                if (seen == position)
                {
                    cell.Epoch = epoch;
                    cell.Id = id;
                    cell.Length = writtenLength;
                    Volatile.Write(ref cell.Sequence, position + 1); // release: publishes the entry
                    return true;
                }

                position = seen;
            }
            else if (difference < 0)
            {
                return false; // the cell still holds an entry from one lap ago: full
            }
            else
            {
                position = Volatile.Read(ref _enqueuePosition); // another producer took it
            }
        }
    }

    /// <summary>The consumer: takes the oldest completion; false when there is none.</summary>
    public bool TryDequeue(out uint epoch, out ushort id, out uint writtenLength)
    {
        long position = _dequeuePosition;
        ref Cell cell = ref _cells[position & _mask];
        if (Volatile.Read(ref cell.Sequence) != position + 1) // acquire: the entry's fields are visible
        {
            epoch = 0;
            id = 0;
            writtenLength = 0;
            return false;
        }

        epoch = cell.Epoch;
        id = cell.Id;
        writtenLength = cell.Length;
        Volatile.Write(ref cell.Sequence, position + _cells.Length); // release: the cell is free for the next lap
        _dequeuePosition = position + 1;
        return true;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Cell
    {
        public long Sequence;
        public uint Epoch;
        public uint Length;
        public ushort Id;
    }
}

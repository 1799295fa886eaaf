using System;
using System.Diagnostics;
using Virtio.Ring.Internal;

namespace Virtio.Ring;

/// <summary>
/// Indirect descriptor tables for a driver (VIRTIO 1.2, 2.7.5.3 for split rings, 2.8.7 for packed rings): <see cref="TableCount"/> tables of
/// <see cref="EntriesPerTable"/> descriptors each, laid out back to back in guest memory from a 16-aligned base.
/// A driver with <c>VIRTIO_F_INDIRECT_DESC</c> puts a multi-buffer chain into one table and spends a single
/// ring descriptor on it. The pool's bookkeeping is private to the driver (a free stack in managed memory); the
/// device only ever sees the tables' contents. Single-owner, like the driver that uses it.
/// </summary>
public sealed unsafe class IndirectDescriptorPool : IDisposable
{
    /// <summary>Bytes of one table entry: split and packed descriptors are both 16 bytes.</summary>
    public const int DescriptorSize = 16;

    /// <summary>Most tables, and most entries per table (the largest queue size).</summary>
    public const int MaxEntries = 32768;

    private readonly GuestMemory _memory;
    private readonly byte* _host;
    private readonly ulong _baseAddress;
    private readonly int[] _free;
    private int _freeCount;
    private bool _disposed;

    /// <summary>Creates a pool over guest memory at <paramref name="baseAddress"/>.</summary>
    /// <param name="memory">The guest memory the tables live in.</param>
    /// <param name="baseAddress">GPA of table 0; a multiple of 16.</param>
    /// <param name="tableCount">Number of tables (at most one per chain in flight is useful: the queue size).</param>
    /// <param name="entriesPerTable">Descriptors per table (2 to 32768).</param>
    public IndirectDescriptorPool(GuestMemory memory, ulong baseAddress, int tableCount, int entriesPerTable)
    {
        ArgumentNullException.ThrowIfNull(memory);
        if (tableCount is <= 0 or > MaxEntries)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(tableCount), "Between 1 and 32768 tables.");
        }

        if (entriesPerTable is < 2 or > MaxEntries)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(entriesPerTable), "Between 2 and 32768 entries per table.");
        }

        if (baseAddress % DescriptorSize != 0)
        {
            ThrowHelper.ThrowArgument(nameof(baseAddress), "Indirect tables are 16-byte aligned.");
        }

        ulong bytes = BytesFor(tableCount, entriesPerTable);
        _host = memory.TranslateOrNull(baseAddress, bytes);
        if (_host == null)
        {
            ThrowHelper.ThrowArgument(nameof(baseAddress), "The pool is not inside one guest memory region.");
        }

        memory.AddReference();
        _memory = memory;
        _baseAddress = baseAddress;
        TableCount = tableCount;
        EntriesPerTable = entriesPerTable;
        _free = new int[tableCount];
        for (int i = 0; i < tableCount; i++)
        {
            _free[i] = tableCount - 1 - i; // table 0 is rented first
        }

        _freeCount = tableCount;
    }

    /// <summary>Number of tables.</summary>
    public int TableCount { get; }

    /// <summary>Descriptors per table.</summary>
    public int EntriesPerTable { get; }

    /// <summary>Tables not in use.</summary>
    public int FreeTables => _freeCount;

    /// <summary>Guest memory bytes a pool of this shape occupies.</summary>
    public static ulong BytesFor(int tableCount, int entriesPerTable) =>
        (ulong)tableCount * (ulong)entriesPerTable * DescriptorSize;

    /// <summary>Returns the pool's guest memory reference.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _freeCount = 0;
        _memory.ReleaseReference();
    }

    internal bool TryRent(int entries, out int table)
    {
        if (entries > EntriesPerTable || _freeCount == 0)
        {
            table = -1;
            return false;
        }

        table = _free[--_freeCount];
        return true;
    }

    internal void Return(int table)
    {
        Debug.Assert((uint)table < (uint)TableCount, "only rented tables come back");
        Debug.Assert(_freeCount < TableCount, "a table comes back once");
        if (_disposed)
        {
            return;
        }

        _free[_freeCount++] = table;
    }

    internal byte* TableHost(int table) => _host + ((nuint)(uint)table * (nuint)(uint)EntriesPerTable * DescriptorSize);

    internal ulong TableAddress(int table) => _baseAddress + ((ulong)(uint)table * (ulong)(uint)EntriesPerTable * DescriptorSize);
}

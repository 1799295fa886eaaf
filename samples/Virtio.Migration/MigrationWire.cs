using System;
using System.Buffers.Binary;
using System.IO;

namespace Virtio.Migration;

/// <summary>
/// The migration stream between source and destination (little-endian):
/// <list type="bullet">
/// <item><c>HELO</c> version, guest pages: opens a migration.</item>
/// <item><c>PAGE</c> count, count page frame numbers (u64), then count pages of 4096 bytes: RAM.</item>
/// <item><c>VRFY</c> count, count pairs (pfn, XXH3 of the source's page): the integrity check, after the stop-and-copy.</item>
/// <item><c>DONE</c>: the destination answers with a <see cref="DestinationReport"/>.</item>
/// </list>
/// Only HELO and PAGE count as migration traffic; the check is the simulation's own.
/// </summary>
public static class MigrationWire
{
    /// <summary>Opens a migration.</summary>
    public const uint Hello = 0x4F4C4548;   // "HELO"

    /// <summary>A batch of pages.</summary>
    public const uint Pages = 0x45474150;   // "PAGE"

    /// <summary>A batch of page hashes to check.</summary>
    public const uint Verify = 0x59465256;  // "VRFY"

    /// <summary>The end: the destination reports.</summary>
    public const uint Done = 0x454E4F44;    // "DONE"

    /// <summary>The protocol version.</summary>
    public const uint Version = 1;

    /// <summary>Pages per PAGE batch at most.</summary>
    public const int MaxBatch = 256;

    /// <summary>Bytes of a batch header (tag, count).</summary>
    public const int HeaderBytes = 8;

    /// <summary>Reads exactly <paramref name="buffer"/>.Length bytes or throws at the end of the stream.</summary>
    public static void ReadExactly(Stream stream, Span<byte> buffer) => stream.ReadExactly(buffer);

    /// <summary>Reads a u32.</summary>
    public static uint ReadUInt32(Stream stream)
    {
        Span<byte> b = stackalloc byte[4];
        stream.ReadExactly(b);
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    /// <summary>Reads a u64.</summary>
    public static ulong ReadUInt64(Stream stream)
    {
        Span<byte> b = stackalloc byte[8];
        stream.ReadExactly(b);
        return BinaryPrimitives.ReadUInt64LittleEndian(b);
    }
}

/// <summary>What the destination found: pages received, and the integrity check's verdict.</summary>
/// <param name="PagesReceived">PAGE entries received (a page sent twice counts twice).</param>
/// <param name="BytesReceived">Migration bytes received (HELO and PAGE).</param>
/// <param name="PagesChecked">Pages the integrity check compared.</param>
/// <param name="Mismatches">Pages whose contents differ from the source's.</param>
/// <param name="FirstMismatch">The first differing page, or <see cref="ulong.MaxValue"/>.</param>
public readonly record struct DestinationReport(long PagesReceived, long BytesReceived, long PagesChecked, long Mismatches, ulong FirstMismatch)
{
    /// <summary>Bytes of the report on the wire.</summary>
    public const int Size = 40;

    /// <summary>Writes the report.</summary>
    public void WriteTo(Span<byte> b)
    {
        BinaryPrimitives.WriteInt64LittleEndian(b, PagesReceived);
        BinaryPrimitives.WriteInt64LittleEndian(b[8..], BytesReceived);
        BinaryPrimitives.WriteInt64LittleEndian(b[16..], PagesChecked);
        BinaryPrimitives.WriteInt64LittleEndian(b[24..], Mismatches);
        BinaryPrimitives.WriteUInt64LittleEndian(b[32..], FirstMismatch);
    }

    /// <summary>Reads a report.</summary>
    public static DestinationReport ReadFrom(ReadOnlySpan<byte> b) => new(
        BinaryPrimitives.ReadInt64LittleEndian(b),
        BinaryPrimitives.ReadInt64LittleEndian(b[8..]),
        BinaryPrimitives.ReadInt64LittleEndian(b[16..]),
        BinaryPrimitives.ReadInt64LittleEndian(b[24..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[32..]));
}

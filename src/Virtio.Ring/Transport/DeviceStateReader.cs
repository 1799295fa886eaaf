using System;
using System.Buffers.Binary;

namespace Virtio.Ring.Transport;

/// <summary>
/// Reads a snapshot that <see cref="DeviceStateWriter"/> wrote. A snapshot comes from outside the process (a
/// migration stream, a file), so it is input like any guest value: every read is bounds-checked and reports
/// failure instead of throwing, and <see cref="IsValid"/> stays false from the first short read on, so a
/// reader can read a whole record and check once.
/// </summary>
public ref struct DeviceStateReader
{
    private ReadOnlySpan<byte> _remaining;

    /// <summary>Reads <paramref name="state"/> from its start.</summary>
    public DeviceStateReader(ReadOnlySpan<byte> state)
    {
        _remaining = state;
        IsValid = true;
    }

    /// <summary>False once any read ran past the end.</summary>
    public bool IsValid { get; private set; }

    /// <summary>Bytes not read yet.</summary>
    public readonly int Remaining => _remaining.Length;

    /// <summary>Reads one byte (0 past the end).</summary>
    public byte ReadByte() => Take(1) is { Length: 1 } b ? b[0] : (byte)0;

    /// <summary>Reads a boolean; a byte other than 0 or 1 makes the reader invalid.</summary>
    public bool ReadBoolean()
    {
        byte b = ReadByte();
        if (b > 1)
        {
            IsValid = false;
        }

        return b == 1;
    }

    /// <summary>Reads a little-endian 16-bit value (0 past the end).</summary>
    public ushort ReadUInt16() => Take(2) is { Length: 2 } b ? BinaryPrimitives.ReadUInt16LittleEndian(b) : (ushort)0;

    /// <summary>Reads a little-endian 32-bit value (0 past the end).</summary>
    public uint ReadUInt32() => Take(4) is { Length: 4 } b ? BinaryPrimitives.ReadUInt32LittleEndian(b) : 0;

    /// <summary>Reads a little-endian 64-bit value (0 past the end).</summary>
    public ulong ReadUInt64() => Take(8) is { Length: 8 } b ? BinaryPrimitives.ReadUInt64LittleEndian(b) : 0;

    /// <summary>
    /// Reads a length-prefixed byte string of at most <paramref name="maxLength"/> bytes; longer or truncated
    /// makes the reader invalid and returns an empty span.
    /// </summary>
    public ReadOnlySpan<byte> ReadBytes(int maxLength)
    {
        uint length = ReadUInt32();
        if (length > (uint)maxLength)
        {
            IsValid = false;
            return default;
        }

        return Take((int)length);
    }

    private ReadOnlySpan<byte> Take(int count)
    {
        if (!IsValid || count > _remaining.Length)
        {
            IsValid = false;
            _remaining = default;
            return default;
        }

        ReadOnlySpan<byte> taken = _remaining[..count];
        _remaining = _remaining[count..];
        return taken;
    }
}

using System;
using System.Buffers;
using System.Buffers.Binary;

namespace Virtio.Ring.Transport;

/// <summary>
/// Writes a device snapshot: fixed-width little-endian integers and length-prefixed byte strings, appended to a
/// growing buffer. A device model writes its own state with it in <c>VirtioDevice.SaveModelState</c>; the
/// matching <see cref="DeviceStateReader"/> reads it back with every field checked.
/// </summary>
public sealed class DeviceStateWriter
{
    private readonly ArrayBufferWriter<byte> _buffer = new(256);

    /// <summary>Bytes written so far.</summary>
    public int Length => _buffer.WrittenCount;

    /// <summary>The bytes written so far.</summary>
    public ReadOnlySpan<byte> WrittenSpan => _buffer.WrittenSpan;

    /// <summary>Appends one byte.</summary>
    public void WriteByte(byte value)
    {
        _buffer.GetSpan(1)[0] = value;
        _buffer.Advance(1);
    }

    /// <summary>Appends a boolean as one byte, 0 or 1.</summary>
    public void WriteBoolean(bool value) => WriteByte(value ? (byte)1 : (byte)0);

    /// <summary>Appends a little-endian 16-bit value.</summary>
    public void WriteUInt16(ushort value)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(_buffer.GetSpan(2), value);
        _buffer.Advance(2);
    }

    /// <summary>Appends a little-endian 32-bit value.</summary>
    public void WriteUInt32(uint value)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(_buffer.GetSpan(4), value);
        _buffer.Advance(4);
    }

    /// <summary>Appends a little-endian 64-bit value.</summary>
    public void WriteUInt64(ulong value)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(_buffer.GetSpan(8), value);
        _buffer.Advance(8);
    }

    /// <summary>Appends a 32-bit length, then the bytes.</summary>
    public void WriteBytes(ReadOnlySpan<byte> bytes)
    {
        WriteUInt32((uint)bytes.Length);
        bytes.CopyTo(_buffer.GetSpan(bytes.Length));
        _buffer.Advance(bytes.Length);
    }

    /// <summary>A copy of what was written.</summary>
    public byte[] ToArray() => _buffer.WrittenSpan.ToArray();
}

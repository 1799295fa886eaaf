using System;
using System.Globalization;
using System.IO;
using System.Net.Sockets;
using System.Text;
using Virtio.Ring;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;

namespace Virtio.Interop.Qtest;

/// <summary>
/// QEMU's qtest protocol served by our side, laid out as QEMU's microvm with <c>acpi=off</c>, so a client written
/// for QEMU (ours: <see cref="QtestClient"/>, <see cref="QtestMmioBus"/>) works unchanged: virtio-mmio transports at
/// <c>0xfeb00000 + i * 0x200</c> (a device on some, the others answering MagicValue with DeviceID 0), guest RAM at
/// GPA 0 (<c>read</c>/<c>write</c>/<c>readX</c>/<c>writeX</c> reach it), and transport i's line as GSI <c>5 + i</c>,
/// reported as <c>IRQ raise N</c> / <c>IRQ lower N</c> after <c>irq_intercept_in ioapic</c>. Replies are QEMU's:
/// <c>OK</c>, <c>OK 0x%016x</c>, <c>FAIL Unknown command 'x'</c>; a malformed line gets <c>ERR ...</c> and the
/// server carries on (QEMU would abort): nothing a client sends can crash it. Unmapped addresses read 0 and ignore
/// writes, as in QEMU.
/// </summary>
public sealed class QtestServer : IDisposable
{
    /// <summary>Transports of microvm with acpi=off.</summary>
    public const int Transports = 8;

    private readonly GuestMemory _memory;
    private readonly ulong _ramBytes;
    private readonly IVirtioMmioBus[] _transports = new IVirtioMmioBus[Transports];
    private readonly bool[] _levels = new bool[Transports];
    private readonly object _write = new();
    private StreamWriter? _client;
    private bool _intercepting;
    private Socket? _listener;

    /// <summary>A server over <paramref name="memory"/> (RAM from GPA 0); every transport is empty until <see cref="Attach"/>.</summary>
    public QtestServer(GuestMemory memory)
    {
        ArgumentNullException.ThrowIfNull(memory);
        _memory = memory;
        foreach (GuestRegionInfo region in memory.Regions)
        {
            _ramBytes = Math.Max(_ramBytes, region.EndAddress);
        }

        for (int i = 0; i < Transports; i++)
        {
            _transports[i] = EmptyTransport.Instance;
        }
    }

    /// <summary>Puts <paramref name="transport"/> (a device's virtio-mmio window) at transport <paramref name="index"/>.</summary>
    public void Attach(int index, IVirtioMmioBus transport)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, (uint)Transports, nameof(index));
        _transports[index] = transport ?? throw new ArgumentNullException(nameof(transport));
    }

    /// <summary>The interrupt line of transport <paramref name="index"/> (GSI 5 + index), for its <see cref="VirtioMmioTransport"/>.</summary>
    public IInterruptLine LineFor(int index)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, (uint)Transports, nameof(index));
        return new InterruptLine(() => SetLevel(index, true), () => SetLevel(index, false));
    }

    /// <summary>Listens on the Unix socket <paramref name="path"/> and serves clients one after another until disposed.</summary>
    public void Serve(string path, Action? listening = null)
    {
        File.Delete(path);
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(path));
        _listener.Listen(1);
        listening?.Invoke();
        while (true)
        {
            Socket connection;
            try
            {
                connection = _listener.Accept();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                return;
            }

            using (connection)
            {
                ServeConnection(connection);
            }
        }
    }

    /// <summary>Stops listening.</summary>
    public void Dispose() => _listener?.Dispose();

    private void ServeConnection(Socket connection)
    {
        using var stream = new NetworkStream(connection, ownsSocket: false);
        using var reader = new StreamReader(stream, new UTF8Encoding(false));
        var writer = new StreamWriter(stream, new UTF8Encoding(false)) { NewLine = "\n", AutoFlush = true };
        lock (_write)
        {
            _client = writer;
            _intercepting = false;
        }

        try
        {
            while (reader.ReadLine() is string line)
            {
                string reply;
                try
                {
                    reply = Execute(line);
                }
                catch (FormatException e)
                {
                    reply = $"ERR {e.Message}";
                }
                catch (OverflowException e)
                {
                    reply = $"ERR {e.Message}";
                }

                lock (_write)
                {
                    writer.WriteLine(reply);
                }
            }
        }
        catch (IOException)
        {
            // The client went away.
        }
        finally
        {
            lock (_write)
            {
                _client = null;
            }

            writer.Dispose();
        }
    }

    private string Execute(string line)
    {
        string[] words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (words.Length == 0)
        {
            return "FAIL Empty command";
        }

        switch (words[0])
        {
            case "readb" or "readw" or "readl" or "readq" when words.Length == 2:
                return "OK 0x" + ReadValue(Number(words[1]), Size(words[0])).ToString("x16", CultureInfo.InvariantCulture);
            case "writeb" or "writew" or "writel" or "writeq" when words.Length == 3:
                WriteValue(Number(words[1]), Size(words[0]), Number(words[2]));
                return "OK";
            case "read" when words.Length == 3:
                return "OK 0x" + ReadBytes(Number(words[1]), Number(words[2]));
            case "write" when words.Length == 4:
                WriteBytes(Number(words[1]), Number(words[2]), words[3]);
                return "OK";
            case "irq_intercept_in" or "irq_intercept_out" when words.Length == 2:
                lock (_write)
                {
                    _intercepting = true;
                }

                return "OK";
            default:
                return $"FAIL Unknown command '{words[0]}'";
        }
    }

    private static int Size(string verb) => verb[^1] switch { 'b' => 1, 'w' => 2, 'l' => 4, _ => 8 };

    /// <summary>A number as QEMU's strtoul(…, 0) reads it: 0x-prefixed hex, or decimal.</summary>
    private static ulong Number(string text) =>
        text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? ulong.Parse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture)
            : ulong.Parse(text, NumberStyles.None, CultureInfo.InvariantCulture);

    private ulong ReadValue(ulong address, int size)
    {
        if (TryTransport(address, out IVirtioMmioBus? transport, out ulong offset))
        {
            return size <= 4 ? transport.Read(offset, size) : transport.Read(offset, 4) | ((ulong)transport.Read(offset + 4, 4) << 32);
        }

        Span<byte> bytes = stackalloc byte[8];
        bytes.Clear();
        if (address < _ramBytes && _memory.TryRead(address, bytes[..size]) != GuestMemoryError.None)
        {
            bytes.Clear();
        }

        return BitConverter.ToUInt64(bytes);
    }

    private void WriteValue(ulong address, int size, ulong value)
    {
        if (TryTransport(address, out IVirtioMmioBus? transport, out ulong offset))
        {
            if (size <= 4)
            {
                transport.Write(offset, size, (uint)value);
            }
            else
            {
                transport.Write(offset, 4, (uint)value);
                transport.Write(offset + 4, 4, (uint)(value >> 32));
            }

            return;
        }

        Span<byte> bytes = stackalloc byte[8];
        BitConverter.TryWriteBytes(bytes, value);
        _ = _memory.TryWrite(address, bytes[..size]); // outside RAM: ignored, as QEMU does
    }

    private string ReadBytes(ulong address, ulong size)
    {
        if (size > 1 << 20)
        {
            throw new FormatException("read of more than 1 MiB");
        }

        byte[] bytes = new byte[size];
        if (_memory.TryRead(address, bytes) != GuestMemoryError.None)
        {
            Array.Clear(bytes);
        }

        return Convert.ToHexString(bytes).ToLowerInvariant();
    }

    private void WriteBytes(ulong address, ulong size, string hex)
    {
        if (!hex.StartsWith("0x", StringComparison.OrdinalIgnoreCase) || (ulong)(hex.Length - 2) != size * 2 || size > 1 << 20)
        {
            throw new FormatException("write: the data is not 0x followed by two hex digits per byte");
        }

        byte[] bytes = Convert.FromHexString(hex.AsSpan(2));
        _ = _memory.TryWrite(address, bytes);
    }

    private bool TryTransport(ulong address, out IVirtioMmioBus transport, out ulong offset)
    {
        ulong relative = address - 0xfeb00000;
        if (address >= 0xfeb00000 && relative < Transports * 0x200UL)
        {
            transport = _transports[relative / 0x200];
            offset = relative % 0x200;
            return true;
        }

        transport = EmptyTransport.Instance;
        offset = 0;
        return false;
    }

    /// <summary>A line changed level: tell the client, as QEMU's intercepted I/O APIC input does (only on a change).</summary>
    private void SetLevel(int index, bool high)
    {
        lock (_write)
        {
            if (_levels[index] == high)
            {
                return;
            }

            _levels[index] = high;
            if (_intercepting && _client is not null)
            {
                try
                {
                    _client.WriteLine($"IRQ {(high ? "raise" : "lower")} {5 + index}");
                }
                catch (IOException)
                {
                    // The client went away; the connection loop notices.
                }
            }
        }
    }

    /// <summary>A transport with no device behind it: MagicValue, Version 2, DeviceID 0, nothing else.</summary>
    private sealed class EmptyTransport : IVirtioMmioBus
    {
        public static readonly EmptyTransport Instance = new();

        public uint Read(ulong offset, int size) => offset switch
        {
            VirtioMmioRegisters.MagicValue => 0x74726976,
            VirtioMmioRegisters.Version => 2,
            _ => 0,
        };

        public void Write(ulong offset, int size, uint value)
        {
        }
    }
}

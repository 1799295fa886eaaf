using System;
using System.Collections.Concurrent;
using System.Globalization;
using System.IO;
using System.Net.Sockets;
using System.Text;
using System.Threading;

namespace Virtio.Interop.Qtest;

/// <summary>
/// A client of QEMU's qtest protocol (softmmu/qtest.c) over a Unix socket: line-based commands
/// (<c>readl ADDR</c> → <c>OK 0x&lt;16 hex digits&gt;</c>, <c>writel ADDR VAL</c> → <c>OK</c>, <c>read ADDR SIZE</c>,
/// <c>write ADDR SIZE 0xHEX</c>, <c>irq_intercept_in ioapic</c>), one in flight at a time, and the asynchronous
/// <c>IRQ raise N</c> / <c>IRQ lower N</c> lines, which may arrive before the <c>OK</c> of the command that caused
/// them and are delivered to <see cref="IrqRaised"/> / <see cref="IrqLowered"/> on the reader thread.
/// <para>
/// Every number is formatted as 0x-prefixed hex: QEMU aborts on a malformed number. Every wait is bounded by
/// <see cref="Timeout"/>; a <c>FAIL</c> or <c>ERR</c> reply throws <see cref="QtestException"/>.
/// </para>
/// </summary>
public sealed class QtestClient : IDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamWriter _writer;
    private readonly BlockingCollection<string> _replies = new();
    private readonly Thread _reader;
    private readonly object _send = new();
    private volatile bool _closed;

    private QtestClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: false);
        _writer = new StreamWriter(_stream, new UTF8Encoding(false)) { NewLine = "\n", AutoFlush = true };
        _reader = new Thread(ReadLines) { IsBackground = true, Name = "qtest reader" };
        _reader.Start();
    }

    /// <summary>Raised on the reader thread for <c>IRQ raise N</c>.</summary>
    public event Action<int>? IrqRaised;

    /// <summary>Raised on the reader thread for <c>IRQ lower N</c>.</summary>
    public event Action<int>? IrqLowered;

    /// <summary>How long a command may wait for its reply.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Connects to a qtest server listening on the Unix socket <paramref name="path"/>.</summary>
    public static QtestClient Connect(string path)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint(path));
            return new QtestClient(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Sends one command line and returns its reply line (<c>OK ...</c>).</summary>
    public string Command(string line)
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        lock (_send)
        {
            _writer.WriteLine(line);
            if (!_replies.TryTake(out string? reply, Timeout))
            {
                throw new TimeoutException($"qtest: no reply to '{line}' within {Timeout}.");
            }

            if (!reply.StartsWith("OK", StringComparison.Ordinal))
            {
                throw new QtestException(line, reply);
            }

            return reply;
        }
    }

    /// <summary>Routes the I/O APIC's input lines to <c>IRQ raise/lower</c> events.</summary>
    public void InterceptIoApic() => Command("irq_intercept_in ioapic");

    /// <summary>Reads 1, 2, 4 or 8 bytes at a guest physical address.</summary>
    public ulong ReadValue(ulong address, int size) => ParseValue(Command($"{ReadVerb(size)} 0x{address:x}"));

    /// <summary>Writes 1, 2, 4 or 8 bytes at a guest physical address.</summary>
    public void WriteValue(ulong address, int size, ulong value) => Command($"{WriteVerb(size)} 0x{address:x} 0x{value:x}");

    /// <summary>Reads guest memory through QEMU (<c>read ADDR SIZE</c>).</summary>
    public void Read(ulong address, Span<byte> destination)
    {
        string reply = Command($"read 0x{address:x} 0x{destination.Length:x}");
        string hex = reply.Length > 5 ? reply[5..] : string.Empty; // "OK 0x...."
        if (hex.Length != destination.Length * 2)
        {
            throw new QtestException($"read 0x{address:x}", reply);
        }

        for (int i = 0; i < destination.Length; i++)
        {
            destination[i] = byte.Parse(hex.AsSpan(2 * i, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        }
    }

    /// <summary>Writes guest memory through QEMU (<c>write ADDR SIZE 0xHEX</c>).</summary>
    public void Write(ulong address, ReadOnlySpan<byte> source)
    {
        var hex = new StringBuilder(source.Length * 2);
        foreach (byte b in source)
        {
            hex.Append(b.ToString("x2", CultureInfo.InvariantCulture));
        }

        Command($"write 0x{address:x} 0x{source.Length:x} 0x{hex}");
    }

    /// <summary>Closes the connection.</summary>
    public void Dispose()
    {
        if (_closed)
        {
            return;
        }

        _closed = true;
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
            // Already gone (QEMU exited).
        }

        _socket.Dispose();
        _reader.Join(TimeSpan.FromSeconds(5));
        _writer.Dispose();
        _stream.Dispose();
        _replies.Dispose();
    }

    private static string ReadVerb(int size) => size switch { 1 => "readb", 2 => "readw", 4 => "readl", 8 => "readq", _ => throw new ArgumentOutOfRangeException(nameof(size)) };

    private static string WriteVerb(int size) => size switch { 1 => "writeb", 2 => "writew", 4 => "writel", 8 => "writeq", _ => throw new ArgumentOutOfRangeException(nameof(size)) };

    private static ulong ParseValue(string reply)
    {
        // "OK 0x0000000074726976"
        int at = reply.IndexOf("0x", StringComparison.Ordinal);
        if (at < 0 || !ulong.TryParse(reply.AsSpan(at + 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong value))
        {
            throw new QtestException("read", reply);
        }

        return value;
    }

    private void ReadLines()
    {
        try
        {
            using var reader = new StreamReader(_stream, new UTF8Encoding(false), detectEncodingFromByteOrderMarks: false, bufferSize: 4096, leaveOpen: true);
            while (!_closed && reader.ReadLine() is string line)
            {
                if (line.StartsWith("IRQ raise ", StringComparison.Ordinal))
                {
                    IrqRaised?.Invoke(int.Parse(line.AsSpan(10), CultureInfo.InvariantCulture));
                }
                else if (line.StartsWith("IRQ lower ", StringComparison.Ordinal))
                {
                    IrqLowered?.Invoke(int.Parse(line.AsSpan(10), CultureInfo.InvariantCulture));
                }
                else if (line.Length > 0)
                {
                    _replies.Add(line);
                }
            }
        }
        catch (IOException)
        {
            // The connection closed.
        }
        catch (ObjectDisposedException)
        {
            // Disposed while reading.
        }
    }
}

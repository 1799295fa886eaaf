using System;
using System.Collections.Generic;
using System.IO;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;

namespace Virtio.Interop.Qmp;

/// <summary>
/// A small QMP client (QEMU Machine Protocol: JSON lines over a Unix socket): reads the greeting, negotiates
/// capabilities, executes commands and returns their <c>return</c> value, keeping the asynchronous events it reads
/// on the way (<see cref="Events"/>). One command at a time.
/// </summary>
public sealed class QmpClient : IDisposable
{
    private readonly Socket _socket;
    private readonly StreamReader _reader;
    private readonly StreamWriter _writer;
    private readonly List<JsonObject> _events = [];

    private QmpClient(Socket socket)
    {
        _socket = socket;
        var stream = new NetworkStream(socket, ownsSocket: true);
        _reader = new StreamReader(stream, new UTF8Encoding(false));
        _writer = new StreamWriter(stream, new UTF8Encoding(false)) { NewLine = "\n", AutoFlush = true };
    }

    /// <summary>Events received so far (each the whole JSON object, with <c>event</c> and <c>data</c>).</summary>
    public IReadOnlyList<JsonObject> Events => _events;

    /// <summary>Connects to <paramref name="path"/>, reads the greeting and sends <c>qmp_capabilities</c>.</summary>
    public static QmpClient Connect(string path, TimeSpan timeout)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = (int)timeout.TotalMilliseconds };
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint(path));
            var client = new QmpClient(socket);
            JsonObject greeting = client.ReadObject();
            while (greeting.ContainsKey("event"))
            {
                client._events.Add(greeting); // QEMU may queue an event (RESUME, say) ahead of the greeting
                greeting = client.ReadObject();
            }

            if (!greeting.ContainsKey("QMP"))
            {
                throw new InvalidDataException($"Not a QMP greeting: {greeting.ToJsonString()}");
            }

            client.Execute("qmp_capabilities");
            return client;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Executes <paramref name="command"/> with <paramref name="arguments"/> and returns its <c>return</c> value.</summary>
    /// <exception cref="QmpException">QEMU answered with an error.</exception>
    public JsonNode? Execute(string command, JsonObject? arguments = null)
    {
        var request = new JsonObject { ["execute"] = command };
        if (arguments is not null)
        {
            request["arguments"] = arguments;
        }

        _writer.WriteLine(request.ToJsonString());
        while (true)
        {
            JsonObject reply = ReadObject();
            if (reply.ContainsKey("event"))
            {
                _events.Add(reply);
                continue;
            }

            if (reply["error"] is JsonObject error)
            {
                throw new QmpException(command, error["class"]?.GetValue<string>() ?? "", error["desc"]?.GetValue<string>() ?? "");
            }

            return reply["return"];
        }
    }

    /// <summary>Closes the connection.</summary>
    public void Dispose()
    {
        _writer.Dispose();
        _reader.Dispose();
        _socket.Dispose();
    }

    private JsonObject ReadObject()
    {
        string line = _reader.ReadLine() ?? throw new EndOfStreamException("QMP closed the connection.");
        return JsonNode.Parse(line) as JsonObject ?? throw new InvalidDataException($"Not a JSON object: {line}");
    }
}

using System;
using System.IO;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using System.Threading;
using Virtio.Balloon;
using Virtio.Balloon.Device;

namespace Virtio.BalloonServer;

/// <summary>
/// The host side of our balloon, driven the way QEMU's is: a QMP-style control socket (JSON lines, QEMU's greeting,
/// reply and error shapes) answering <c>qmp_capabilities</c>, <c>balloon</c>, <c>query-balloon</c>,
/// <c>qom-get</c>/<c>qom-set</c> of <c>guest-stats</c> and <c>guest-stats-polling-interval</c>, and commands of our
/// own for free page hinting: <c>x-free-page-hint-request</c>, <c>x-free-page-hint-stop</c>,
/// <c>x-free-page-hint-done</c>, <c>x-query-free-page-hints</c>.
/// </summary>
internal sealed class BalloonQmpServer : IDisposable
{
    private readonly BalloonDevice _device;
    private readonly ulong _ramBytes;
    private readonly System.Collections.Generic.List<StreamWriter> _clients = [];
    private long _lastActual = -1;
    private Socket? _listener;
    private Timer? _statsTimer;
    private int _pollingInterval;

    public BalloonQmpServer(BalloonDevice device, ulong ramBytes)
    {
        _device = device;
        _ramBytes = ramBytes;
        _device.ActualPagesChanged += (_, _) => BalloonChanged();
    }

    public void Serve(string path)
    {
        File.Delete(path);
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(path));
        _listener.Listen(4);
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

            var thread = new Thread(() => ServeConnection(connection)) { IsBackground = true, Name = "qmp connection" };
            thread.Start();
        }
    }

    public void Dispose()
    {
        _listener?.Dispose();
        _statsTimer?.Dispose();
    }

    private void ServeConnection(Socket connection)
    {
        using (connection)
        using (var stream = new NetworkStream(connection, ownsSocket: false))
        using (var reader = new StreamReader(stream, new UTF8Encoding(false)))
        using (var writer = new StreamWriter(stream, new UTF8Encoding(false)) { NewLine = "\n", AutoFlush = true })
        {
            try
            {
                lock (_clients)
                {
                    writer.WriteLine("""{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 0}, "package": "Virtio.BalloonServer"}, "capabilities": []}}""");
                    _clients.Add(writer);
                }

                while (reader.ReadLine() is string line)
                {
                    JsonObject reply = Execute(line);
                    lock (_clients)
                    {
                        writer.WriteLine(reply.ToJsonString());
                    }
                }
            }
            catch (IOException)
            {
                // The client went away.
            }
            finally
            {
                lock (_clients)
                {
                    _clients.Remove(writer);
                }
            }
        }
    }

    private JsonObject Execute(string line)
    {
        JsonObject? request;
        try
        {
            request = JsonNode.Parse(line) as JsonObject;
        }
        catch (System.Text.Json.JsonException e)
        {
            return Error("GenericError", $"JSON parse error: {e.Message}");
        }

        string? command = request?["execute"]?.GetValue<string>();
        JsonObject arguments = request?["arguments"] as JsonObject ?? [];
        try
        {
            return command switch
            {
                "qmp_capabilities" => Return(new JsonObject()),
                "balloon" => Balloon(arguments),
                "query-balloon" => Return(new JsonObject { ["actual"] = (long)(_ramBytes - ((ulong)_device.ActualPages << 12)) }),
                "qom-get" => QomGet(arguments),
                "qom-set" => QomSet(arguments),
                "x-free-page-hint-request" => Return(new JsonObject { ["id"] = _device.RequestFreePageHints() }),
                "x-free-page-hint-stop" => Stop(),
                "x-free-page-hint-done" => Done(),
                "x-query-free-page-hints" => Return(new JsonObject
                {
                    ["status"] = _device.FreePageHintStatus.ToString().ToLowerInvariant(),
                    ["id"] = _device.FreePageHintCommandId,
                    ["reports"] = _device.FreePageHintReports,
                    ["hint-blocks"] = _device.HintBlocks,
                    ["hinted-pages"] = _device.HintedPages,
                    ["ignored-blocks"] = _device.IgnoredHintBlocks,
                }),
                null => Error("GenericError", "QMP input lacks member 'execute'"),
                _ => Error("CommandNotFound", $"The command {command} has not been found"),
            };
        }
        catch (InvalidOperationException e)
        {
            return Error("GenericError", e.Message);
        }
        catch (FormatException e)
        {
            return Error("GenericError", e.Message);
        }
    }

    private JsonObject Balloon(JsonObject arguments)
    {
        long value = arguments["value"]?.GetValue<long>() ?? throw new FormatException("Parameter 'value' is missing");
        if (value <= 0 || (ulong)value > _ramBytes)
        {
            return Error("GenericError", "Parameter 'value' expects a size between 1 and the guest's RAM");
        }

        _device.SetTargetPages((uint)((_ramBytes - (ulong)value) >> 12)); // QEMU: num_pages = (ram_size - target) >> 12
        return Return(new JsonObject());
    }

    private JsonObject QomGet(JsonObject arguments)
    {
        string? property = arguments["property"]?.GetValue<string>();
        if (property == "guest-stats-polling-interval")
        {
            return Return(JsonValue.Create(_pollingInterval));
        }

        if (property != "guest-stats")
        {
            return Error("GenericError", $"Property '{property}' not found");
        }

        BalloonStatistics? stats = _device.LastStatistics;
        var values = new JsonObject();
        string[] names = ["stat-swap-in", "stat-swap-out", "stat-major-faults", "stat-minor-faults", "stat-free-memory",
            "stat-total-memory", "stat-available-memory", "stat-disk-caches", "stat-htlb-pgalloc", "stat-htlb-pgfail"];
        for (int tag = 0; tag < names.Length; tag++)
        {
            ulong? value = stats?.Get((BalloonStatTag)tag);
            values[names[tag]] = value is ulong u ? (long)u : -1; // QEMU reports -1 for what the guest did not send
        }

        return Return(new JsonObject { ["stats"] = values, ["last-update"] = stats?.UpdatedAt.ToUnixTimeSeconds() ?? 0 });
    }

    private JsonObject QomSet(JsonObject arguments)
    {
        if (arguments["property"]?.GetValue<string>() != "guest-stats-polling-interval")
        {
            return Error("GenericError", "Only guest-stats-polling-interval can be set");
        }

        int seconds = arguments["value"]?.GetValue<int>() ?? 0;
        _pollingInterval = Math.Max(0, seconds);
        _statsTimer?.Dispose();
        _statsTimer = seconds > 0 ? new Timer(_ => _device.RequestStatistics(), null, TimeSpan.FromSeconds(seconds), TimeSpan.FromSeconds(seconds)) : null;
        return Return(new JsonObject());
    }

    private JsonObject Stop()
    {
        _device.StopFreePageHints();
        return Return(new JsonObject());
    }

    private JsonObject Done()
    {
        _device.FinishFreePageHints();
        return Return(new JsonObject());
    }

    /// <summary>QEMU's BALLOON_CHANGE event, sent to every client when the guest's <c>actual</c> changed.</summary>
    private void BalloonChanged()
    {
        long actual = (long)(_ramBytes - ((ulong)_device.ActualPages << 12));
        if (Interlocked.Exchange(ref _lastActual, actual) == actual)
        {
            return;
        }

        long micros = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1000;
        var message = new JsonObject
        {
            ["timestamp"] = new JsonObject { ["seconds"] = micros / 1_000_000, ["microseconds"] = micros % 1_000_000 },
            ["event"] = "BALLOON_CHANGE",
            ["data"] = new JsonObject { ["actual"] = actual },
        }.ToJsonString();
        lock (_clients)
        {
            foreach (StreamWriter client in _clients)
            {
                try
                {
                    client.WriteLine(message);
                }
                catch (IOException)
                {
                    // That client went away.
                }
            }
        }
    }

    private static JsonObject Return(JsonNode? value) => new() { ["return"] = value };

    private static JsonObject Error(string errorClass, string description) =>
        new() { ["error"] = new JsonObject { ["class"] = errorClass, ["desc"] = description } };
}

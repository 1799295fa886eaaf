using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.IO.MemoryMappedFiles;
using System.Net.Sockets;
using System.Text;
using System.Threading;
using Virtio.Interop.Qmp;
using Virtio.Interop.Qtest;
using Virtio.Ring;

namespace Virtio.Interop.Qemu;

/// <summary>
/// A machine for interop tests behind the qtest protocol, as a real child process: QEMU (microvm with
/// <c>acpi=off</c>, TCG, a qtest socket, a QMP socket, guest RAM in a shared file this process maps, QEMU's
/// virtio-balloon on one of the virtio-mmio transports), or our own qtest server laid out the same way. Guest
/// physical address = offset in the file. <see cref="Dispose"/> kills the process by pid and removes its sockets
/// and the shared file, whatever happened.
/// </summary>
public sealed unsafe class QtestMachine : IDisposable
{
    /// <summary>The first virtio-mmio transport of microvm; transport i is at <c>MmioBase + i * MmioStride</c>.</summary>
    public const ulong MmioBase = 0xfeb00000;

    /// <summary>Bytes between two transports.</summary>
    public const ulong MmioStride = 0x200;

    /// <summary>Transports microvm creates.</summary>
    public const int MmioTransports = 32;

    /// <summary>With <c>acpi=off</c>, transport i's interrupt is GSI <c>FirstGsi + i</c>.</summary>
    public const int FirstGsi = 5;

    private static int s_instances;
    private readonly Process _process;
    private readonly StringBuilder _stderr = new();
    private readonly string _qtestPath;
    private readonly string _qmpPath;
    private readonly string _memoryPath;
    private MemoryMappedFile? _file;
    private MemoryMappedViewAccessor? _view;
    private bool _disposed;

    private QtestMachine(Process process, string qtestPath, string qmpPath, string memoryPath)
    {
        _process = process;
        _qtestPath = qtestPath;
        _qmpPath = qmpPath;
        _memoryPath = memoryPath;
        Qtest = null!;
        Qmp = null!;
        Memory = null!;
    }

    /// <summary>The qtest connection (register access, guest memory, interrupt lines).</summary>
    public QtestClient Qtest { get; private set; }

    /// <summary>The QMP connection.</summary>
    public QmpClient Qmp { get; private set; }

    /// <summary>Guest RAM, mapped from the shared file (GPA = file offset).</summary>
    public GuestMemory Memory { get; private set; }

    /// <summary>The file in /dev/shm that holds guest RAM.</summary>
    public string SharedMemoryPath => _memoryPath;

    /// <summary>QEMU's standard error so far.</summary>
    public string StandardError
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    /// <summary>True when <c>qemu-system-x86_64</c> is on the PATH.</summary>
    public static bool IsAvailable => FindOnPath("qemu-system-x86_64") is not null;

    /// <summary>Starts QEMU with its balloon device, waits (bounded) for its sockets, maps its RAM and intercepts the I/O APIC's lines.</summary>
    public static QtestMachine StartWithBalloon(QemuBalloonOptions options, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        string qemu = FindOnPath("qemu-system-x86_64") ?? throw new InvalidOperationException("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86).");
        (string qtestPath, string qmpPath, string memoryPath) = NewPaths();
        ulong megabytes = options.MemoryBytes >> 20;
        var device = new StringBuilder("virtio-balloon-device,id=balloon0");
        if (options.FreePageHint)
        {
            device.Append(",free-page-hint=on,iothread=io0");
        }

        device.Append(options.FreePageReporting ? ",free-page-reporting=on" : ",free-page-reporting=off");
        device.Append(options.DeflateOnOom ? ",deflate-on-oom=on" : ",deflate-on-oom=off");
        if (options.Packed)
        {
            device.Append(",packed=on");
        }

        var arguments = new List<string>
        {
            "-machine", "microvm,acpi=off", "-accel", "tcg",
            "-qtest", $"unix:{qtestPath},server=on,wait=off", "-qtest-log", "none",
            "-object", $"memory-backend-file,id=mem,size={megabytes}M,mem-path={memoryPath},share=on",
            "-machine", "memory-backend=mem", "-m", $"{megabytes}M",
            "-global", "virtio-mmio.force-legacy=false",
            "-object", "iothread,id=io0",
            "-device", device.ToString(),
            "-qmp", $"unix:{qmpPath},server=on,wait=off",
            "-display", "none", "-nodefaults", "-serial", "none", "-monitor", "none",
        };
        if (options.Paused)
        {
            arguments.Add("-S");
        }

        return Launch(qemu, arguments, qtestPath, qmpPath, memoryPath, options.MemoryBytes, timeout);
    }

    /// <summary>
    /// Starts another qtest server as a child process (our own, say: <c>dotnet Virtio.BalloonServer.dll</c>), given
    /// <c>--qtest unix:PATH --qmp unix:PATH --memory BYTES --mem-path FILE</c> and then
    /// <paramref name="arguments"/>, and attaches to it as to QEMU.
    /// </summary>
    public static QtestMachine StartServer(string fileName, IEnumerable<string> arguments, ulong memoryBytes, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        (string qtestPath, string qmpPath, string memoryPath) = NewPaths();
        var all = new List<string>(arguments)
        {
            "--qtest", $"unix:{qtestPath}", "--qmp", $"unix:{qmpPath}",
            "--memory", memoryBytes.ToString(CultureInfo.InvariantCulture), "--mem-path", memoryPath,
        };
        return Launch(fileName, all, qtestPath, qmpPath, memoryPath, memoryBytes, timeout);
    }

    private static (string Qtest, string Qmp, string Memory) NewPaths()
    {
        string name = $"virtio-interop-{Environment.ProcessId}-{Interlocked.Increment(ref s_instances)}";
        return (Path.Combine(Path.GetTempPath(), name + ".qtest"), Path.Combine(Path.GetTempPath(), name + ".qmp"), "/dev/shm/" + name);
    }

    private static QtestMachine Launch(string fileName, List<string> arguments, string qtestPath, string qmpPath, string memoryPath, ulong memoryBytes, TimeSpan? timeout)
    {
        var start = new ProcessStartInfo(fileName)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        Process process = Process.Start(start) ?? throw new InvalidOperationException($"{fileName} did not start.");
        var machine = new QtestMachine(process, qtestPath, qmpPath, memoryPath);
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (machine._stderr)
                {
                    machine._stderr.AppendLine(e.Data);
                }
            }
        };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        try
        {
            machine.Attach(memoryBytes, timeout ?? TimeSpan.FromSeconds(20));
            return machine;
        }
        catch (Exception e)
        {
            string stderr = machine.StandardError;
            machine.Dispose();
            throw new InvalidOperationException($"{Path.GetFileName(fileName)} did not come up: {e.Message}\nIt said:\n{stderr}", e);
        }
    }

    /// <summary>The transport index and base address of the first device with <paramref name="deviceId"/>, or -1.</summary>
    public (int Index, ulong BaseAddress) FindDevice(uint deviceId)
    {
        for (int i = 0; i < MmioTransports; i++)
        {
            ulong at = MmioBase + ((ulong)i * MmioStride);
            if (Qtest.ReadValue(at, 4) == 0x74726976 && Qtest.ReadValue(at + 8, 4) == deviceId)
            {
                return (i, at);
            }
        }

        return (-1, 0);
    }

    /// <summary>Kills QEMU, closes the connections, unmaps and removes the shared file and sockets.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        Qtest?.Dispose();
        Qmp?.Dispose();
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }

            _process.WaitForExit(10_000);
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }

        _process.Dispose();
        Memory?.Dispose();
        _view?.Dispose();
        _file?.Dispose();
        foreach (string path in new[] { _qtestPath, _qmpPath, _memoryPath })
        {
            try
            {
                File.Delete(path);
            }
            catch (IOException)
            {
                // Best effort.
            }
        }
    }

    private static string? FindOnPath(string program)
    {
        foreach (string directory in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
        {
            string candidate = Path.Combine(directory, program);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    private void Attach(ulong memoryBytes, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"The process exited with code {_process.ExitCode.ToString(CultureInfo.InvariantCulture)}.");
            }

            if (File.Exists(_qtestPath) && File.Exists(_qmpPath) && File.Exists(_memoryPath))
            {
                try
                {
                    Qtest = QtestClient.Connect(_qtestPath);
                    break;
                }
                catch (SocketException) when (clock.Elapsed < timeout)
                {
                    // Not listening yet.
                }
            }

            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException("QEMU's sockets did not appear in time.");
            }

            Thread.Sleep(20);
        }

        Qmp = QmpClient.Connect(_qmpPath, timeout);
        Qtest.InterceptIoApic();
        _file = MemoryMappedFile.CreateFromFile(_memoryPath, FileMode.Open, null, 0, MemoryMappedFileAccess.ReadWrite);
        _view = _file.CreateViewAccessor(0, (long)memoryBytes, MemoryMappedFileAccess.ReadWrite);
        byte* host = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref host);
        var release = new PointerRelease(_view);
        Memory = new GuestMemoryBuilder().AttachRegion(0, (nint)(host + _view.PointerOffset), memoryBytes, release).Build();
    }

    /// <summary>Releases the view's pointer when guest memory lets go of the region.</summary>
    private sealed class PointerRelease(MemoryMappedViewAccessor view) : IDisposable
    {
        public void Dispose() => view.SafeMemoryMappedViewHandle.ReleasePointer();
    }
}

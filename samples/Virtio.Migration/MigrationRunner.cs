using System;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using Spectre.Console;

namespace Virtio.Migration;

/// <summary>Builds the source guest, connects to a destination (its own, on loopback, unless one was given), migrates, and shows progress.</summary>
public static class MigrationRunner
{
    /// <summary>One migration of the scenario; <paramref name="progress"/> draws a live display when the console is interactive.</summary>
    public static MigrationResult Run(MigrationOptions options, bool withHints, bool progress = false)
    {
        using var cancel = new CancellationTokenSource();
        Task? served = null;
        System.Net.IPEndPoint endpoint;
        if (options.Destination is null)
        {
            (endpoint, served) = MigrationDestination.StartInProcess(cancel.Token);
        }
        else
        {
            endpoint = options.Destination;
        }

        using var guest = new SimulatedGuest(options);
        using var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, SendBufferSize = 4 << 20 };
        socket.Connect(endpoint);
        using var stream = new NetworkStream(socket, ownsSocket: false);
        var source = new MigrationSource(guest, options, withHints, stream);
        guest.Start();
        Thread.Sleep(50); // let the workload get going before the migration starts

        MigrationResult result;
        if (progress && AnsiConsole.Profile.Capabilities.Interactive)
        {
            MigrationResult? finished = null;
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .Start(context =>
                {
                    ProgressTask task = context.AddTask(withHints ? "migrating, with hints" : "migrating, no hints", maxValue: options.GuestPages);
                    Task<MigrationResult> run = Task.Factory.StartNew(source.Run, TaskCreationOptions.LongRunning);
                    while (!run.Wait(50))
                    {
                        int round = source.CurrentRound;
                        task.Description = round < 0 ? "stop-and-copy" : $"round {round}{(withHints ? ", with hints" : ", no hints")}";
                        task.Value = Math.Min((double)options.GuestPages, source.PagesSent);
                    }

                    task.Value = options.GuestPages;
                    finished = run.Result;
                });
            result = finished!;
        }
        else
        {
            result = source.Run();
        }

        served?.Wait(TimeSpan.FromSeconds(30));
        return result;
    }
}

using System;
using System.Buffers.Binary;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using Virtio.Ring;

namespace Virtio.Migration;

/// <summary>
/// The destination of a migration: receives RAM into its own guest memory and, at the end, checks every page the
/// source guest had allocated against the hash the source sent. One migration per connection; it may run in this
/// process (on a loopback port) or as its own process (<c>--listen</c>).
/// </summary>
public static class MigrationDestination
{
    /// <summary>Listens on <paramref name="endpoint"/> and serves migrations until cancelled (or one, when <paramref name="once"/>).</summary>
    public static void Listen(IPEndPoint endpoint, bool once, Action<IPEndPoint>? listening, CancellationToken cancel)
    {
        using var listener = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(endpoint);
        listener.Listen(4);
        listening?.Invoke((IPEndPoint)listener.LocalEndPoint!);
        using CancellationTokenRegistration stop = cancel.Register(() => listener.Close());
        while (!cancel.IsCancellationRequested)
        {
            Socket connection;
            try
            {
                connection = listener.Accept();
            }
            catch (SocketException) when (cancel.IsCancellationRequested)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }

            using (connection)
            {
                connection.NoDelay = true;
                connection.ReceiveBufferSize = 4 << 20;
                using var stream = new NetworkStream(connection, ownsSocket: false);
                Serve(stream);
            }

            if (once)
            {
                return;
            }
        }
    }

    /// <summary>Starts a destination on a loopback port in this process; returns its endpoint and the task that serves one migration.</summary>
    public static (IPEndPoint Endpoint, Task Served) StartInProcess(CancellationToken cancel)
    {
        var ready = new TaskCompletionSource<IPEndPoint>(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var t = new Thread(() =>
        {
            try
            {
                Listen(new IPEndPoint(IPAddress.Loopback, 0), once: true, ep => ready.SetResult(ep), cancel);
                thread.SetResult();
            }
            catch (Exception e)
            {
                ready.TrySetException(e);
                thread.SetException(e);
            }
        })
        { IsBackground = true, Name = "migration destination" };
        t.Start();
        return (ready.Task.GetAwaiter().GetResult(), thread.Task);
    }

    /// <summary>Serves one migration on <paramref name="stream"/>.</summary>
    public static void Serve(Stream stream)
    {
        if (MigrationWire.ReadUInt32(stream) != MigrationWire.Hello || MigrationWire.ReadUInt32(stream) != MigrationWire.Version)
        {
            throw new InvalidDataException("Not a migration stream of this version.");
        }

        ulong pages = MigrationWire.ReadUInt64(stream);
        if (pages == 0 || pages > (1UL << 38))
        {
            throw new InvalidDataException($"A guest of {pages} pages is out of range.");
        }

        using GuestMemory memory = GuestMemory.Allocate(pages * PageContents.PageSize);
        long received = 0;
        long bytes = 16;
        long checkedPages = 0;
        long mismatches = 0;
        ulong first = ulong.MaxValue;
        byte[] pfnBytes = new byte[MigrationWire.MaxBatch * 16];
        byte[] pageBytes = new byte[MigrationWire.MaxBatch * PageContents.PageSize];
        while (true)
        {
            uint tag = MigrationWire.ReadUInt32(stream);
            if (tag == MigrationWire.Done)
            {
                break;
            }

            int count = (int)MigrationWire.ReadUInt32(stream);
            if (count is < 0 or > MigrationWire.MaxBatch)
            {
                throw new InvalidDataException($"A batch of {count} entries.");
            }

            if (tag == MigrationWire.Pages)
            {
                Span<byte> list = pfnBytes.AsSpan(0, count * 8);
                stream.ReadExactly(list);
                Span<byte> contents = pageBytes.AsSpan(0, count * PageContents.PageSize);
                stream.ReadExactly(contents); // the whole batch in one read, then page by page into RAM
                for (int i = 0; i < count; i++)
                {
                    ulong pfn = BinaryPrimitives.ReadUInt64LittleEndian(list[(8 * i)..]);
                    if (pfn >= pages || memory.TryGetSpan(pfn * PageContents.PageSize, PageContents.PageSize, out Span<byte> page) != GuestMemoryError.None)
                    {
                        throw new InvalidDataException($"Page {pfn} is outside the guest.");
                    }

                    contents.Slice(i * PageContents.PageSize, PageContents.PageSize).CopyTo(page);
                }

                received += count;
                bytes += MigrationWire.HeaderBytes + (count * (8L + PageContents.PageSize));
            }
            else if (tag == MigrationWire.Verify)
            {
                Span<byte> pairs = pfnBytes.AsSpan(0, count * 16);
                stream.ReadExactly(pairs);
                for (int i = 0; i < count; i++)
                {
                    ulong pfn = BinaryPrimitives.ReadUInt64LittleEndian(pairs[(16 * i)..]);
                    ulong hash = BinaryPrimitives.ReadUInt64LittleEndian(pairs[((16 * i) + 8)..]);
                    if (pfn >= pages)
                    {
                        throw new InvalidDataException($"Page {pfn} is outside the guest.");
                    }

                    memory.TryGetSpan(pfn * PageContents.PageSize, PageContents.PageSize, out Span<byte> page);
                    checkedPages++;
                    if (PageContents.Hash(page) != hash)
                    {
                        mismatches++;
                        first = Math.Min(first, pfn);
                    }
                }
            }
            else
            {
                throw new InvalidDataException($"Unknown tag 0x{tag:x8}.");
            }
        }

        Span<byte> report = stackalloc byte[DestinationReport.Size];
        new DestinationReport(received, bytes, checkedPages, mismatches, first).WriteTo(report);
        stream.Write(report);
        stream.Flush();
    }
}

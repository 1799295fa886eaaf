using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Threading;
using Virtio.Ring.Transport;

namespace Virtio.Ring.Tests.Transport;

/// <summary>
/// Asynchronous completion: chains popped on the serving thread and completed from other threads, in any
/// order, arrive exactly once with their payload intact; completions for a queue that was reset since are
/// dropped and counted, never pushed onto the new ring.
/// </summary>
public class AsyncCompletionTests
{
    private const ulong Version1 = 1UL << VirtioFeatureBits.Version1;
    private const ulong EventIdx = 1UL << VirtioFeatureBits.EventIdx;
    private const ulong Packed = 1UL << VirtioFeatureBits.RingPacked;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    public static TheoryData<QueueThreading, ulong> Modes()
    {
        var data = new TheoryData<QueueThreading, ulong>();
        foreach (QueueThreading t in new[] { QueueThreading.Inline, QueueThreading.WorkerPerQueue, QueueThreading.WorkerPerDevice })
        {
            data.Add(t, Version1 | EventIdx);
            data.Add(t, Version1 | Packed | EventIdx);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void Completions_from_other_threads_arrive_exactly_once_with_their_payload(QueueThreading threading, ulong wanted)
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = threading });
        var tickets = new BlockingCollection<(CompletionTicket Ticket, uint Length)>();
        rig.Device.Deferrer = (ticket, length) => tickets.Add((ticket, length));
        WorkerLifecycleTests.Initialize(rig, wanted);

        using var start = new Barrier(3);
        int rejected = 0;
        var completers = new Thread[2];
        for (int c = 0; c < completers.Length; c++)
        {
            int seed = c;
            completers[c] = new Thread(() =>
            {
                var rng = new Random(seed);
                var batch = new List<(CompletionTicket, uint)>();
                start.SignalAndWait(Bound);
                while (!tickets.IsCompleted)
                {
                    if (tickets.TryTake(out (CompletionTicket, uint) item, 10))
                    {
                        batch.Add(item);
                    }

                    // Complete out of order: a few at a time, shuffled.
                    if (batch.Count > 0 && (batch.Count >= 3 || tickets.Count == 0))
                    {
                        while (batch.Count > 0)
                        {
                            int k = rng.Next(batch.Count);
                            if (!rig.Device.Complete(batch[k].Item1, batch[k].Item2))
                            {
                                Interlocked.Increment(ref rejected);
                            }

                            batch.RemoveAt(k);
                        }
                    }
                }
            });
            completers[c].Start();
        }

        const int Total = 20_000;
        var seen = new bool[Total];
        int received = 0;
        int next = 0;
        start.SignalAndWait(Bound);
        while (received < Total)
        {
            if (next < Total)
            {
                int n = Math.Min(8, Total - next);
                next += SendChecksummed(rig, next, n);
            }

            foreach (int token in rig.ReceiveAtLeast(1, Bound))
            {
                Assert.False(seen[token], $"token {token} twice");
                seen[token] = true;
                received++;
            }
        }

        tickets.CompleteAdding();
        foreach (Thread t in completers)
        {
            Assert.True(t.Join(Bound));
        }

        Assert.Equal(0, rejected);
        Assert.Equal(0, rig.Device.DroppedCompletions);
        Assert.Null(rig.Device.LastFault);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void Completions_that_arrive_after_a_reset_are_dropped_and_counted(QueueThreading threading, ulong wanted)
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = threading });
        var tickets = new ConcurrentQueue<(CompletionTicket Ticket, uint Length)>();
        rig.Device.Deferrer = (ticket, length) => tickets.Enqueue((ticket, length));
        WorkerLifecycleTests.Initialize(rig, wanted);
        Assert.Equal(5, rig.Send(0, 5));
        Assert.True(SpinWait.SpinUntil(() => tickets.Count == 5, Bound));

        rig.Driver.Reset(); // the driver reclaims the five; their tickets are now stale
        var outstanding = new HashSet<int> { 0, 1, 2, 3, 4 };
        WorkerLifecycleTests.Reclaim(rig, outstanding);
        Assert.Empty(outstanding);

        WorkerLifecycleTests.Initialize(rig, wanted);
        rig.Device.Deferrer = null; // the new incarnation echoes synchronously
        Assert.Equal(3, rig.Send(100, 3));
        Assert.Equal(3, rig.ReceiveAtLeast(3, Bound).Count);

        // The old completions arrive late from another thread: dropped, counted, nothing reaches the new ring.
        var late = new Thread(() =>
        {
            while (tickets.TryDequeue(out (CompletionTicket Ticket, uint Length) item))
            {
                Assert.False(rig.Device.Complete(item.Ticket, item.Length));
            }
        });
        late.Start();
        Assert.True(late.Join(Bound));
        Assert.Equal(5, rig.Device.DroppedCompletions);
        Assert.Empty(rig.Receive());
        Assert.Null(rig.Device.LastFault);
        Assert.Equal(2, rig.Send(200, 2));
        Assert.Equal(2, rig.ReceiveAtLeast(2, Bound).Count);
    }

    [Fact]
    public void Completing_a_chain_twice_is_a_contained_model_bug()
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = QueueThreading.WorkerPerQueue });
        using var faulted = new ManualResetEventSlim();
        rig.Device.Faulted += (_, _) => faulted.Set();
        var tickets = new ConcurrentQueue<(CompletionTicket Ticket, uint Length)>();
        rig.Device.Deferrer = (ticket, length) => tickets.Enqueue((ticket, length));
        WorkerLifecycleTests.Initialize(rig, Version1);
        Assert.Equal(1, rig.Send(0, 1));
        Assert.True(SpinWait.SpinUntil(() => tickets.Count == 1, Bound));
        Assert.True(tickets.TryDequeue(out (CompletionTicket Ticket, uint Length) t));
        Assert.True(rig.Device.Complete(t.Ticket, t.Length));
        Assert.Single(rig.ReceiveAtLeast(1, Bound));
        rig.Device.Complete(t.Ticket, t.Length); // again: the worker's push throws, the boundary contains it
        Assert.True(faulted.Wait(Bound));
        Assert.Equal(VirtioDeviceFaultKind.ModelException, rig.Device.LastFault!.Kind);
        Assert.Equal(DeviceStatus.DeviceNeedsReset, rig.Driver.Status & DeviceStatus.DeviceNeedsReset);
    }

    [Fact]
    public void Steady_state_completion_allocates_nothing()
    {
        using var rig = new MmioRig(options: new VirtioDeviceOptions { Threading = QueueThreading.Inline });
        var held = new (CompletionTicket Ticket, uint Length)[64];
        int count = 0;
        rig.Device.Deferrer = (ticket, length) => held[count++] = (ticket, length);
        WorkerLifecycleTests.Initialize(rig, Version1 | EventIdx);
        for (int warm = 0; warm < 100; warm++)
        {
            Cycle();
        }

        long sendBytes = 0;
        long completeBytes = 0;
        for (int i = 0; i < 100; i++)
        {
            count = 0;
            AddWithoutKick(rig, i * 8, 8);
            long t0 = GC.GetAllocatedBytesForCurrentThread();
            rig.Driver.Notify(0); // the device pops, echoes and defers all eight on this thread
            long t1 = GC.GetAllocatedBytesForCurrentThread();
            for (int k = 0; k < count; k++)
            {
                rig.Device.Complete(held[k].Ticket, held[k].Length);
            }

            long t2 = GC.GetAllocatedBytesForCurrentThread();
            sendBytes += t1 - t0;
            completeBytes += t2 - t1;
            Assert.Equal(8, count);
            while (rig.Queue!.TryGetUsed(out _, out _))
            {
            }
        }

        Assert.Equal(0, sendBytes);
        Assert.Equal(0, completeBytes);

        void Cycle()
        {
            count = 0;
            rig.Send(0, 8);
            for (int k = 0; k < count; k++)
            {
                rig.Device.Complete(held[k].Ticket, held[k].Length);
            }

            rig.Receive();
        }
    }

    private static void AddWithoutKick(MmioRig rig, int first, int count)
    {
        Span<GuestRange> readable = stackalloc GuestRange[1];
        Span<GuestRange> writable = stackalloc GuestRange[1];
        for (int token = first; token < first + count; token++)
        {
            ulong slot = MmioRig.DataBase + ((ulong)(token % 4096) * 16);
            readable[0] = new GuestRange(slot, 4);
            writable[0] = new GuestRange(slot + 8, 4);
            Assert.True(rig.Queue!.TryAdd(readable, writable, token));
        }

        rig.Queue!.PublishAvailable();
    }

    // The echo device copies the 4 readable bytes (the token) into the writable ones; ReceiveAtLeast checks
    // every echo against its token, so a payload mixed up between chains or completions is caught.
    private static int SendChecksummed(MmioRig rig, int first, int count) => rig.Send(first, count);
}

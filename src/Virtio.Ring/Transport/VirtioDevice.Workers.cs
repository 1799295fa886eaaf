using System;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.Versioning;
using System.Threading;
using Virtio.Ring.Transport.Linux;

namespace Virtio.Ring.Transport;

/// <summary>The serving side of <see cref="VirtioDevice"/>: inline processing and queue workers.</summary>
public abstract partial class VirtioDevice
{
    private QueueWorker[] _workers = [];

    /// <summary>
    /// Worker modes: the eventfd that wakes queue <paramref name="index"/>'s worker. Register it with KVM as the
    /// queue's ioeventfd (KVM_IOEVENTFD on the QueueNotify address, with a datamatch on the queue index) and
    /// guest kicks reach the worker without an exit to user space. Null in <see cref="QueueThreading.Inline"/>
    /// mode or for an index out of range. Owned by the device.
    /// </summary>
    [SupportedOSPlatform("linux")]
    public EventFd? KickEventFd(int index) => (uint)index < (uint)_queues.Length ? _queues[index].Kick : null;

    /// <summary>
    /// Serves queue <paramref name="index"/> once on the serving thread: drains completions handed over from
    /// other threads and, if it was kicked, runs <see cref="OnQueueNotify"/>. Every exception and every broken
    /// ring becomes a contained fault. Inline it runs under the control lock; on a worker, under the worker's
    /// serve lock with the worker unparked, so the queue cannot be torn down meanwhile.
    /// </summary>
    /// <param name="index">The queue.</param>
    /// <param name="kicked">Run <see cref="OnQueueNotify"/> (a notification, or the device's own look at the queue).</param>
    /// <param name="notifications">Available-buffer notifications from the driver behind this call, for the counters (the device's own looks are not).</param>
    [SuppressMessage("Design", "CA1031:Do not catch general exception types", Justification = "The device-model boundary: a model's exception must not end a worker thread or reach the transport.")]
    internal void ServeQueue(int index, bool kicked, ulong notifications = 0)
    {
        VirtqueueSlot slot = _queues[index];
        DeviceVirtqueue? queue = Volatile.Read(ref slot.Queue); // acquire: pairs with the release in SetQueueReady
        if (queue is null || Volatile.Read(ref _paused) != 0 || (Status & (DeviceStatus.DriverOk | DeviceStatus.DeviceNeedsReset | DeviceStatus.Failed)) != DeviceStatus.DriverOk)
        {
            return;
        }

        string stage = nameof(Complete);
        try
        {
            if (Volatile.Read(ref slot.DrainRequested) != 0)
            {
                DrainCompletions(index, slot, queue);
            }

            if (notifications != 0)
            {
                queue.CountNotificationsReceived(notifications);
            }

            if (kicked)
            {
                stage = nameof(OnQueueNotify);
                OnQueueNotify(index, queue, Volatile.Read(ref slot.NotificationData));
            }
        }
        catch (Exception ex)
        {
            ReportFault(new VirtioDeviceFault(VirtioDeviceFaultKind.ModelException, stage, index, QueueError.None, 0, ex));
            return;
        }

        if (queue.IsBroken)
        {
            ReportFault(new VirtioDeviceFault(VirtioDeviceFaultKind.QueueBroken, stage, index, queue.Error, queue.ErrorDetail, null));
        }
    }

    /// <summary>
    /// Of <paramref name="signals"/> read from queue <paramref name="index"/>'s kick eventfd, those the driver made
    /// (the device's own are subtracted; an eventfd adds up signals, so one read may hold both).
    /// </summary>
    internal ulong DriverKicks(int index, ulong signals)
    {
        ulong own = (ulong)Interlocked.Exchange(ref _queues[index].OwnKicks, 0);
        return signals > own ? signals - own : 0;
    }

    /// <summary>The workers' Linux thread IDs (0 for one not started yet); empty inline. For tests and diagnostics.</summary>
    internal int[] WorkerThreadIds()
    {
        int[] ids = new int[_workers.Length];
        for (int i = 0; i < ids.Length && OperatingSystem.IsLinux(); i++)
        {
            ids[i] = _workers[i].OsThreadId;
        }

        return ids;
    }

    /// <summary>Has the serving thread look at queue <paramref name="index"/> (control thread, under the lock).</summary>
    private void KickLocked(int index)
    {
        if (_threading == QueueThreading.Inline)
        {
            ServeQueue(index, kicked: true);
        }
        else if (OperatingSystem.IsLinux())
        {
            EventFd? kick = _queues[index].Kick;
            if (kick is not null)
            {
                Interlocked.Increment(ref _queues[index].OwnKicks); // before the signal: the worker subtracts it from what it reads
                kick.Signal();
            }
        }
    }

    [SupportedOSPlatform("linux")]
    private void StartWorkers(string name)
    {
        var kicks = new EventFd[_queues.Length];
        for (int i = 0; i < _queues.Length; i++)
        {
            kicks[i] = EventFd.Create();
            _queues[i].Kick = kicks[i];
        }

        if (_threading == QueueThreading.WorkerPerDevice)
        {
            int[] all = new int[_queues.Length];
            for (int i = 0; i < all.Length; i++)
            {
                all[i] = i;
            }

            var worker = new QueueWorker(this, all, kicks, name);
            _workers = [worker];
            foreach (VirtqueueSlot slot in _queues)
            {
                slot.Worker = worker;
            }
        }
        else
        {
            _workers = new QueueWorker[_queues.Length];
            for (int i = 0; i < _queues.Length; i++)
            {
                _workers[i] = new QueueWorker(this, [i], [kicks[i]], $"{name} q{i}");
                _queues[i].Worker = _workers[i];
            }
        }
    }

    private void ParkWorkers()
    {
        if (OperatingSystem.IsLinux())
        {
            foreach (QueueWorker worker in _workers)
            {
                worker.Park();
            }
        }
    }

    private void ResumeWorkers()
    {
        if (OperatingSystem.IsLinux() && !_disposed && Volatile.Read(ref _paused) == 0)
        {
            foreach (QueueWorker worker in _workers)
            {
                worker.Resume();
            }
        }
    }

    private void StopWorkers()
    {
        if (OperatingSystem.IsLinux())
        {
            foreach (QueueWorker worker in _workers)
            {
                worker.Dispose();
            }
        }
    }

    private void DisposeKicks()
    {
        if (OperatingSystem.IsLinux())
        {
            foreach (VirtqueueSlot slot in _queues)
            {
                slot.Kick?.Dispose();
                slot.Kick = null;
                slot.Worker = null;
            }
        }
    }

    /// <summary>Wakes the worker that serves <paramref name="slot"/> so it drains completions.</summary>
    private static void WakeServer(VirtqueueSlot slot)
    {
        if (OperatingSystem.IsLinux())
        {
            slot.Worker?.Wake();
        }
    }
}

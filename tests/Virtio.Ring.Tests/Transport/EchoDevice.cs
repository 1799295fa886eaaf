using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Threading;
using Virtio.Ring.Transport;

namespace Virtio.Ring.Tests.Transport;

/// <summary>
/// A small device model for transport tests (device ID 42): queue 0 echoes each chain's readable bytes into its
/// writable bytes. Config space: le32 <c>value</c> (device-written), le32 <c>scratch</c> (driver-writable).
/// Safe to run on a worker thread: its counters are atomic.
/// <list type="bullet">
/// <item><description><see cref="Deferrer"/> set: the echo is written at once, but the chain is completed later
/// by whoever the deferrer hands the ticket to (asynchronous completion).</description></item>
/// <item><description><see cref="Hold"/> set: chains are echoed and kept in flight until
/// <see cref="CompleteHeld"/>; the held list is part of the model state a snapshot carries.</description></item>
/// <item><description><see cref="ThrowOnNotify"/> set: <see cref="OnQueueNotify"/> throws it (a buggy model).</description></item>
/// </list>
/// </summary>
internal sealed class EchoDevice : VirtioDevice
{
    public const uint Id = 42;
    public const int ConfigBytes = 8;

    private readonly GuestMemory _memory;
    private readonly object _heldLock = new();
    private readonly List<(ushort Id, uint Length)> _held = [];
    private int _notifications;
    private int _echoed;
    private int _resets;

    public EchoDevice(GuestMemory memory, ulong deviceFeatures = 0, int queues = 2, int maxQueueSize = 256, VirtioDeviceOptions? options = null)
        : base(Id, deviceFeatures, queues, maxQueueSize, ConfigBytes, options)
    {
        _memory = memory;
        OnReset();
    }

    public int Notifications => Volatile.Read(ref _notifications);

    public uint LastNotificationData { get; private set; }

    public int ResetCount => Volatile.Read(ref _resets);

    public int Echoed => Volatile.Read(ref _echoed);

    public Func<ulong, bool>? FeatureCheck { get; set; }

    public Func<ulong, int>? QueueCountRule { get; set; }

    public Func<int, int, bool>? ConfigWritableRule { get; set; }

    public Action<CompletionTicket, uint>? Deferrer { get; set; }

    public bool Hold { get; set; }

    public Exception? ThrowOnNotify { get; set; }

    public Exception? ThrowOnReset { get; set; }

    public Exception? ThrowOnDriverOk { get; set; }

    public int HeldCount
    {
        get
        {
            lock (_heldLock)
            {
                return _held.Count;
            }
        }
    }

    protected override GuestMemory Memory => _memory;

    /// <summary>The device changes its config: new value, generation bump, configuration change notification.</summary>
    public void SetValue(uint value)
    {
        using ConfigChange change = BeginConfigChange();
        BinaryPrimitives.WriteUInt32LittleEndian(change.Config, value);
    }

    /// <summary>Completes every held chain from the calling thread; returns how many were handed over.</summary>
    public int CompleteHeld()
    {
        (ushort Id, uint Length)[] held;
        lock (_heldLock)
        {
            held = _held.ToArray();
            _held.Clear();
        }

        int accepted = 0;
        foreach ((ushort id, uint length) in held)
        {
            accepted += Complete(DeferCompletion(0, id), length) ? 1 : 0;
        }

        return accepted;
    }

    protected override void OnQueueNotify(int index, DeviceVirtqueue queue, uint notificationData)
    {
        Interlocked.Increment(ref _notifications);
        LastNotificationData = notificationData;
        if (ThrowOnNotify is { } ex)
        {
            throw ex;
        }

        if (index != 0)
        {
            return;
        }

        Span<byte> scratch = stackalloc byte[256];
        do
        {
            queue.DisableAvailableNotifications();
            while (queue.TryPop(out DescriptorChain chain))
            {
                int n = chain.CopyReadableTo(scratch);
                int written = chain.CopyToWritable(scratch[..n]);
                Interlocked.Increment(ref _echoed);
                if (Hold)
                {
                    lock (_heldLock)
                    {
                        _held.Add((chain.Id, (uint)written));
                    }
                }
                else if (Deferrer is { } defer)
                {
                    defer(DeferCompletion(index, chain.Id), (uint)written);
                }
                else
                {
                    queue.PushUsed(chain.Id, (uint)written);
                }
            }

            if (queue.PublishUsed())
            {
                SignalUsedBuffers(index);
            }
        }
        while (queue.EnableAvailableNotifications() == NotificationRecheck.BuffersPending);
    }

    protected override void OnReset()
    {
        Interlocked.Increment(ref _resets);
        lock (_heldLock)
        {
            _held.Clear();
        }

        BinaryPrimitives.WriteUInt32LittleEndian(Config, 7);
        BinaryPrimitives.WriteUInt32LittleEndian(Config[4..], 0);
        if (ThrowOnReset is { } ex)
        {
            throw ex;
        }
    }

    protected override void OnDriverOk()
    {
        if (ThrowOnDriverOk is { } ex)
        {
            throw ex;
        }
    }

    protected override bool AcceptFeatures(ulong features) => FeatureCheck?.Invoke(features) ?? true;

    protected override int QueueCountFor(ulong negotiatedFeatures) => QueueCountRule?.Invoke(negotiatedFeatures) ?? base.QueueCountFor(negotiatedFeatures);

    protected override bool IsConfigWritable(int offset, int length) => ConfigWritableRule?.Invoke(offset, length) ?? true;

    protected override void SaveModelState(DeviceStateWriter writer)
    {
        lock (_heldLock)
        {
            writer.WriteUInt32((uint)_held.Count);
            foreach ((ushort id, uint length) in _held)
            {
                writer.WriteUInt16(id);
                writer.WriteUInt32(length);
            }
        }
    }

    protected override bool TryRestoreModelState(ref DeviceStateReader reader)
    {
        uint count = reader.ReadUInt32();
        if (count > (uint)MaxQueueSize)
        {
            return false;
        }

        var held = new List<(ushort, uint)>();
        for (int i = 0; i < count; i++)
        {
            held.Add((reader.ReadUInt16(), reader.ReadUInt32()));
        }

        if (!reader.IsValid || reader.Remaining != 0)
        {
            return false;
        }

        lock (_heldLock)
        {
            _held.Clear();
            _held.AddRange(held);
        }

        return true;
    }
}

using System;
using System.Diagnostics.CodeAnalysis;
using System.Threading;
using Virtio.Ring.Internal;
using Virtio.Ring.Packed;
using Virtio.Ring.Split;

namespace Virtio.Ring.Transport;

/// <summary>
/// Whole-device snapshots of <see cref="VirtioDevice"/>, for live migration and live update.
/// <para>
/// <b>Format</b> (version 1, little-endian): magic <c>"VDEV"</c> (u32 0x56454456), u16 version; the identity it
/// must be restored into (u32 device ID, u64 offered features, u32 queue count, u32 maximum queue size); u8
/// status, u64 driver features, u64 negotiated features, u32 configuration generation, configuration space
/// (u32 length + bytes); per queue: u16 size, u8 ready, u8 reset-done, u64 descriptor / driver / device area,
/// u32 last notification data, u8 ring format (0 none, 1 split, 2 packed) and the ring's state — split: u16
/// next available, u16 next used, u8 notifications enabled; packed: u16 next available, u8 its wrap counter,
/// u16 next used, u8 its wrap counter, u8 notifications enabled, u16 buffers in flight and for each u16 ID,
/// u16 slots; last, the device model's own state (u32 length + bytes, <see cref="SaveModelState"/>).
/// </para>
/// <para>
/// <b>Trust.</b> A snapshot arrives from outside (a migration stream), so restoring checks it like guest input:
/// every field's range, the status against the state machine, the features against the offer, each ring's
/// state against its ring in guest memory (<see cref="SplitDeviceVirtqueue.TryRestore"/>,
/// <see cref="PackedDeviceVirtqueue.TryRestore"/>). A snapshot that fails any check leaves the device reset.
/// </para>
/// </summary>
public abstract partial class VirtioDevice
{
    private const uint SnapshotMagic = 0x5645_4456; // "VDEV" read as little-endian bytes
    private const ushort SnapshotVersion = 1;
    private const int MaxModelStateBytes = 64 << 20;

    /// <summary>
    /// Saves the whole device. Workers are parked for the duration; completions already handed over are pushed
    /// and every queue's used elements published first, so the snapshot holds exactly the chains still in flight
    /// (which a device model that completes asynchronously must let finish, or save itself, before this).
    /// <para>
    /// For a live update or a migration, <see cref="Pause"/> the device first: a running device goes on serving
    /// after the snapshot, and whatever it does then is not in the snapshot (a chain used twice, once by each
    /// device). Paused, it stays paused after the save; dispose it, or <see cref="Resume"/> it if the migration
    /// fails.
    /// </para>
    /// </summary>
    [SuppressMessage("Design", "CA1031:Do not catch general exception types", Justification = "The device-model boundary.")]
    public byte[] SaveState()
    {
        lock (_control)
        {
            if (_disposed)
            {
                ThrowHelper.ThrowObjectDisposed(GetType().Name);
            }

            ParkWorkers();
            try
            {
                var w = new DeviceStateWriter();
                w.WriteUInt32(SnapshotMagic);
                w.WriteUInt16(SnapshotVersion);
                w.WriteUInt32(DeviceId);
                w.WriteUInt64(DeviceFeatures);
                w.WriteUInt32((uint)_queues.Length);
                w.WriteUInt32((uint)MaxQueueSize);
                w.WriteByte((byte)Status);
                w.WriteUInt64(_driverFeatures);
                w.WriteUInt64(NegotiatedFeatures);
                lock (_configLock)
                {
                    w.WriteUInt32(_configGeneration);
                    w.WriteBytes(_config);
                }

                for (int i = 0; i < _queues.Length; i++)
                {
                    if (Volatile.Read(ref _queues[i].DrainRequested) != 0 && _queues[i].Queue is { } queue)
                    {
                        DrainForSnapshot(i, _queues[i], queue);
                    }

                    WriteQueue(w, _queues[i]);
                }

                var model = new DeviceStateWriter();
                try
                {
                    SaveModelState(model);
                }
                catch (Exception ex)
                {
                    ReportFault(new VirtioDeviceFault(VirtioDeviceFaultKind.ModelException, nameof(SaveModelState), -1, QueueError.None, 0, ex));
                    throw new InvalidOperationException("The device model failed to save its state.", ex);
                }

                w.WriteBytes(model.WrittenSpan);
                return w.ToArray();
            }
            finally
            {
                ResumeWorkers();
            }
        }
    }

    /// <summary>
    /// Restores a snapshot from <see cref="SaveState"/> into this device (same device ID, offered features,
    /// queue count, maximum queue size and configuration size), after parking the workers and dropping whatever
    /// the device held. Returns false with the reason when the snapshot is refused; the device is then reset.
    /// Once restored, every ready queue of a running device is served once, since kicks may have been lost.
    /// </summary>
    public bool TryRestoreState(ReadOnlySpan<byte> state, out DeviceStateError error)
    {
        lock (_control)
        {
            if (_disposed)
            {
                ThrowHelper.ThrowObjectDisposed(GetType().Name);
            }

            ParkWorkers();
            try
            {
                error = RestoreLocked(state);
                if (error != DeviceStateError.None)
                {
                    ResetLocked();
                }
            }
            finally
            {
                ResumeWorkers();
            }

            if (error == DeviceStateError.None && (Status & DeviceStatus.DriverOk) != 0)
            {
                for (int i = 0; i < _queues.Length; i++)
                {
                    if (_queues[i].Queue is not null)
                    {
                        KickLocked(i);
                    }
                }
            }

            return error == DeviceStateError.None;
        }
    }

    /// <summary>Pushes completions handed over before the save (the device may be paused: ServeQueue would not).</summary>
    [SuppressMessage("Design", "CA1031:Do not catch general exception types", Justification = "The device-model boundary.")]
    private void DrainForSnapshot(int index, VirtqueueSlot slot, DeviceVirtqueue queue)
    {
        if ((Status & (DeviceStatus.DriverOk | DeviceStatus.DeviceNeedsReset | DeviceStatus.Failed)) != DeviceStatus.DriverOk)
        {
            return;
        }

        try
        {
            DrainCompletions(index, slot, queue);
        }
        catch (Exception ex)
        {
            ReportFault(new VirtioDeviceFault(VirtioDeviceFaultKind.ModelException, nameof(Complete), index, QueueError.None, 0, ex));
        }
    }

    /// <summary>Writes the device model's own state (whatever is not in configuration space or the rings).</summary>
    protected virtual void SaveModelState(DeviceStateWriter writer)
    {
    }

    /// <summary>
    /// Reads back what <see cref="SaveModelState"/> wrote, checking it like guest input. Called after the rest of
    /// the device was restored (status, features, configuration space, queues). False refuses the snapshot. The
    /// default accepts only an empty model state.
    /// </summary>
    protected virtual bool TryRestoreModelState(ref DeviceStateReader reader) => reader.Remaining == 0;

    private static void WriteQueue(DeviceStateWriter w, VirtqueueSlot slot)
    {
        w.WriteUInt16((ushort)slot.Size);
        w.WriteBoolean(slot.Ready);
        w.WriteBoolean(slot.ResetDone);
        w.WriteUInt64(slot.DescriptorArea);
        w.WriteUInt64(slot.DriverArea);
        w.WriteUInt64(slot.DeviceArea);
        w.WriteUInt32(slot.NotificationData);
        DeviceVirtqueue? queue = slot.Queue;
        if (queue?.Split is { } split)
        {
            split.FlushUsed();
            SplitQueueState s = split.SaveState();
            w.WriteByte(1);
            w.WriteUInt16(s.NextAvail);
            w.WriteUInt16(s.NextUsed);
            w.WriteBoolean(s.NotificationsEnabled);
        }
        else if (queue?.Packed is { } packed)
        {
            packed.FlushUsed();
            PackedQueueState s = packed.SaveState();
            w.WriteByte(2);
            w.WriteUInt16(s.NextAvail);
            w.WriteBoolean(s.AvailWrapCounter);
            w.WriteUInt16(s.NextUsed);
            w.WriteBoolean(s.UsedWrapCounter);
            w.WriteBoolean(s.NotificationsEnabled);
            PackedInFlightBuffer[] inFlight = s.InFlight ?? [];
            w.WriteUInt16((ushort)inFlight.Length);
            foreach (PackedInFlightBuffer b in inFlight)
            {
                w.WriteUInt16(b.Id);
                w.WriteUInt16(b.Slots);
            }
        }
        else
        {
            w.WriteByte(0);
        }
    }

    [SuppressMessage("Design", "CA1031:Do not catch general exception types", Justification = "The device-model boundary.")]
    private DeviceStateError RestoreLocked(ReadOnlySpan<byte> state)
    {
        foreach (VirtqueueSlot slot in _queues)
        {
            DetachLocked(slot);
            slot.ClearConfiguration(MaxQueueSize);
        }

        var r = new DeviceStateReader(state);
        uint magic = r.ReadUInt32();
        ushort version = r.ReadUInt16();
        if (!r.IsValid)
        {
            return DeviceStateError.Malformed;
        }

        if (magic != SnapshotMagic)
        {
            return DeviceStateError.WrongMagic;
        }

        if (version != SnapshotVersion)
        {
            return DeviceStateError.UnsupportedVersion;
        }

        uint deviceId = r.ReadUInt32();
        ulong offered = r.ReadUInt64();
        uint queueCount = r.ReadUInt32();
        uint maxQueueSize = r.ReadUInt32();
        var status = (DeviceStatus)r.ReadByte();
        ulong driverFeatures = r.ReadUInt64();
        ulong negotiated = r.ReadUInt64();
        uint generation = r.ReadUInt32();
        ReadOnlySpan<byte> config = r.ReadBytes(_config.Length);
        if (!r.IsValid)
        {
            return DeviceStateError.Malformed;
        }

        if (deviceId != DeviceId || offered != DeviceFeatures || queueCount != (uint)_queues.Length
            || maxQueueSize != (uint)MaxQueueSize || config.Length != _config.Length)
        {
            return DeviceStateError.DeviceMismatch;
        }

        if (!IsReachableStatus(status))
        {
            return DeviceStateError.InvalidStatus;
        }

        bool featuresOk = (status & DeviceStatus.FeaturesOk) != 0;
        if (featuresOk
            ? negotiated != driverFeatures || !FeatureSetAllowed(negotiated)
            : negotiated != 0)
        {
            return DeviceStateError.InvalidFeatures;
        }

        Volatile.Write(ref _status, (int)status);
        _driverFeatures = driverFeatures;
        Volatile.Write(ref _negotiatedFeatures, negotiated);
        Volatile.Write(ref _presentQueues, featuresOk ? PresentQueuesFor(negotiated) : _queues.Length);
        lock (_configLock)
        {
            config.CopyTo(_config);
            Volatile.Write(ref _configGeneration, generation);
        }

        bool packedRing = (negotiated & (1UL << VirtioFeatureBits.RingPacked)) != 0;
        VirtqueueFeatures ringFeatures = VirtqueueFeaturesExtensions.FromFeatureBits(negotiated);
        for (int i = 0; i < _queues.Length; i++)
        {
            DeviceStateError queueError = RestoreQueue(ref r, i, featuresOk, packedRing, ringFeatures);
            if (queueError != DeviceStateError.None)
            {
                return queueError;
            }
        }

        ReadOnlySpan<byte> model = r.ReadBytes(MaxModelStateBytes);
        if (!r.IsValid || r.Remaining != 0)
        {
            return DeviceStateError.Malformed;
        }

        var modelReader = new DeviceStateReader(model);
        try
        {
            return TryRestoreModelState(ref modelReader) && modelReader.IsValid ? DeviceStateError.None : DeviceStateError.ModelStateRejected;
        }
        catch (Exception ex)
        {
            ReportFault(new VirtioDeviceFault(VirtioDeviceFaultKind.ModelException, nameof(TryRestoreModelState), -1, QueueError.None, 0, ex));
            return DeviceStateError.ModelStateRejected;
        }
    }

    private DeviceStateError RestoreQueue(ref DeviceStateReader r, int index, bool featuresOk, bool packedRing, VirtqueueFeatures ringFeatures)
    {
        VirtqueueSlot slot = _queues[index];
        ushort size = r.ReadUInt16();
        bool ready = r.ReadBoolean();
        bool resetDone = r.ReadBoolean();
        ulong desc = r.ReadUInt64();
        ulong driver = r.ReadUInt64();
        ulong device = r.ReadUInt64();
        uint notificationData = r.ReadUInt32();
        byte format = r.ReadByte();
        if (!r.IsValid)
        {
            return DeviceStateError.Malformed;
        }

        if (size < 1 || size > MaxQueueSize || (ready && !featuresOk) || (ready && resetDone) || (ready && !IsQueuePresent(index))
            || format != (!ready ? 0 : packedRing ? 2 : 1))
        {
            return DeviceStateError.InvalidQueueConfiguration;
        }

        slot.Size = size;
        slot.DescriptorArea = desc;
        slot.DriverArea = driver;
        slot.DeviceArea = device;
        slot.ResetDone = resetDone;
        slot.NotificationData = notificationData;
        if (!ready)
        {
            return DeviceStateError.None;
        }

        var addresses = new VirtqueueAddresses(size, desc, driver, device);
        DeviceVirtqueue? queue;
        if (format == 1)
        {
            var s = new SplitQueueState(addresses.AsSplit(), ringFeatures, r.ReadUInt16(), r.ReadUInt16(), r.ReadBoolean());
            if (!r.IsValid)
            {
                return DeviceStateError.Malformed;
            }

            queue = DeviceVirtqueue.TryRestore(Memory, s, out DeviceVirtqueue? restored, out _) ? restored : null;
        }
        else
        {
            ushort nextAvail = r.ReadUInt16();
            bool availWrap = r.ReadBoolean();
            ushort nextUsed = r.ReadUInt16();
            bool usedWrap = r.ReadBoolean();
            bool notifications = r.ReadBoolean();
            ushort count = r.ReadUInt16();
            if (!r.IsValid || count > size)
            {
                return r.IsValid ? DeviceStateError.InvalidRingState : DeviceStateError.Malformed;
            }

            var inFlight = new PackedInFlightBuffer[count];
            for (int i = 0; i < count; i++)
            {
                inFlight[i] = new PackedInFlightBuffer(r.ReadUInt16(), r.ReadUInt16());
            }

            if (!r.IsValid)
            {
                return DeviceStateError.Malformed;
            }

            var s = new PackedQueueState(addresses.AsPacked(), ringFeatures, nextAvail, availWrap, nextUsed, usedWrap, notifications, inFlight);
            queue = DeviceVirtqueue.TryRestore(Memory, s, out DeviceVirtqueue? restored, out _) ? restored : null;
        }

        if (queue is null)
        {
            return DeviceStateError.InvalidRingState;
        }

        slot.Ready = true;
        Volatile.Write(ref slot.Queue, queue);
        return DeviceStateError.None;
    }

    private static bool IsReachableStatus(DeviceStatus status)
    {
        const DeviceStatus known = DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk
            | DeviceStatus.DriverOk | DeviceStatus.DeviceNeedsReset | DeviceStatus.Failed;
        return (status & ~known) == 0
            && ((status & DeviceStatus.Driver) == 0 || (status & DeviceStatus.Acknowledge) != 0)
            && ((status & DeviceStatus.FeaturesOk) == 0 || (status & DeviceStatus.Driver) != 0)
            && ((status & DeviceStatus.DriverOk) == 0 || (status & DeviceStatus.FeaturesOk) != 0);
    }
}

using System;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Transport;

/// <summary>
/// The base of every device model (the balloon, a block device, ...): device ID, offered features, the status
/// state machine, feature negotiation, per-queue configuration, configuration space with its generation counter,
/// notifications both ways, and reset (VIRTIO 1.2, 2 "Basic Facilities of a Virtio Device", 3.1 "Device
/// Initialization").
/// <para>
/// <b>Where a transport plugs in.</b> A transport translates its register interface into the public members of
/// this class and nothing else: <see cref="ReadDeviceFeatures"/>, <see cref="WriteDriverFeatures"/>,
/// <see cref="WriteStatus"/>, the <c>Queue*</c> members, <see cref="NotifyQueue"/>, <see cref="ReadConfig"/>,
/// <see cref="WriteConfig"/>, and it supplies an <see cref="IVirtioInterrupt"/>. <see cref="Mmio.VirtioMmioTransport"/>
/// is one; virtio-pci (modern capabilities: common config, notify, ISR, device config) or a vhost-user backend
/// (SET_FEATURES, SET_VRING_ADDR, SET_VRING_KICK, ...) would be others, with no change to device code.
/// </para>
/// <para>
/// <b>Threads.</b> Control operations and queue processing are serialized by one lock per device, as a VMM's
/// device lock (QEMU's BQL, Firecracker's device mutex) would: a reset from a vCPU thread never tears a queue down
/// under the device's processing. The lock is taken once per notification, never per buffer or descriptor.
/// </para>
/// </summary>
public abstract class VirtioDevice : IDisposable
{
    /// <summary>Transport and ring features every device offers on top of its own.</summary>
    public const ulong CommonFeatures =
        (1UL << VirtioFeatureBits.Version1)
        | (1UL << VirtioFeatureBits.IndirectDesc)
        | (1UL << VirtioFeatureBits.EventIdx)
        | (1UL << VirtioFeatureBits.RingPacked)
        | (1UL << VirtioFeatureBits.NotificationData)
        | (1UL << VirtioFeatureBits.RingReset);

    private readonly object _control = new();
    private readonly VirtqueueSlot[] _queues;
    private readonly byte[] _config;
    private ulong _driverFeatures;
    private ulong _negotiatedFeatures;
    private DeviceStatus _status;
    private uint _configGeneration;
    private bool _disposed;

    /// <summary>Creates the device in the reset state.</summary>
    /// <param name="deviceId">Device ID (5 for the balloon).</param>
    /// <param name="deviceFeatures">Device-specific features, and <c>VIRTIO_F_IN_ORDER</c> if the device uses buffers in order.</param>
    /// <param name="queueCount">Number of virtqueues.</param>
    /// <param name="maxQueueSize">Largest queue size the device accepts (QueueSizeMax).</param>
    /// <param name="configSize">Bytes of device configuration space.</param>
    protected VirtioDevice(uint deviceId, ulong deviceFeatures, int queueCount, int maxQueueSize, int configSize)
    {
        if (queueCount is < 0 or > 1024)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(queueCount), "0 to 1024 queues.");
        }

        if (maxQueueSize is < 1 or > 32768)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(maxQueueSize), "1 to 32768.");
        }

        DeviceId = deviceId;
        DeviceFeatures = deviceFeatures | CommonFeatures;
        MaxQueueSize = maxQueueSize;
        _config = new byte[configSize];
        _queues = new VirtqueueSlot[queueCount];
        for (int i = 0; i < queueCount; i++)
        {
            _queues[i] = new VirtqueueSlot();
            _queues[i].Clear(maxQueueSize);
        }
    }

    /// <summary>Device ID.</summary>
    public uint DeviceId { get; }

    /// <summary>Features the device offers.</summary>
    public ulong DeviceFeatures { get; }

    /// <summary>Largest queue size.</summary>
    public int MaxQueueSize { get; }

    /// <summary>Number of queues.</summary>
    public int QueueCount => _queues.Length;

    /// <summary>Bytes of configuration space.</summary>
    public int ConfigSize => _config.Length;

    /// <summary>The status field.</summary>
    public DeviceStatus Status
    {
        get
        {
            lock (_control)
            {
                return _status;
            }
        }
    }

    /// <summary>Features the driver wrote so far (both 32-bit banks).</summary>
    public ulong DriverFeatures
    {
        get
        {
            lock (_control)
            {
                return _driverFeatures;
            }
        }
    }

    /// <summary>The features in force once FEATURES_OK was accepted; 0 before.</summary>
    public ulong NegotiatedFeatures
    {
        get
        {
            lock (_control)
            {
                return _negotiatedFeatures;
            }
        }
    }

    /// <summary>Changes whenever the device changes its configuration space.</summary>
    public uint ConfigGeneration
    {
        get
        {
            lock (_control)
            {
                return _configGeneration;
            }
        }
    }

    /// <summary>Where notifications to the driver go; the transport sets it.</summary>
    public IVirtioInterrupt? Interrupt { get; set; }

    /// <summary>
    /// Set by a legacy transport (virtio-mmio Version 1): VERSION_1 is then not required at FEATURES_OK, and only
    /// the split ring exists.
    /// </summary>
    public bool LegacyTransport { get; set; }

    /// <summary>True when the negotiated features include <paramref name="bit"/>.</summary>
    public bool HasFeature(int bit) => (NegotiatedFeatures & (1UL << bit)) != 0;

    /// <summary>32 bits of the offered features: bank 0 is bits 0-31, bank 1 bits 32-63, others 0.</summary>
    public uint ReadDeviceFeatures(uint bank) => bank < 2 ? (uint)(DeviceFeatures >> (int)(32 * bank)) : 0;

    /// <summary>
    /// Stores 32 bits of the driver's accepted features. Ignored once FEATURES_OK is set (3.1.1: features are
    /// fixed from then on) or for banks beyond 1.
    /// </summary>
    public void WriteDriverFeatures(uint bank, uint value)
    {
        lock (_control)
        {
            if (bank >= 2 || (_status & DeviceStatus.FeaturesOk) != 0)
            {
                return;
            }

            int shift = (int)(32 * bank);
            _driverFeatures = (_driverFeatures & ~(0xFFFF_FFFFUL << shift)) | ((ulong)value << shift);
        }
    }

    /// <summary>
    /// The driver writes the status field. 0 resets the device. Otherwise the write must keep every bit already
    /// set (2.1.1: the driver never clears a bit) and follow 3.1.1's order; FEATURES_OK is only accepted for a
    /// feature set the device offered that includes VERSION_1 and that the device model accepts — else the bit
    /// stays clear and the driver sees that when it re-reads. A write that breaks the order is ignored.
    /// </summary>
    public void WriteStatus(DeviceStatus value)
    {
        lock (_control)
        {
            if (value == DeviceStatus.Reset)
            {
                ResetLocked();
                return;
            }

            DeviceStatus current = _status;
            if ((value & current) != current)
            {
                return; // clearing a bit: not allowed
            }

            DeviceStatus added = value & ~current;
            if ((added & DeviceStatus.Failed) != 0)
            {
                _status |= DeviceStatus.Failed;
                return;
            }

            DeviceStatus next = current;
            if ((added & DeviceStatus.Acknowledge) != 0)
            {
                next |= DeviceStatus.Acknowledge;
            }

            if ((added & DeviceStatus.Driver) != 0)
            {
                if ((next & DeviceStatus.Acknowledge) == 0)
                {
                    return;
                }

                next |= DeviceStatus.Driver;
            }

            if ((added & DeviceStatus.FeaturesOk) != 0)
            {
                if ((next & DeviceStatus.Driver) == 0)
                {
                    return;
                }

                if (!FeaturesAcceptable(_driverFeatures))
                {
                    _status = next; // the driver re-reads, sees FEATURES_OK clear and gives up (3.1.1 step 6)
                    return;
                }

                _negotiatedFeatures = _driverFeatures;
                next |= DeviceStatus.FeaturesOk;
            }

            bool driverOk = false;
            if ((added & DeviceStatus.DriverOk) != 0)
            {
                if ((next & DeviceStatus.FeaturesOk) == 0)
                {
                    return;
                }

                next |= DeviceStatus.DriverOk;
                driverOk = true;
            }

            _status = next;
            if (driverOk)
            {
                OnDriverOk();
            }
        }
    }

    /// <summary>Queue size the driver chose (QueueSize), initially <see cref="MaxQueueSize"/>.</summary>
    public int QueueSize(int index) => WithQueue(index, static q => q.Size);

    /// <summary>Sets the queue size; ignored for a ready queue, or a size of 0 or above the maximum.</summary>
    public void SetQueueSize(int index, int size) => ConfigureQueue(index, q =>
    {
        if (size >= 1 && size <= MaxQueueSize)
        {
            q.Size = size;
        }
    });

    /// <summary>The three area addresses the driver programmed.</summary>
    public VirtqueueAddresses QueueAddresses(int index) =>
        WithQueue(index, static q => new VirtqueueAddresses(q.Size, q.DescriptorArea, q.DriverArea, q.DeviceArea));

    /// <summary>Sets the descriptor area address (QueueDesc); ignored for a ready queue.</summary>
    public void SetQueueDescriptorArea(int index, ulong address) => ConfigureQueue(index, q => q.DescriptorArea = address);

    /// <summary>Sets the driver area address (QueueDriver); ignored for a ready queue.</summary>
    public void SetQueueDriverArea(int index, ulong address) => ConfigureQueue(index, q => q.DriverArea = address);

    /// <summary>Sets the device area address (QueueDevice); ignored for a ready queue.</summary>
    public void SetQueueDeviceArea(int index, ulong address) => ConfigureQueue(index, q => q.DeviceArea = address);

    /// <summary>QueueReady as the driver reads it back.</summary>
    public bool IsQueueReady(int index) => WithQueue(index, static q => q.Ready);

    /// <summary>QueueReset as the driver reads it back: true once a queue reset has completed.</summary>
    public bool IsQueueResetDone(int index) => WithQueue(index, static q => q.ResetDone);

    /// <summary>
    /// The driver enables the queue (QueueReady = 1): the device attaches to the ring in the format the
    /// negotiated features select and validates the addresses against guest memory. Bad addresses or size set
    /// DEVICE_NEEDS_RESET instead. Needs FEATURES_OK. Writing 0 is ignored (a queue is disabled by reset).
    /// </summary>
    public void SetQueueReady(int index, bool ready)
    {
        lock (_control)
        {
            if (!ready || (uint)index >= (uint)_queues.Length || (_status & DeviceStatus.FeaturesOk) == 0)
            {
                return;
            }

            VirtqueueSlot slot = _queues[index];
            if (slot.Ready)
            {
                return;
            }

            var addresses = new VirtqueueAddresses(slot.Size, slot.DescriptorArea, slot.DriverArea, slot.DeviceArea);
            if (!DeviceVirtqueue.TryAttach(Memory, addresses, _negotiatedFeatures, out DeviceVirtqueue? queue, out QueueError error))
            {
                LastQueueError = error;
                NeedsResetLocked();
                return;
            }

            slot.Queue = queue;
            slot.Ready = true;
            slot.ResetDone = false;
        }
    }

    /// <summary>
    /// Resets one queue (QueueReset = 1, with <c>VIRTIO_F_RING_RESET</c>): detaches it and returns its
    /// configuration to the initial state; <see cref="IsQueueResetDone"/> then reads 1.
    /// </summary>
    public void ResetQueue(int index)
    {
        lock (_control)
        {
            if ((uint)index >= (uint)_queues.Length || (_negotiatedFeatures & (1UL << VirtioFeatureBits.RingReset)) == 0)
            {
                return;
            }

            _queues[index].Clear(MaxQueueSize);
            _queues[index].ResetDone = true;
            OnQueueReset(index);
        }
    }

    /// <summary>
    /// A driver notification for queue <paramref name="index"/> (QueueNotify, or an ioeventfd the VMM wired).
    /// <paramref name="notificationData"/> is the full 32-bit value written, meaningful with
    /// <c>VIRTIO_F_NOTIFICATION_DATA</c> (queue index in bits 0-15, then the driver's next position).
    /// Ignored unless DRIVER_OK is set and the queue is ready. A queue the guest broke sets DEVICE_NEEDS_RESET.
    /// </summary>
    public void NotifyQueue(int index, uint notificationData = 0)
    {
        lock (_control)
        {
            if ((uint)index >= (uint)_queues.Length
                || (_status & (DeviceStatus.DriverOk | DeviceStatus.DeviceNeedsReset | DeviceStatus.Failed)) != DeviceStatus.DriverOk)
            {
                return;
            }

            DeviceVirtqueue? queue = _queues[index].Queue;
            if (queue is null)
            {
                return;
            }

            OnQueueNotify(index, queue, notificationData);
            if (queue.IsBroken)
            {
                LastQueueError = queue.Error;
                NeedsResetLocked();
            }
        }
    }

    /// <summary>The error that last made the device set DEVICE_NEEDS_RESET.</summary>
    public QueueError LastQueueError { get; private set; }

    /// <summary>
    /// Reads configuration space. Returns the bytes copied: 0 when the range is not inside the space (the read
    /// is then ignored, as for any access the transport cannot map).
    /// </summary>
    public int ReadConfig(int offset, Span<byte> destination)
    {
        lock (_control)
        {
            if (offset < 0 || destination.Length > _config.Length - offset || offset > _config.Length)
            {
                return 0;
            }

            _config.AsSpan(offset, destination.Length).CopyTo(destination);
            return destination.Length;
        }
    }

    /// <summary>The driver writes configuration space (only the device-writable fields matter to the model).</summary>
    public void WriteConfig(int offset, ReadOnlySpan<byte> source)
    {
        lock (_control)
        {
            if (offset < 0 || offset > _config.Length || source.Length > _config.Length - offset)
            {
                return;
            }

            source.CopyTo(_config.AsSpan(offset));
            OnConfigWritten(offset, source.Length);
        }
    }

    /// <summary>Disposes every attached queue.</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>The guest memory queues attach to.</summary>
    protected abstract GuestMemory Memory { get; }

    /// <summary>
    /// The device's configuration space, for the model to read (and initialise in its constructor and
    /// <see cref="OnReset"/>). After changing it while the driver runs, call <see cref="CommitConfigChange"/>.
    /// </summary>
    protected Span<byte> Config => _config;

    /// <summary>The queue at <paramref name="index"/> if the driver made it ready; for models that process on their own threads.</summary>
    protected DeviceVirtqueue? Queue(int index) => (uint)index < (uint)_queues.Length ? _queues[index].Queue : null;

    /// <summary>Processes a notification for a ready queue; runs under the device lock.</summary>
    protected abstract void OnQueueNotify(int index, DeviceVirtqueue queue, uint notificationData);

    /// <summary>Called when the driver sets DRIVER_OK.</summary>
    protected virtual void OnDriverOk()
    {
    }

    /// <summary>Called on device reset, after the queues are gone: return every device resource to its initial state.</summary>
    protected virtual void OnReset()
    {
    }

    /// <summary>Called after a single queue reset.</summary>
    protected virtual void OnQueueReset(int index)
    {
    }

    /// <summary>Device-specific check of the features the driver accepted (the subset and VERSION_1 are checked already).</summary>
    protected virtual bool AcceptFeatures(ulong features) => true;

    /// <summary>Called after the driver wrote configuration space.</summary>
    protected virtual void OnConfigWritten(int offset, int length)
    {
    }

    /// <summary>
    /// The model changed configuration space: bumps the generation counter and, once the driver is running,
    /// sends a configuration change notification (2.4.1).
    /// </summary>
    protected void CommitConfigChange()
    {
        lock (_control)
        {
            _configGeneration++;
            if ((_status & DeviceStatus.DriverOk) != 0)
            {
                Interrupt?.Raise(VirtioInterruptReason.ConfigurationChange, -1);
            }
        }
    }

    /// <summary>Sends a used buffer notification for queue <paramref name="index"/>.</summary>
    protected void SignalUsedBuffers(int index) => Interrupt?.Raise(VirtioInterruptReason.UsedBuffer, index);

    /// <summary>Disposes queues.</summary>
    protected virtual void Dispose(bool disposing)
    {
        if (_disposed || !disposing)
        {
            return;
        }

        _disposed = true;
        lock (_control)
        {
            foreach (VirtqueueSlot slot in _queues)
            {
                slot.Clear(MaxQueueSize);
            }
        }
    }

    private bool FeaturesAcceptable(ulong features) =>
        (features & ~DeviceFeatures) == 0
        && ((features & (1UL << VirtioFeatureBits.Version1)) != 0 || LegacyTransport)
        && AcceptFeatures(features);

    private void NeedsResetLocked()
    {
        bool wasSet = (_status & DeviceStatus.DeviceNeedsReset) != 0;
        _status |= DeviceStatus.DeviceNeedsReset;
        if (!wasSet && (_status & DeviceStatus.DriverOk) != 0)
        {
            // 2.1.2: with DRIVER_OK set, DEVICE_NEEDS_RESET comes with a configuration change notification.
            Interrupt?.Raise(VirtioInterruptReason.ConfigurationChange, -1);
        }
    }

    private void ResetLocked()
    {
        foreach (VirtqueueSlot slot in _queues)
        {
            slot.Clear(MaxQueueSize);
        }

        _status = DeviceStatus.Reset;
        _driverFeatures = 0;
        _negotiatedFeatures = 0;
        LastQueueError = QueueError.None;
        OnReset();
    }

    private T WithQueue<T>(int index, Func<VirtqueueSlot, T> read)
    {
        lock (_control)
        {
            return (uint)index < (uint)_queues.Length ? read(_queues[index]) : default!;
        }
    }

    private void ConfigureQueue(int index, Action<VirtqueueSlot> change)
    {
        lock (_control)
        {
            if ((uint)index < (uint)_queues.Length && !_queues[index].Ready)
            {
                change(_queues[index]);
            }
        }
    }
}

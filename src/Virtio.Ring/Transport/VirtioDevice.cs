using System;
using System.Diagnostics.CodeAnalysis;
using System.Threading;
using Virtio.Ring.Diagnostics;
using Virtio.Ring.Internal;

namespace Virtio.Ring.Transport;

/// <summary>
/// The base of every device model (the balloon, a block device, ...): device ID, offered features, the status
/// state machine, feature negotiation, per-queue configuration, configuration space with its generation counter,
/// notifications both ways, reset, failure containment, queue workers, asynchronous completion and whole-device
/// snapshots (VIRTIO 1.2, 2 "Basic Facilities of a Virtio Device", 3.1 "Device Initialization").
/// <para>
/// <b>Where a transport plugs in.</b> A transport translates its register interface into the public members of
/// this class and nothing else: <see cref="ReadDeviceFeatures"/>, <see cref="WriteDriverFeatures"/>,
/// <see cref="WriteStatus"/>, the <c>Queue*</c> members, <see cref="NotifyQueue"/>, <see cref="ReadConfig"/>,
/// <see cref="WriteConfig"/>, and it supplies an <see cref="IVirtioInterrupt"/>. <see cref="Mmio.VirtioMmioTransport"/>
/// is one; virtio-pci or a vhost-user back end would be others, with no change to device code.
/// </para>
/// <para>
/// <b>Threads.</b> Two kinds of thread touch a device:
/// <list type="bullet">
/// <item><description><i>Control</i>: whatever calls the transport-facing members (vCPU threads on MMIO exits, the
/// VMM's own threads). Control operations are serialized by the device's control lock, taken once per
/// operation, never per buffer.</description></item>
/// <item><description><i>Serving</i>: the thread that runs <see cref="OnQueueNotify"/>. With
/// <see cref="QueueThreading.Inline"/> that is the notifying thread, under the control lock. With a worker
/// mode it is a worker thread that sleeps on the queue's kick eventfd (<see cref="KickEventFd"/>) and takes no
/// device lock at all.</description></item>
/// </list>
/// A reset, a queue reset, <see cref="SaveState"/>, <see cref="TryRestoreState"/> and <see cref="Dispose()"/>
/// first park the workers: they finish the callback they are in, stop, and only then are queues torn down (so a
/// callback must return: a reset waits for it, as QEMU's reset waits for its iothread).
/// Workers survive resets. No guest action can make a worker meet a disposed queue, and nothing a guest does
/// raises an exception on any thread.
/// </para>
/// <para>
/// <b>Failures are contained.</b> An exception from any device-model callback is caught at this boundary: the
/// device sets DEVICE_NEEDS_RESET (with a configuration change notification once DRIVER_OK is set, 2.1.2) and
/// reports a <see cref="VirtioDeviceFault"/> through <see cref="Faulted"/>. A queue the guest broke is reported
/// the same way. The transport never sees the exception.
/// </para>
/// <para>
/// <b>What a model may call from its serving thread:</b> the queue it was handed, <see cref="Queue"/>,
/// <see cref="SignalUsedBuffers"/>, <see cref="BeginConfigChange()"/>, <see cref="DeferCompletion"/>,
/// <see cref="Complete"/>, <see cref="Status"/>, <see cref="NegotiatedFeatures"/> and <see cref="HasFeature"/>.
/// Not the transport-facing control members: they would wait for the control lock, whose holder may be waiting
/// for this worker to park. For the same reason a <see cref="Faulted"/> handler must not reset the device
/// synchronously; the guest resets it when it sees DEVICE_NEEDS_RESET.
/// </para>
/// </summary>
public abstract partial class VirtioDevice : IDisposable
{
    /// <summary>Transport and ring features offered unless the options say otherwise.</summary>
    public const ulong DefaultTransportFeatures =
        (1UL << VirtioFeatureBits.Version1)
        | (1UL << VirtioFeatureBits.IndirectDesc)
        | (1UL << VirtioFeatureBits.EventIdx)
        | (1UL << VirtioFeatureBits.RingPacked)
        | (1UL << VirtioFeatureBits.NotificationData)
        | (1UL << VirtioFeatureBits.RingReset);

    /// <summary>Every transport and ring feature this library implements (the defaults and <c>VIRTIO_F_IN_ORDER</c>).</summary>
    public const ulong SupportedTransportFeatures = DefaultTransportFeatures | (1UL << VirtioFeatureBits.InOrder);

    private readonly string _name;               // for events, metrics and worker threads
    private readonly VirtioRingMetrics _metrics;
    private readonly object _countersLock = new(); // a detach's retired counts against a metrics collection (both cold)
    private readonly object _control = new();    // serializes control operations; workers never take it
    private readonly object _configLock = new(); // configuration bytes and generation; workers may take it
    private readonly VirtqueueSlot[] _queues;
    private readonly byte[] _config;
    private readonly QueueThreading _threading;
    private ulong _driverFeatures;               // under _control
    private ulong _negotiatedFeatures;           // written under _control, read from any thread
    private int _status;                         // DeviceStatus; NEEDS_RESET may be OR-ed in from any thread
    private uint _configGeneration;              // written under _configLock
    private VirtioDeviceFault? _lastFault;
    private QueueError _lastQueueError;
    private long _droppedCompletions;
    private bool _disposed;
    private int _paused;                         // 1 between Pause and Resume: no queue is served
    private int _presentQueues;                  // queues the transport shows: all until FEATURES_OK, then QueueCountFor

    /// <summary>Creates the device in the reset state.</summary>
    /// <param name="deviceId">Device ID (5 for the balloon).</param>
    /// <param name="deviceFeatures">Device-specific features (bits 0-23 and 50-127 in the spec's numbering).</param>
    /// <param name="queueCount">Number of virtqueues.</param>
    /// <param name="maxQueueSize">Largest queue size the device accepts (QueueSizeMax).</param>
    /// <param name="configSize">Bytes of device configuration space.</param>
    /// <param name="options">Threading and offered transport features; <see cref="VirtioDeviceOptions.Default"/> when null.</param>
    protected VirtioDevice(uint deviceId, ulong deviceFeatures, int queueCount, int maxQueueSize, int configSize, VirtioDeviceOptions? options = null)
    {
        _name = (options ?? new VirtioDeviceOptions()).Name ?? $"virtio-{deviceId}";
        options ??= VirtioDeviceOptions.Default;
        if (queueCount is < 0 or > 1024)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(queueCount), "0 to 1024 queues.");
        }

        if (maxQueueSize is < 1 or > 32768)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(maxQueueSize), "1 to 32768.");
        }

        if (configSize is < 0 or > 4096)
        {
            ThrowHelper.ThrowArgumentOutOfRange(nameof(configSize), "0 to 4096 bytes.");
        }

        if ((options.TransportFeatures & ~SupportedTransportFeatures) != 0)
        {
            ThrowHelper.ThrowArgument(nameof(options), $"Transport features 0x{options.TransportFeatures & ~SupportedTransportFeatures:x} are not implemented.");
        }

        _metrics = VirtioRingMetrics.For(options.MeterFactory);
        DeviceId = deviceId;
        DeviceFeatures = deviceFeatures | options.TransportFeatures | (1UL << VirtioFeatureBits.Version1);
        MaxQueueSize = maxQueueSize;
        _threading = options.Threading;
        _config = new byte[configSize];
        _queues = new VirtqueueSlot[queueCount];
        _presentQueues = queueCount;
        for (int i = 0; i < queueCount; i++)
        {
            _queues[i] = new VirtqueueSlot();
            _queues[i].ClearConfiguration(maxQueueSize);
        }

        _metrics.Register(this);

        if (_threading != QueueThreading.Inline)
        {
            if (OperatingSystem.IsLinux())
            {
                StartWorkers(_name);
            }
            else
            {
                ThrowHelper.ThrowPlatformNotSupported("Queue workers wait on eventfds, which are Linux's; use QueueThreading.Inline elsewhere.");
            }
        }
    }

    /// <summary>Device ID.</summary>
    public uint DeviceId { get; }

    /// <summary>The device's name (<see cref="VirtioDeviceOptions.Name"/>, or <c>virtio-</c> and the device ID): in events, metrics and thread names.</summary>
    public string Name => _name;

    /// <summary>Features the device offers: its own and the transport features of its options.</summary>
    public ulong DeviceFeatures { get; }

    /// <summary>Largest queue size.</summary>
    public int MaxQueueSize { get; }

    /// <summary>Most queues the device can have (the slots it was built with).</summary>
    public int QueueCount => _queues.Length;

    /// <summary>
    /// Queues the transport shows the driver: every slot until FEATURES_OK, then as many as
    /// <see cref="QueueCountFor"/> says for the negotiated features (a balloon without STATS_VQ has fewer).
    /// </summary>
    public int PresentQueueCount => Volatile.Read(ref _presentQueues);

    /// <summary>True when queue <paramref name="index"/> exists for the driver (QueueSizeMax is non-zero).</summary>
    public bool IsQueuePresent(int index) => (uint)index < (uint)PresentQueueCount;

    /// <summary>Bytes of configuration space.</summary>
    public int ConfigSize => _config.Length;

    /// <summary>Which thread runs <see cref="OnQueueNotify"/>.</summary>
    public QueueThreading Threading => _threading;

    /// <summary>The status field. Lock-free: any thread may read it.</summary>
    public DeviceStatus Status => (DeviceStatus)Volatile.Read(ref _status);

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

    /// <summary>The features in force once FEATURES_OK was accepted; 0 before. Lock-free.</summary>
    public ulong NegotiatedFeatures => Volatile.Read(ref _negotiatedFeatures);

    /// <summary>Changes whenever the device changes its configuration space.</summary>
    public uint ConfigGeneration => Volatile.Read(ref _configGeneration);

    /// <summary>Where notifications to the driver go; the transport sets it.</summary>
    public IVirtioInterrupt? Interrupt { get; set; }

    /// <summary>
    /// Set by a legacy transport (virtio-mmio Version 1): VERSION_1 is then not required at FEATURES_OK, and only
    /// the split ring exists.
    /// </summary>
    public bool LegacyTransport { get; set; }

    /// <summary>
    /// Raised, on the thread where it happened, whenever the device contains a failure (a model exception or a
    /// queue the guest broke) and sets DEVICE_NEEDS_RESET. An exception from the handler is swallowed. The handler
    /// must not reset the device synchronously (see the class remarks).
    /// </summary>
    public event EventHandler<VirtioDeviceFault>? Faulted;

    /// <summary>The most recent contained failure, or null since the last reset.</summary>
    public VirtioDeviceFault? LastFault => Volatile.Read(ref _lastFault);

    /// <summary>The ring rule that last made the device set DEVICE_NEEDS_RESET, or <see cref="QueueError.None"/>.</summary>
    public QueueError LastQueueError => _lastQueueError;

    /// <summary>Completions dropped because their queue was reset, queue-reset or restored after the chain was popped.</summary>
    public long DroppedCompletions => Interlocked.Read(ref _droppedCompletions);

    /// <summary>True between <see cref="Pause"/> and <see cref="Resume"/>.</summary>
    public bool IsPaused => Volatile.Read(ref _paused) != 0;

    /// <summary>
    /// Stops serving queues, as a VMM stops a device with its vCPUs before saving it (QEMU's <c>vm_stop</c>): the
    /// workers park and stay parked, inline notifications and completions are not served, and the device's
    /// state stops moving, so a <see cref="SaveState"/> taken now is what the next device will continue from.
    /// Control operations (status, configuration, reset) still work. <see cref="Resume"/> undoes it.
    /// </summary>
    public void Pause()
    {
        lock (_control)
        {
            Volatile.Write(ref _paused, 1);
            ParkWorkers();
        }
    }

    /// <summary>
    /// Serves queues again after <see cref="Pause"/> (a migration that failed, say): workers resume, and every
    /// ready queue of a running device is served once for the kicks and completions that arrived meanwhile.
    /// </summary>
    public void Resume()
    {
        lock (_control)
        {
            if (Volatile.Read(ref _paused) == 0 || _disposed)
            {
                return;
            }

            Volatile.Write(ref _paused, 0);
            ResumeWorkers();
            if ((Status & DeviceStatus.DriverOk) != 0)
            {
                for (int i = 0; i < _queues.Length; i++)
                {
                    if (_queues[i].Queue is not null)
                    {
                        KickLocked(i);
                    }
                }
            }
        }
    }

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
            if (bank >= 2 || (Status & DeviceStatus.FeaturesOk) != 0)
            {
                return;
            }

            int shift = (int)(32 * bank);
            _driverFeatures = (_driverFeatures & ~(0xFFFF_FFFFUL << shift)) | ((ulong)value << shift);
        }
    }

    /// <summary>
    /// The driver writes the status field. 0 resets the device (after parking its workers). Otherwise the write
    /// must keep every bit already set (2.1.1: the driver never clears a bit) and follow 3.1.1's order; FEATURES_OK
    /// is only accepted for a feature set the device offered that includes VERSION_1 and that the device model
    /// accepts — else the bit stays clear and the driver sees that when it re-reads. A write that breaks the order
    /// is ignored. At DRIVER_OK every ready queue is served once, so buffers a driver made available (and kicked)
    /// before DRIVER_OK are not lost.
    /// </summary>
    public void WriteStatus(DeviceStatus value)
    {
        lock (_control)
        {
            if (_disposed)
            {
                return;
            }

            if (value == DeviceStatus.Reset)
            {
                ResetLocked();
                return;
            }

            DeviceStatus current = Status;
            if ((value & current) != current)
            {
                return; // clearing a bit: not allowed
            }

            DeviceStatus added = value & ~current;
            if ((added & DeviceStatus.Failed) != 0)
            {
                OrStatus(DeviceStatus.Failed);
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
                    OrStatus(next); // the driver re-reads, sees FEATURES_OK clear and gives up (3.1.1 step 6)
                    return;
                }

                Volatile.Write(ref _negotiatedFeatures, _driverFeatures);
                Volatile.Write(ref _presentQueues, PresentQueuesFor(_driverFeatures));
                next |= DeviceStatus.FeaturesOk;
                if (VirtioRingEventSource.Log.IsEnabled())
                {
                    VirtioRingEventSource.Log.FeaturesNegotiated(_name, (long)_driverFeatures);
                }
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

            OrStatus(next); // an OR, so a NEEDS_RESET a worker set meanwhile is kept
            if (VirtioRingEventSource.Log.IsEnabled())
            {
                VirtioRingEventSource.Log.DeviceStatus(_name, (int)next);
            }

            if (driverOk)
            {
                RunCallback(static d => d.OnDriverOk(), nameof(OnDriverOk), -1);
                for (int i = 0; i < _queues.Length; i++)
                {
                    if (_queues[i].Queue is not null)
                    {
                        KickLocked(i);
                    }
                }
            }
        }
    }

    /// <summary>Queue size the driver chose (QueueSize), initially <see cref="MaxQueueSize"/>.</summary>
    public int QueueSize(int index)
    {
        lock (_control)
        {
            return (uint)index < (uint)_queues.Length ? _queues[index].Size : 0;
        }
    }

    /// <summary>Sets the queue size; ignored for a ready queue, or a size of 0 or above the maximum.</summary>
    public void SetQueueSize(int index, int size)
    {
        lock (_control)
        {
            if (ConfigurableSlot(index) is { } slot && size >= 1 && size <= MaxQueueSize)
            {
                slot.Size = size;
            }
        }
    }

    /// <summary>The three area addresses the driver programmed.</summary>
    public VirtqueueAddresses QueueAddresses(int index)
    {
        lock (_control)
        {
            if ((uint)index >= (uint)_queues.Length)
            {
                return default;
            }

            VirtqueueSlot q = _queues[index];
            return new VirtqueueAddresses(q.Size, q.DescriptorArea, q.DriverArea, q.DeviceArea);
        }
    }

    /// <summary>Sets the descriptor area address (QueueDesc); ignored for a ready queue.</summary>
    public void SetQueueDescriptorArea(int index, ulong address)
    {
        lock (_control)
        {
            if (ConfigurableSlot(index) is { } slot)
            {
                slot.DescriptorArea = address;
            }
        }
    }

    /// <summary>Sets the driver area address (QueueDriver); ignored for a ready queue.</summary>
    public void SetQueueDriverArea(int index, ulong address)
    {
        lock (_control)
        {
            if (ConfigurableSlot(index) is { } slot)
            {
                slot.DriverArea = address;
            }
        }
    }

    /// <summary>Sets the device area address (QueueDevice); ignored for a ready queue.</summary>
    public void SetQueueDeviceArea(int index, ulong address)
    {
        lock (_control)
        {
            if (ConfigurableSlot(index) is { } slot)
            {
                slot.DeviceArea = address;
            }
        }
    }

    /// <summary>QueueReady as the driver reads it back.</summary>
    public bool IsQueueReady(int index)
    {
        lock (_control)
        {
            return (uint)index < (uint)_queues.Length && _queues[index].Ready;
        }
    }

    /// <summary>QueueReset as the driver reads it back: true once a queue reset has completed.</summary>
    public bool IsQueueResetDone(int index)
    {
        lock (_control)
        {
            return (uint)index < (uint)_queues.Length && _queues[index].ResetDone;
        }
    }

    /// <summary>
    /// The driver enables the queue (QueueReady = 1): the device attaches to the ring in the format the
    /// negotiated features select and validates the addresses against guest memory. Bad addresses or size set
    /// DEVICE_NEEDS_RESET instead (reported through <see cref="Faulted"/>). Needs FEATURES_OK. Writing 0 is
    /// ignored (a queue is disabled by reset).
    /// </summary>
    public void SetQueueReady(int index, bool ready)
    {
        lock (_control)
        {
            if (!ready || !IsQueuePresent(index) || (Status & DeviceStatus.FeaturesOk) == 0 || _disposed)
            {
                return;
            }

            VirtqueueSlot slot = _queues[index];
            if (slot.Ready)
            {
                return;
            }

            var addresses = new VirtqueueAddresses(slot.Size, slot.DescriptorArea, slot.DriverArea, slot.DeviceArea);
            if (!DeviceVirtqueue.TryAttach(Memory, addresses, NegotiatedFeatures, out DeviceVirtqueue? queue, out QueueError error))
            {
                ReportFault(new VirtioDeviceFault(VirtioDeviceFaultKind.QueueSetupRejected, "QueueReady", index, error, 0, null));
                return;
            }

            slot.Ready = true;
            slot.ResetDone = false;
            Volatile.Write(ref slot.Queue, queue); // release: the serving thread sees a fully built queue
            if ((Status & DeviceStatus.DriverOk) != 0)
            {
                KickLocked(index); // re-enabled after a queue reset: look at it once
            }
        }
    }

    /// <summary>
    /// Resets one queue (QueueReset = 1, with <c>VIRTIO_F_RING_RESET</c>): parks the workers, detaches the ring,
    /// drops completions still pending for it, and returns its configuration to the initial state;
    /// <see cref="IsQueueResetDone"/> then reads 1.
    /// </summary>
    public void ResetQueue(int index)
    {
        lock (_control)
        {
            if ((uint)index >= (uint)_queues.Length || (NegotiatedFeatures & (1UL << VirtioFeatureBits.RingReset)) == 0 || _disposed)
            {
                return;
            }

            ParkWorkers();
            try
            {
                DetachLocked(_queues[index]);
                _queues[index].ClearConfiguration(MaxQueueSize);
                _queues[index].ResetDone = true;
            }
            finally
            {
                ResumeWorkers();
            }

            RunCallback(d => d.OnQueueReset(index), nameof(OnQueueReset), index);
        }
    }

    /// <summary>
    /// A driver notification for queue <paramref name="index"/> (QueueNotify). <paramref name="notificationData"/>
    /// is the full 32-bit value written, meaningful with <c>VIRTIO_F_NOTIFICATION_DATA</c> (queue index in bits
    /// 0-15, then the driver's next position). Inline, the queue is served on this thread; with workers this
    /// signals the queue's kick eventfd and returns (a VMM that registered <see cref="KickEventFd"/> as an
    /// ioeventfd never gets here). Ignored unless DRIVER_OK is set and the queue is ready.
    /// </summary>
    public void NotifyQueue(int index, uint notificationData = 0)
    {
        if ((uint)index >= (uint)_queues.Length)
        {
            return;
        }

        VirtqueueSlot slot = _queues[index];
        if (_threading != QueueThreading.Inline)
        {
            Volatile.Write(ref slot.NotificationData, notificationData);
            if (OperatingSystem.IsLinux())
            {
                slot.Kick?.Signal();
            }

            return;
        }

        lock (_control)
        {
            slot.NotificationData = notificationData;
            ServeQueue(index, kicked: true, notifications: 1);
        }
    }

    /// <summary>
    /// What queue <paramref name="index"/> has done since the device was created, across resets and queue resets
    /// (every ring it had; see <see cref="VirtqueueCounters"/>). Any thread; zero for an index out of range.
    /// </summary>
    public VirtqueueCounters GetQueueCounters(int index)
    {
        if ((uint)index >= (uint)_queues.Length)
        {
            return default;
        }

        VirtqueueSlot slot = _queues[index];
        lock (_countersLock)
        {
            DeviceVirtqueue? queue = Volatile.Read(ref slot.Queue);
            return queue is null ? slot.Retired : slot.Retired + queue.Counters;
        }
    }

    /// <summary>
    /// Reads configuration space. Returns the bytes copied: 0 when the range is not inside the space (the read
    /// is then ignored, as for any access the transport cannot map).
    /// </summary>
    public int ReadConfig(int offset, Span<byte> destination)
    {
        lock (_configLock)
        {
            if (offset < 0 || offset > _config.Length || destination.Length > _config.Length - offset)
            {
                return 0;
            }

            _config.AsSpan(offset, destination.Length).CopyTo(destination);
            return destination.Length;
        }
    }

    /// <summary>The driver writes configuration space (only the device-writable fields matter to the model).</summary>
    [SuppressMessage("Design", "CA1031:Do not catch general exception types", Justification = "The device-model boundary: a model's exception must not reach the transport.")]
    public void WriteConfig(int offset, ReadOnlySpan<byte> source)
    {
        lock (_control)
        {
            if (offset < 0 || offset > _config.Length || source.Length > _config.Length - offset)
            {
                return;
            }

            // No closures here: a balloon driver writes `actual` after every request, so this path allocates nothing.
            string stage = nameof(IsConfigWritable);
            try
            {
                if (!IsConfigWritable(offset, source.Length))
                {
                    return;
                }

                lock (_configLock)
                {
                    source.CopyTo(_config.AsSpan(offset));
                }

                stage = nameof(OnConfigWritten);
                OnConfigWritten(offset, source.Length);
            }
            catch (Exception ex)
            {
                ReportFault(new VirtioDeviceFault(VirtioDeviceFaultKind.ModelException, stage, -1, QueueError.None, 0, ex));
            }
        }
    }

    /// <summary>Stops the workers, then disposes every attached queue and the kick eventfds.</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>The guest memory queues attach to.</summary>
    protected abstract GuestMemory Memory { get; }

    /// <summary>
    /// The device's configuration space, for the model to initialise in its constructor and in
    /// <see cref="OnReset"/> (both run while no driver can read it). To change it while the driver runs, use
    /// <see cref="BeginConfigChange()"/>.
    /// </summary>
    protected Span<byte> Config => _config;

    /// <summary>
    /// The queue at <paramref name="index"/> if the driver made it ready. Only the thread that serves the queue
    /// (the one running <see cref="OnQueueNotify"/>) may use it, and only until that callback returns.
    /// </summary>
    protected DeviceVirtqueue? Queue(int index) => (uint)index < (uint)_queues.Length ? Volatile.Read(ref _queues[index].Queue) : null;

    /// <summary>
    /// Processes a notification for a ready queue, on the serving thread (see <see cref="Threading"/>). May also
    /// be called with nothing new in the queue (after DRIVER_OK, a restore or a worker's resume): pop until
    /// <see cref="DeviceVirtqueue.TryPop"/> says there is nothing.
    /// </summary>
    protected abstract void OnQueueNotify(int index, DeviceVirtqueue queue, uint notificationData);

    /// <summary>Called when the driver sets DRIVER_OK, on the control thread.</summary>
    protected virtual void OnDriverOk()
    {
    }

    /// <summary>
    /// Called on device reset, on the control thread, after the workers parked and the queues are gone: return
    /// every device resource to its initial state (configuration space included, through <see cref="Config"/>).
    /// </summary>
    protected virtual void OnReset()
    {
    }

    /// <summary>Called after a single queue reset, on the control thread.</summary>
    protected virtual void OnQueueReset(int index)
    {
    }

    /// <summary>Device-specific check of the features the driver accepted (the subset and VERSION_1 are checked already).</summary>
    protected virtual bool AcceptFeatures(ulong features) => true;

    /// <summary>
    /// How many queues exist once <paramref name="negotiatedFeatures"/> are in force (queue indices 0 .. n-1; the
    /// rest read QueueSizeMax 0). The default is every slot. A device whose queues depend on features overrides
    /// it: Linux numbers only the negotiated balloon queues, consecutively, so the balloon's layout is known only
    /// here. Values outside 0 .. <see cref="QueueCount"/> are clamped.
    /// </summary>
    protected virtual int QueueCountFor(ulong negotiatedFeatures) => _queues.Length;

    /// <summary>
    /// Whether the driver may write <paramref name="length"/> bytes of configuration space at
    /// <paramref name="offset"/>; a refused write changes nothing. The default allows every write. A device with
    /// read-only fields (the balloon's <c>num_pages</c>) refuses writes that touch them.
    /// </summary>
    protected virtual bool IsConfigWritable(int offset, int length) => true;

    /// <summary>Called after the driver wrote configuration space, on the control thread.</summary>
    protected virtual void OnConfigWritten(int offset, int length)
    {
    }

    /// <summary>
    /// Starts a change of configuration space from any thread: the returned scope holds the configuration lock,
    /// so the driver never reads a half-written field; disposing it bumps the generation counter and, once the
    /// driver is running, sends a configuration change notification (2.4.1, 2.5.1).
    /// <code>
    /// using (ConfigChange change = BeginConfigChange())
    /// {
    ///     BinaryPrimitives.WriteUInt32LittleEndian(change.Config, numPages);
    /// }
    /// </code>
    /// </summary>
    protected ConfigChange BeginConfigChange() => BeginConfigChange(notify: true);

    /// <summary>
    /// Starts a change of configuration space, as <see cref="BeginConfigChange()"/>, but sends the configuration
    /// change notification only when <paramref name="notify"/> is set: for fields the driver reads when it wants
    /// (the balloon's hint command id going back to STOP after the driver's own STOP, as QEMU does it silently).
    /// </summary>
    protected ConfigChange BeginConfigChange(bool notify)
    {
        Monitor.Enter(_configLock);
        return new ConfigChange(this, _config, notify);
    }

    /// <summary>Sends a used buffer notification for queue <paramref name="index"/>.</summary>
    protected void SignalUsedBuffers(int index) => Interrupt?.Raise(VirtioInterruptReason.UsedBuffer, index);

    /// <summary>Stops workers and disposes queues.</summary>
    protected virtual void Dispose(bool disposing)
    {
        if (!disposing)
        {
            return;
        }

        lock (_control)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            StopWorkers();
            foreach (VirtqueueSlot slot in _queues)
            {
                DetachLocked(slot);
                slot.ClearConfiguration(MaxQueueSize);
            }

            DisposeKicks();
        }

        _metrics.Unregister(this);
    }

    /// <summary>Ends a <see cref="ConfigChange"/>: new generation, lock released, then the notification.</summary>
    internal void EndConfigChange(bool notify)
    {
        Volatile.Write(ref _configGeneration, _configGeneration + 1);
        Monitor.Exit(_configLock);
        if (notify && (Status & DeviceStatus.DriverOk) != 0)
        {
            Interrupt?.Raise(VirtioInterruptReason.ConfigurationChange, -1);
        }
    }

    /// <summary>
    /// Contains a failure: records it, sets DEVICE_NEEDS_RESET (a configuration change notification the first
    /// time, when the driver is running: 2.1.2), and tells the VMM. Lock-free; any thread.
    /// </summary>
    [SuppressMessage("Design", "CA1031:Do not catch general exception types", Justification = "The VMM's handler must not take a device thread down.")]
    private protected void ReportFault(VirtioDeviceFault fault)
    {
        if (VirtioRingEventSource.Log.IsEnabled())
        {
            VirtioRingEventSource.Log.QueueBroken(_name, fault.QueueIndex, fault.QueueError != QueueError.None ? fault.QueueError.ToString() : fault.ToString(), (long)fault.QueueErrorDetail);
        }

        Volatile.Write(ref _lastFault, fault);
        if (fault.QueueError != QueueError.None)
        {
            _lastQueueError = fault.QueueError;
            _metrics.QueueBroken(_name, fault.QueueIndex, fault.QueueError);
        }

        DeviceStatus old = (DeviceStatus)Interlocked.Or(ref _status, (int)DeviceStatus.DeviceNeedsReset);
        if ((old & DeviceStatus.DeviceNeedsReset) == 0 && (old & DeviceStatus.DriverOk) != 0)
        {
            Interrupt?.Raise(VirtioInterruptReason.ConfigurationChange, -1);
        }

        try
        {
            Faulted?.Invoke(this, fault);
        }
        catch (Exception)
        {
            // Swallowed: see Faulted.
        }
    }

    /// <summary>Runs a control-thread callback of the model; an exception becomes a contained fault.</summary>
    [SuppressMessage("Design", "CA1031:Do not catch general exception types", Justification = "The device-model boundary: a model's exception must not reach the transport.")]
    private bool RunCallback(Action<VirtioDevice> callback, string name, int queueIndex)
    {
        try
        {
            callback(this);
            return true;
        }
        catch (Exception ex)
        {
            ReportFault(new VirtioDeviceFault(VirtioDeviceFaultKind.ModelException, name, queueIndex, QueueError.None, 0, ex));
            return false;
        }
    }

    [SuppressMessage("Design", "CA1031:Do not catch general exception types", Justification = "The device-model boundary: a model's exception must not reach the transport.")]
    private bool FeaturesAcceptable(ulong features)
    {
        if (!FeatureSetAllowed(features))
        {
            return false;
        }

        try
        {
            return AcceptFeatures(features);
        }
        catch (Exception ex)
        {
            ReportFault(new VirtioDeviceFault(VirtioDeviceFaultKind.ModelException, nameof(AcceptFeatures), -1, QueueError.None, 0, ex));
            return false;
        }
    }

    /// <summary>The model's queue count for <paramref name="features"/>, clamped; every slot if the model throws.</summary>
    private int PresentQueuesFor(ulong features)
    {
        int count = _queues.Length;
        RunCallback(d => count = d.QueueCountFor(features), nameof(QueueCountFor), -1);
        return Math.Clamp(count, 0, _queues.Length);
    }

    /// <summary>Offered, and VERSION_1 unless the transport is legacy (3.1.1, 6.1).</summary>
    private bool FeatureSetAllowed(ulong features) =>
        (features & ~DeviceFeatures) == 0 && ((features & (1UL << VirtioFeatureBits.Version1)) != 0 || LegacyTransport);

    private void OrStatus(DeviceStatus bits) => Interlocked.Or(ref _status, (int)bits);

    private VirtqueueSlot? ConfigurableSlot(int index) =>
        IsQueuePresent(index) && !_queues[index].Ready ? _queues[index] : null;

    /// <summary>Reset (status 0): park workers, tear the queues down, forget negotiation, let the model reset.</summary>
    private void ResetLocked()
    {
        if (VirtioRingEventSource.Log.IsEnabled())
        {
            VirtioRingEventSource.Log.DeviceReset(_name);
        }

        ParkWorkers();
        try
        {
            foreach (VirtqueueSlot slot in _queues)
            {
                DetachLocked(slot);
                slot.ClearConfiguration(MaxQueueSize);
            }

            Volatile.Write(ref _status, 0);
            _driverFeatures = 0;
            Volatile.Write(ref _negotiatedFeatures, 0UL);
            Volatile.Write(ref _presentQueues, _queues.Length);
            _lastQueueError = QueueError.None;
            Volatile.Write(ref _lastFault, null);
            lock (_configLock)
            {
                RunCallback(static d => d.OnReset(), nameof(OnReset), -1);
            }
        }
        finally
        {
            ResumeWorkers();
        }
    }

    /// <summary>
    /// Detaches a queue's ring (the serving thread is parked or is this one): a new incarnation, pending
    /// completions dropped and counted, the ring released.
    /// </summary>
    private void DetachLocked(VirtqueueSlot slot)
    {
        DeviceVirtqueue? queue = slot.Queue;
        lock (_countersLock)
        {
            if (queue is not null)
            {
                slot.Retired += queue.Counters; // the serving thread is parked: these are final
            }

            Volatile.Write(ref slot.Queue, null);
        }

        Interlocked.Increment(ref slot.Epoch);
        DropPendingCompletions(slot);
        queue?.Dispose();
    }
}

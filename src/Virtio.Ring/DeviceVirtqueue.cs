using System;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Virtio.Ring.Packed;
using Virtio.Ring.Split;

namespace Virtio.Ring;

/// <summary>
/// The device side of a virtqueue in either ring format: what a device model (the balloon, a block device, ...)
/// programs against, so it runs unchanged over a split or a packed queue chosen at feature negotiation.
/// <para>
/// <b>Why a concrete class and not an interface.</b> The format is fixed for the queue's life, so this type holds
/// one of two sealed ring classes and branches on which one per call. That branch is per buffer (pop, push,
/// publish), never per descriptor: the descriptor loop lives inside each format's own non-virtual code. The
/// branch is perfectly predicted, both paths inline, there is no interface or virtual dispatch, no boxing and no
/// generic instantiation over reference types (which .NET would share and dispatch through a dictionary).
/// A model that wants even that branch gone can use <see cref="SplitDeviceVirtqueue"/> or
/// <see cref="PackedDeviceVirtqueue"/> directly: their members have the same names and meaning.
/// </para>
/// <para>
/// <b>Threads.</b> One thread at a time owns a queue's device side: inside a <see cref="Transport.VirtioDevice"/>
/// that is the thread running <c>OnQueueNotify</c> (see <see cref="Transport.QueueThreading"/>), and the device
/// model tears the queue down only after that thread has left it. The driver side runs concurrently on another
/// thread or process; the two share only ring memory, with no lock. To finish a chain on another thread, do not
/// call <see cref="PushUsed"/> there: take <see cref="Transport.VirtioDevice.DeferCompletion"/> on the owning
/// thread and call <see cref="Transport.VirtioDevice.Complete"/> from any thread.
/// </para>
/// </summary>
public sealed class DeviceVirtqueue : IDisposable
{
    private readonly SplitDeviceVirtqueue? _split;
    private readonly PackedDeviceVirtqueue? _packed;

    private DeviceVirtqueue(SplitDeviceVirtqueue? split, PackedDeviceVirtqueue? packed)
    {
        _split = split;
        _packed = packed;
    }

    /// <summary>The ring format.</summary>
    public VirtqueueFormat Format => _packed is null ? VirtqueueFormat.Split : VirtqueueFormat.Packed;

    /// <summary>Queue size.</summary>
    public int QueueSize => _packed?.QueueSize ?? _split!.QueueSize;

    /// <summary>Why the queue is broken, or <see cref="QueueError.None"/>.</summary>
    public QueueError Error => _packed?.Error ?? _split!.Error;

    /// <summary>The offending value of <see cref="Error"/>.</summary>
    public ulong ErrorDetail => _packed?.ErrorDetail ?? _split!.ErrorDetail;

    /// <summary>True once the guest broke a rule (map to DEVICE_NEEDS_RESET).</summary>
    public bool IsBroken => Error != QueueError.None;

    /// <summary>Buffers popped and not yet pushed back.</summary>
    public int InFlight => _packed?.InFlight ?? _split!.InFlight;

    /// <summary>What this queue has done since it was attached (see <see cref="VirtqueueCounters"/>). Any thread.</summary>
    public VirtqueueCounters Counters => _packed?.Counters ?? _split!.Counters;

    /// <summary>The split queue underneath, or null.</summary>
    public SplitDeviceVirtqueue? Split => _split;

    /// <summary>The packed queue underneath, or null.</summary>
    public PackedDeviceVirtqueue? Packed => _packed;

    /// <summary>
    /// Attaches to the queue at <paramref name="addresses"/> in the format the negotiated features select
    /// (<c>VIRTIO_F_RING_PACKED</c>, bit 34). Fails with a typed error when the guest's addresses or size are bad.
    /// </summary>
    public static bool TryAttach(
        GuestMemory memory,
        in VirtqueueAddresses addresses,
        ulong negotiatedFeatures,
        [NotNullWhen(true)] out DeviceVirtqueue? queue,
        out QueueError error)
    {
        VirtqueueFeatures features = VirtqueueFeaturesExtensions.FromFeatureBits(negotiatedFeatures);
        queue = null;
        if ((negotiatedFeatures & (1UL << VirtioFeatureBits.RingPacked)) != 0)
        {
            if (!PackedDeviceVirtqueue.TryAttach(memory, addresses.AsPacked(), features, out PackedDeviceVirtqueue? packed, out error))
            {
                return false;
            }

            queue = new DeviceVirtqueue(null, packed);
            return true;
        }

        if (!SplitDeviceVirtqueue.TryAttach(memory, addresses.AsSplit(), features, out SplitDeviceVirtqueue? split, out error))
        {
            return false;
        }

        queue = new DeviceVirtqueue(split, null);
        return true;
    }

    /// <summary>Recreates a split queue from saved state, validated as in <see cref="SplitDeviceVirtqueue.TryRestore"/>.</summary>
    public static bool TryRestore(GuestMemory memory, in SplitQueueState state, [NotNullWhen(true)] out DeviceVirtqueue? queue, out QueueError error)
    {
        queue = SplitDeviceVirtqueue.TryRestore(memory, state, out SplitDeviceVirtqueue? split, out error) ? new DeviceVirtqueue(split, null) : null;
        return queue is not null;
    }

    /// <summary>Recreates a packed queue from saved state, validated as in <see cref="PackedDeviceVirtqueue.TryRestore"/>.</summary>
    public static bool TryRestore(GuestMemory memory, in PackedQueueState state, [NotNullWhen(true)] out DeviceVirtqueue? queue, out QueueError error)
    {
        queue = PackedDeviceVirtqueue.TryRestore(memory, state, out PackedDeviceVirtqueue? packed, out error) ? new DeviceVirtqueue(null, packed) : null;
        return queue is not null;
    }

    /// <summary>Pops the next available chain; see <see cref="SplitDeviceVirtqueue.TryPop"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryPop(out DescriptorChain chain) =>
        _packed is null ? _split!.TryPop(out chain) : _packed.TryPop(out chain);

    /// <summary>Returns chain <paramref name="id"/> as used with <paramref name="writtenLength"/> bytes written.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PushUsed(ushort id, uint writtenLength)
    {
        if (_packed is null)
        {
            _split!.PushUsed(id, writtenLength);
        }
        else
        {
            _packed.PushUsed(id, writtenLength);
        }
    }

    /// <summary>
    /// With <c>VIRTIO_F_IN_ORDER</c>: returns every buffer in flight up to and including <paramref name="lastId"/>
    /// with one used element/descriptor (split 2.7.9, packed 2.8.8).
    /// </summary>
    public void PushUsedBatch(ushort lastId, uint writtenLength)
    {
        if (_packed is null)
        {
            _split!.PushUsedBatch(lastId, writtenLength);
        }
        else
        {
            _packed.PushUsedBatch(lastId, writtenLength);
        }
    }

    /// <summary>Makes pushed used buffers visible without the interrupt decision (polling drivers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void FlushUsed()
    {
        if (_packed is null)
        {
            _split!.FlushUsed();
        }
        else
        {
            _packed.FlushUsed();
        }
    }

    /// <summary>Publishes pushed used buffers; true when the driver must be sent a used-buffer notification.</summary>
    public bool PublishUsed() => _packed is null ? _split!.PublishUsed() : _packed.PublishUsed();

    /// <summary>Counts available-buffer notifications served (<see cref="Transport.VirtioDevice"/>'s serving thread).</summary>
    internal void CountNotificationsReceived(ulong notifications)
    {
        if (_packed is null)
        {
            _split!.CountNotificationsReceived(notifications);
        }
        else
        {
            _packed.CountNotificationsReceived(notifications);
        }
    }

    /// <summary>Asks the driver not to send available-buffer notifications.</summary>
    public void DisableAvailableNotifications()
    {
        if (_packed is null)
        {
            _split!.DisableAvailableNotifications();
        }
        else
        {
            _packed.DisableAvailableNotifications();
        }
    }

    /// <summary>Asks for available-buffer notifications again and re-checks the ring (<see cref="NotificationRecheck"/>).</summary>
    public NotificationRecheck EnableAvailableNotifications() => _packed is null ? _split!.EnableAvailableNotifications() : _packed.EnableAvailableNotifications();

    /// <summary>Releases the ring.</summary>
    public void Dispose()
    {
        _split?.Dispose();
        _packed?.Dispose();
    }
}

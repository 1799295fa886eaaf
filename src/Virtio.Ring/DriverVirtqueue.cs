using System;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Virtio.Ring.Packed;
using Virtio.Ring.Split;

namespace Virtio.Ring;

/// <summary>
/// The driver side of a virtqueue in either ring format (see <see cref="DeviceVirtqueue"/> for why this is one
/// concrete type with a per-call branch). Simulations and tests use it to play the guest over either format.
/// </summary>
/// <typeparam name="TToken">What the caller gets back with each used buffer.</typeparam>
public sealed class DriverVirtqueue<TToken> : IDisposable
{
    private readonly SplitDriverVirtqueue<TToken>? _split;
    private readonly PackedDriverVirtqueue<TToken>? _packed;

    /// <summary>
    /// Places a fresh queue at <paramref name="addresses"/> in the format the negotiated features select.
    /// </summary>
    public DriverVirtqueue(GuestMemory memory, in VirtqueueAddresses addresses, ulong negotiatedFeatures, IndirectDescriptorPool? indirectPool = null)
    {
        VirtqueueFeatures features = VirtqueueFeaturesExtensions.FromFeatureBits(negotiatedFeatures);
        if ((negotiatedFeatures & (1UL << VirtioFeatureBits.RingPacked)) != 0)
        {
            _packed = new PackedDriverVirtqueue<TToken>(memory, addresses.AsPacked(), features, indirectPool);
        }
        else
        {
            _split = new SplitDriverVirtqueue<TToken>(memory, addresses.AsSplit(), features, indirectPool);
        }
    }

    /// <summary>The ring format.</summary>
    public VirtqueueFormat Format => _packed is null ? VirtqueueFormat.Split : VirtqueueFormat.Packed;

    /// <summary>Free descriptors.</summary>
    public int FreeDescriptors => _packed?.FreeDescriptors ?? _split!.FreeDescriptors;

    /// <summary>Buffers in flight.</summary>
    public int InFlight => _packed?.InFlight ?? _split!.InFlight;

    /// <summary>Why the queue is broken, or <see cref="QueueError.None"/>.</summary>
    public QueueError Error => _packed?.Error ?? _split!.Error;

    /// <summary>Adds a buffer; see <see cref="SplitDriverVirtqueue{TToken}.TryAdd"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAdd(ReadOnlySpan<GuestRange> readable, ReadOnlySpan<GuestRange> writable, TToken token) =>
        _packed is null ? _split!.TryAdd(readable, writable, token) : _packed.TryAdd(readable, writable, token);

    /// <summary>Makes added buffers available without the kick decision (polling drivers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void FlushAvailable()
    {
        if (_packed is null)
        {
            _split!.FlushAvailable();
        }
        else
        {
            _packed.FlushAvailable();
        }
    }

    /// <summary>Publishes added buffers; true when the device must be notified.</summary>
    public bool PublishAvailable() => _packed is null ? _split!.PublishAvailable() : _packed.PublishAvailable();

    /// <summary>Takes the next used buffer back.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGetUsed([MaybeNullWhen(false)] out TToken token, out uint writtenLength) =>
        _packed is null ? _split!.TryGetUsed(out token, out writtenLength) : _packed.TryGetUsed(out token, out writtenLength);

    /// <summary>Asks for no used-buffer notifications.</summary>
    public void DisableUsedNotifications()
    {
        if (_packed is null)
        {
            _split!.DisableUsedNotifications();
        }
        else
        {
            _packed.DisableUsedNotifications();
        }
    }

    /// <summary>Asks for used-buffer notifications again and re-checks the ring (<see cref="NotificationRecheck"/>).</summary>
    public NotificationRecheck EnableUsedNotifications() => _packed is null ? _split!.EnableUsedNotifications() : _packed.EnableUsedNotifications();

    /// <summary>Delayed variant of <see cref="EnableUsedNotifications"/>.</summary>
    public NotificationRecheck EnableUsedNotificationsDelayed() =>
        _packed is null ? _split!.EnableUsedNotificationsDelayed() : _packed.EnableUsedNotificationsDelayed();

    /// <summary>Hands back the token of a buffer still in flight after a device reset.</summary>
    public bool TryDetachUnused([MaybeNullWhen(false)] out TToken token) =>
        _packed is null ? _split!.TryDetachUnused(out token) : _packed.TryDetachUnused(out token);

    /// <summary>Returns the queue to its initial state.</summary>
    public void Reset()
    {
        if (_packed is null)
        {
            _split!.Reset();
        }
        else
        {
            _packed.Reset();
        }
    }

    /// <summary>Releases the ring.</summary>
    public void Dispose()
    {
        _split?.Dispose();
        _packed?.Dispose();
    }
}

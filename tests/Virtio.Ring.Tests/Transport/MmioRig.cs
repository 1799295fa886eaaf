using System;
using System.Collections.Generic;
using System.Threading;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;

namespace Virtio.Ring.Tests.Transport;

/// <summary>
/// Guest memory, an echo device behind a virtio-mmio transport, and the guest's register-level driver. The
/// interrupt line is level-modelled: <see cref="LineLevel"/> follows Raise/Lower, and each raise releases
/// <see cref="WaitForInterrupt"/>, so a test can wait for a worker's answer with a bounded wait.
/// </summary>
internal sealed class MmioRig : IDisposable
{
    public const ulong RingBase = 0x1_0000;
    public const ulong DataBase = 0x10_0000;

    private readonly SemaphoreSlim _interrupt = new(0);
    private readonly bool _legacy;
    private readonly ulong _deviceFeatures;
    private readonly VirtioDeviceOptions? _options;
    private int _interrupts;
    private int _level;

    public MmioRig(bool legacy = false, ulong deviceFeatures = 0, VirtioDeviceOptions? options = null)
    {
        _legacy = legacy;
        _deviceFeatures = deviceFeatures;
        _options = options;
        Memory = GuestMemory.Allocate(8 << 20);
        Line = new InterruptLine(
            () =>
            {
                Interlocked.Increment(ref _interrupts);
                Volatile.Write(ref _level, 1);
                _interrupt.Release();
            },
            () => Volatile.Write(ref _level, 0));
        Device = new EchoDevice(Memory, deviceFeatures, options: options);
        Transport = new VirtioMmioTransport(Device, Line, legacy, vendorId: 0x1AF4);
        Driver = new VirtioMmioDriver(Transport);
    }

    public GuestMemory Memory { get; }

    public InterruptLine Line { get; }

    public EchoDevice Device { get; private set; }

    public VirtioMmioTransport Transport { get; private set; }

    public VirtioMmioDriver Driver { get; private set; }

    public int Interrupts => Volatile.Read(ref _interrupts);

    /// <summary>Available-buffer notifications <see cref="Send"/> wrote.</summary>
    public int Kicks { get; private set; }

    public bool LineLevel => Volatile.Read(ref _level) != 0;

    public DriverVirtqueue<int>? Queue { get; private set; }

    /// <summary>
    /// Live update: pauses and saves the device with its transport, disposes it, builds a fresh one (same
    /// options) over the same guest memory and restores into it. The guest's driver objects carry on against the
    /// new transport.
    /// </summary>
    public DeviceStateError ReplaceDevice(Action<EchoDevice>? configure = null)
    {
        Device.Pause();
        byte[] state = Transport.SaveState();
        Device.Dispose();
        Device = new EchoDevice(Memory, _deviceFeatures, options: _options);
        configure?.Invoke(Device);
        Transport = new VirtioMmioTransport(Device, Line, _legacy, vendorId: 0x1AF4);
        Driver = new VirtioMmioDriver(Transport);
        Transport.TryRestoreState(state, out DeviceStateError error);
        return error;
    }

    /// <summary>Places queue 0 in guest memory in the negotiated format and programs it through the registers.</summary>
    public bool SetupQueue0(int size = 32, ulong? negotiated = null)
    {
        ulong features = negotiated ?? Driver.NegotiatedFeatures;
        VirtqueueAddresses addresses = VirtqueueAddresses.Compact(
            (features & (1UL << VirtioFeatureBits.RingPacked)) != 0 ? VirtqueueFormat.Packed : VirtqueueFormat.Split, RingBase, size);
        Queue?.Dispose();
        Queue = new DriverVirtqueue<int>(Memory, addresses, features);
        return Driver.SetupQueue(0, addresses);
    }

    /// <summary>Sends <paramref name="count"/> echo requests (4 readable bytes = the token, 4 writable) and kicks.</summary>
    public int Send(int firstToken, int count)
    {
        int sent = 0;
        for (int i = 0; i < count; i++)
        {
            int token = firstToken + i;
            ulong slot = SlotOf(token);
            BitConverter.TryWriteBytes(Span(slot, 4), token);
            Span(slot + 8, 4).Clear();
            if (!Queue!.TryAdd([new GuestRange(slot, 4)], [new GuestRange(slot + 8, 4)], token))
            {
                break;
            }

            sent++;
        }

        if (Queue!.PublishAvailable())
        {
            Driver.Notify(0);
            Kicks++;
        }

        return sent;
    }

    /// <summary>Takes every used buffer back, checking each echo, and returns the tokens.</summary>
    public int[] Receive()
    {
        var tokens = new List<int>();
        while (Queue!.TryGetUsed(out int token, out uint length))
        {
            CheckEcho(token, length);
            tokens.Add(token);
        }

        return tokens.ToArray();
    }

    /// <summary>
    /// Takes used buffers until <paramref name="count"/> came back or <paramref name="timeout"/> passed, sleeping
    /// on the interrupt line in between (used notifications re-enabled with the re-check, so none is missed).
    /// </summary>
    public List<int> ReceiveAtLeast(int count, TimeSpan timeout)
    {
        var tokens = new List<int>();
        DateTime deadline = DateTime.UtcNow + timeout;
        while (tokens.Count < count)
        {
            tokens.AddRange(Receive());
            if (tokens.Count >= count)
            {
                break;
            }

            if (Queue!.EnableUsedNotifications() == NotificationRecheck.BuffersPending)
            {
                continue;
            }

            TimeSpan left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero || !_interrupt.Wait(left))
            {
                tokens.AddRange(Receive());
                break;
            }

            Driver.TakeInterrupts();
        }

        return tokens;
    }

    /// <summary>Waits for the next interrupt (bounded).</summary>
    public bool WaitForInterrupt(TimeSpan timeout) => _interrupt.Wait(timeout);

    public void CheckEcho(int token, uint length)
    {
        Assert.Equal(4u, length);
        Assert.Equal(token, BitConverter.ToInt32(Span(SlotOf(token) + 8, 4)));
    }

    public Span<byte> Span(ulong gpa, int length)
    {
        Assert.Equal(GuestMemoryError.None, Memory.TryGetSpan(gpa, length, out Span<byte> span));
        return span;
    }

    public void Dispose()
    {
        Queue?.Dispose();
        Device.Dispose();
        Memory.Dispose();
        _interrupt.Dispose();
    }

    public static ulong SlotOf(int token) => DataBase + ((ulong)(token % 4096) * 16);
}

using System;
using Virtio.Ring.Transport;
using Virtio.Ring.Transport.Mmio;

namespace Virtio.Ring.Tests.Transport;

/// <summary>Guest memory, an echo device behind a virtio-mmio transport, and the guest's register-level driver.</summary>
internal sealed class MmioRig : IDisposable
{
    public const ulong RingBase = 0x1_0000;
    public const ulong DataBase = 0x10_0000;

    public MmioRig(bool legacy = false, ulong deviceFeatures = 0)
    {
        Memory = GuestMemory.Allocate(8 << 20);
        Device = new EchoDevice(Memory, deviceFeatures);
        Transport = new VirtioMmioTransport(Device, new InterruptLine(() => Interrupts++), legacy, vendorId: 0x1AF4);
        Driver = new VirtioMmioDriver(Transport);
    }

    public GuestMemory Memory { get; }

    public EchoDevice Device { get; }

    public VirtioMmioTransport Transport { get; }

    public VirtioMmioDriver Driver { get; }

    public int Interrupts { get; private set; }

    public DriverVirtqueue<int>? Queue { get; private set; }

    /// <summary>Places queue 0 in guest memory in the negotiated format and programs it through the registers.</summary>
    public bool SetupQueue0(int size = 32)
    {
        ulong features = Driver.NegotiatedFeatures;
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
            ulong slot = DataBase + ((ulong)(token % 1024) * 16);
            BitConverter.TryWriteBytes(Span(slot, 4), token);
            if (!Queue!.TryAdd([new GuestRange(slot, 4)], [new GuestRange(slot + 8, 4)], token))
            {
                break;
            }

            sent++;
        }

        if (Queue!.PublishAvailable())
        {
            Driver.Notify(0);
        }

        return sent;
    }

    /// <summary>Takes every used buffer back, checking each echo, and returns the tokens.</summary>
    public int[] Receive()
    {
        var tokens = new System.Collections.Generic.List<int>();
        while (Queue!.TryGetUsed(out int token, out uint length))
        {
            Assert.Equal(4u, length);
            ulong slot = DataBase + ((ulong)(token % 1024) * 16);
            Assert.Equal(token, BitConverter.ToInt32(Span(slot + 8, 4)));
            tokens.Add(token);
        }

        return tokens.ToArray();
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
    }

}
